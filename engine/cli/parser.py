"""The CLI's argparse, built entirely from the tool declarations (``engine.contract.tools.TOOLS``).

Each declared parameter becomes an argument: positional or ``--flag``; numbers
and words (``auto``) and choices are read by the contract's ``parse_value`` so
``--k abc`` is refused naming the flag; a flag that defaults to on is turned
off by its negative flag (``--no-quicklook``); the help says the default, the
choices and the range; arguments with a ``group`` share a heading; the epilog
lists the outputs, notes and examples. Ranges and rules between parameters are
checked by the tool itself (``engine.tools.check_params``), where a parameter
that does not apply (``applies_when``) is left alone. A usage error prints one
line and where to find help, and exits 2.
"""
from __future__ import annotations

import argparse
import re
import textwrap
from dataclasses import replace

from ..contract.params import BOOL, CHOICE, FLOAT, INT, STATS_INPUTS, Param, Tool, parse_value
from ..contract.progress import EXIT_BAD_INPUT
from ..contract.tools import TOOLS

WIDTH = 100


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (``error: --k: 'abc' is not a whole number.``) and a hint
    to ``--help``, never the whole usage, and exits 2."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        m = re.match(r"^(-[^:/ ]+)(?:/[^:]+)?: expected one argument$", message)
        if m:                      # '--overlap -5px': argparse takes a value that starts with '-' for an option
            message += f" (a value that starts with '-' is written {m.group(1)}=VALUE)"
        self.exit(EXIT_BAD_INPUT, f"error: {message}\n(see: {self.prog} --help)\n")


class OneOrMany(argparse.Action):
    """``nargs='+'`` that keeps one value as it is (a path) and several as a list (a study of rasters)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values[0] if len(values) == 1 else list(values))


def value_type(param: Param):
    """The argparse ``type`` of a number, word or choice parameter: the contract's ``parse_value``.

    Bounds are left to the tool's checks (``check_params``), which skip a parameter that does not apply
    (``--epochs`` without ``--method deepcluster``); here only the kind of value counts.
    """
    loose = replace(param, minimum=None, maximum=None, multiple_of=None) if param.type in (INT, FLOAT) else param

    def convert(text: str):
        try:
            return parse_value(loose, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = param.type
    return convert


def help_text(param: Param) -> str:
    """The declared help, then the choices, the range (numbers) and the default."""
    text = param.help
    if param.type == CHOICE:
        text += f": {', '.join(map(str, param.choices))}"
    if param.type in (INT, FLOAT) and param.range_text():
        text += f"; {param.range_text()}{' ' + param.unit if param.unit else ''}"
    if param.default not in (None, "") and param.type != BOOL and not param.required:
        text += f" (default {param.default}{' ' + param.unit if param.unit else ''})"
    return text


def add_param(parser, param: Param) -> None:
    """One declared parameter as an argument of ``parser`` (or of its group)."""
    kwargs: dict = {"help": help_text(param)}
    if param.type == BOOL:
        kwargs.update(action="store_false" if param.default else "store_true", dest=param.name,
                      default=param.default)
    else:
        kwargs["default"] = param.default
        if param.type in (INT, FLOAT, CHOICE):
            kwargs["type"] = value_type(param)
        if param.type == CHOICE:
            kwargs["choices"] = param.choices
        if param.positional:
            kwargs["metavar"] = param.name.upper()
            if param.many:                     # one or more paths: a study of several rasters
                kwargs.update(nargs="+", action=OneOrMany)
        else:
            kwargs.update(dest=param.name, required=param.required)
            if param.type != CHOICE:
                kwargs["metavar"] = param.name.upper()
    if param.positional:
        parser.add_argument(param.name, **kwargs)
    else:
        parser.add_argument(param.flag, **kwargs)


def _when(tool: Tool, when: "str | None") -> str:
    """When an output is written, in words: ``(with --probability)``, ``(unless --no-quicklook)``."""
    if when is None:
        return ""
    if when == "stats":
        flags = [tool.flag(n) for n in STATS_INPUTS if n in tool.names()]
        return f" (with {', '.join(flags[:-1])} or {flags[-1]})"
    name = when.lstrip("!")
    param = tool.param(name)
    on = not when.startswith("!")
    if param.type == BOOL and param.default:
        on = not on
    return f" ({'with' if on else 'unless'} {param.flag})"


def epilog(tool: Tool) -> str:
    """The outputs (named after the output parameter), notes and examples of a tool."""
    lines: list[str] = []
    if tool.outputs and tool.output_param:
        out = tool.param(tool.output_param)
        name = tool.output_param.upper()
        suffix = out.suffixes[0] if out.suffixes else ""
        lines.append(f"outputs (named after {out.flag}):")
        for o in tool.outputs:
            path = o.pattern.format(out=name + suffix, stem=name, tag="<size>")
            described = textwrap.wrap(o.help + _when(tool, o.when), WIDTH - 25, break_on_hyphens=False)
            first = f"  {path:22s} " if len(path) <= 22 else f"  {path}\n{' ' * 25}"
            lines.append(first + described[0])
            lines += [" " * 25 + line for line in described[1:]]
    if tool.notes:
        lines += ["", *textwrap.wrap(tool.notes, WIDTH, break_on_hyphens=False)]
    if tool.examples:
        lines += ["", "examples:" if len(tool.examples) > 1 else "example:", *("  " + e for e in tool.examples)]
    return "\n".join(lines)


EXIT_CODES = ("Exit codes: 0 success, 2 bad input (the message says which input and the fix), 1 any other\n"
              "failure, 130 cancelled. Messages go to stderr; with --progress json stdout carries only JSON\n"
              "progress lines.")


def add_tool(sub, tool: Tool) -> ArgumentParser:
    """A subparser for ``tool`` with every parameter its declaration lets the CLI take."""
    p = sub.add_parser(tool.name, help=tool.summary, description=textwrap.fill(tool.description, WIDTH),
                       epilog=epilog(tool), formatter_class=argparse.RawDescriptionHelpFormatter)
    groups: dict = {}
    for param in tool.params:
        if not param.cli:
            continue
        target = p
        if param.group:
            target = groups.get(param.group) or groups.setdefault(param.group, p.add_argument_group(param.group))
        add_param(target, param)
    return p


def build_parser() -> ArgumentParser:
    from . import __doc__ as doc

    parser = ArgumentParser(prog="python -m engine", description=(doc or "").split("\n\n")[0],
                            epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for failures")
    sub = parser.add_subparsers(dest="tool", metavar="TOOL", parser_class=ArgumentParser)
    for tool in TOOLS.values():
        add_tool(sub, tool)
    return parser

