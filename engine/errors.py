"""Errors the engine raises on purpose.

``BadInput`` is for anything the user can fix (a wrong path, a parameter out of
range, a file in the way). The CLI turns it into exit code 2 and prints only
its message, after the flag of the parameter when the error names one
(``error: --k: 300 is out of range: ...``); every other exception is a bug or
an environment failure (exit 1).
"""


class BadInput(ValueError):
    """The user's input cannot be used; the message names the input and the fix.

    ``param`` is the parameter at fault (the contract's name: ``k``, ``tile_size``, ``out``) and ``code``
    one of ``engine.contract.problems``' codes, when known; ``problems`` holds every contract problem
    found when the error comes from the declaration's checks. ``str(exc)`` is the message.
    """

    def __init__(self, message: str = "", param: "str | None" = None, code: "str | None" = None,
                 problems: "list | tuple" = ()):
        super().__init__(message)
        self.param = param
        self.code = code
        self.problems = list(problems)


class Cancelled(BaseException):
    """The run was cancelled (Ctrl+C or the plugin ending the process).

    A ``BaseException``, as ``KeyboardInterrupt`` is: the CLI raises it from its SIGTERM handler at whatever
    line the run is on, and an ``except Exception`` there (the engine's own, or a library's) must not turn the
    cancel into an error ("damaged file", exit 2) or swallow it."""
