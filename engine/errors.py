"""Errors the engine raises on purpose.

``BadInput`` is for anything the user can fix (a wrong path, a parameter out of
range, a file in the way). The CLI turns it into exit code 2 and prints only
its message; every other exception is a bug or an environment failure (exit 1).
"""


class BadInput(ValueError):
    """The user's input cannot be used; the message names the input and the fix."""


class Cancelled(RuntimeError):
    """The run was cancelled (Ctrl+C or the plugin ending the process)."""
