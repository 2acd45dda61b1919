"""``main(argv)``: parse the command line, run the tool, print its result; the exit codes are the contract's."""
from __future__ import annotations

import json
import os
import signal
import sys
import warnings
from dataclasses import fields

from .. import progress as cancel
from ..contract.progress import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, error_event
from ..contract.tools import TOOLS
from ..errors import BadInput, Cancelled
from .commands import COMMANDS
from .parser import build_parser

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    """SIGTERM and Ctrl+C: cancel the run, unless it is renaming its outputs into place (the cancel waits for
    that) or has committed them (the cancel is dropped: exit 0, outputs kept). ``engine.progress``."""
    cancel.request_cancel(Cancelled("terminated") if signum == signal.SIGTERM else KeyboardInterrupt())


def show_warning(message, category, filename, lineno, file=None, line=None):  # noqa: ARG001 - showwarning's
    """``warnings.showwarning`` during a run: a warning the engine gives about the data (a ``UserWarning`` from
    engine code, such as ``StatsWarning``) is one ``warning: ...`` line on stderr; a library's own warnings
    (deprecations, its set-up) say nothing the user can act on and are not shown (``--debug`` shows them)."""
    if issubclass(category, UserWarning) and os.path.abspath(filename).startswith(ENGINE_DIR + os.sep):
        text = str(message).replace("\n", " ").strip()
        print(text if text.startswith("warning: ") else f"warning: {text}", file=file or sys.stderr, flush=True)


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
        cancel.end_of_run()                        # a cancel from now on changes nothing: the outcome is known
        progress.close()
    code = command.printer(result, args)
    return EXIT_OK if code is None else code


def main(argv=None, *, entry_point: bool = False) -> int:
    """Run ``python -m engine ARGV``; returns the exit code. ``entry_point``: this call is the process (``python
    -m engine``), so its signal handlers stay until it exits (a SIGTERM after the run is then dropped, never the
    default kill); otherwise they are restored when it returns."""
    given = sys.argv[1:] if argv is None else list(argv)
    if given[:1] == ["serve"]:                     # the service: a face of the engine, not one of its tools
        from ..service.main import main as serve

        return serve(given[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:                      # a usage error (one line on stderr) or --help
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    if args.tool is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    cancel.reset_cancel()
    handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    shown = warnings.showwarning
    if not args.debug:
        warnings.showwarning = show_warning
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
    finally:
        cancel.end_of_run()
        warnings.showwarning = shown
        if not entry_point:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
