"""``main(argv)``: parse the command line, run the tool, print its result; the exit codes are the contract's."""
from __future__ import annotations

import json
import signal
import sys
from dataclasses import fields

from ..contract.progress import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, error_event
from ..contract.tools import TOOLS
from ..errors import BadInput, Cancelled
from .commands import COMMANDS
from .parser import build_parser


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Cancelled("terminated")


def error_line(tool: str, exc: BadInput) -> str:
    """``error: --flag: message`` when the error names its parameter, else ``error: message``.

    A contract problem's message starts with the parameter's title (``Number of clusters (K): ...``, what the
    plugin shows next to its widget); on the command line the flag says it.
    """
    message = str(exc)
    if not exc.param:
        return f"error: {message}"
    declared = TOOLS[tool]
    flag = declared.flag(exc.param)
    if message.startswith((flag, f"{exc.param} ")):          # it names it already (--resume: ..., raster 'x')
        return f"error: {message}"
    if exc.param in declared.names():
        title = declared.param(exc.param).title
        if message.startswith(f"{title}: "):
            message = message[len(title) + 2:]
    return f"error: {flag}: {message}"


def run_command(args) -> int:
    """Build the tool's params value from the parsed ``args``, run it with a progress sink, print the result."""
    from ..progress import Progress

    command = COMMANDS[args.tool]
    params_class, run = command.load()
    given = vars(args)
    params = params_class(**{f.name: given[f.name] for f in fields(params_class) if f.name in given})
    progress = Progress(getattr(args, "progress", "none"))
    try:
        result = run(params, progress)
    finally:
        progress.close()
    code = command.printer(result, args)
    return EXIT_OK if code is None else code


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                      # a usage error (one line on stderr) or --help
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if args.tool is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run_command(args)
    except BadInput as exc:
        print(error_line(args.tool, exc), file=sys.stderr)
        if getattr(args, "progress", None) == "json":      # the same error as an event, for the plugin
            print(json.dumps(error_event(str(exc), exc.param, exc.code)), flush=True)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt) as exc:
        detail = str(exc) if isinstance(exc, Cancelled) else ""
        # a bare SIGTERM/Ctrl+C left nothing; tools that keep finished parts (sweep) say what they kept
        print(f"cancelled: {detail}" if detail not in ("", "terminated") else "cancelled: no output was written",
              file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            raise
        print(f"failed: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILED
