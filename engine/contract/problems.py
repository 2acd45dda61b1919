"""Why a request cannot run, said so that code can decide and people can read.

A ``Problem`` names the parameter (the engine flag's name without dashes:
``out``, ``k``, ``tile_size``, ``raster``, ``buildings``...; ``engine`` for the
engine itself), a stable ``code`` below, and the message for the user. The
dock and Processing decide on ``param`` and ``code`` only; the message may be
reworded freely. ``str(problem)`` is the message. Stdlib only.
"""
from __future__ import annotations

from dataclasses import dataclass

REQUIRED = "required"            # nothing chosen or given
NOT_FOUND = "not_found"          # a file or folder that does not exist
NOT_LOCAL = "not_local"          # a layer that is not a local file (the plugin may write it to one first)
NOT_WRITABLE = "not_writable"    # an output folder the user cannot write to
NOT_FOLDER = "not_folder"        # a folder was asked for, a file was given
IS_FOLDER = "is_folder"          # a file was asked for (an output), a folder was given
EXISTS = "exists"                # an output that exists (and overwriting is off)
CLASHES = "clashes"              # an output that is one of the run's inputs (refused even with overwrite)
OUT_OF_RANGE = "out_of_range"    # a number outside what the engine accepts
BAD_CHOICE = "bad_choice"        # not one of the choices (method, backbone, device, unit, format...)
BAD_FORMAT = "bad_format"        # a text or file of the wrong form (K list, tile sizes, .gpkg/.pt suffix)
NO_OVERLAP = "no_overlap"        # the area limit does not overlap the raster (or cannot be transformed to it)
REJECTED = "rejected"            # the engine itself rejects the input (its probe answer)
NO_ENGINE = "no_engine"          # no working engine yet (being looked for, set up, or broken)
UNKNOWN = "unknown"              # a name the tool does not take (an input sent to the service)
NOT_ALLOWED = "not_allowed"      # a server-side path outside its data root, a URL or a GDAL virtual path

CODES = (REQUIRED, NOT_FOUND, NOT_LOCAL, NOT_WRITABLE, NOT_FOLDER, IS_FOLDER, EXISTS, CLASHES, OUT_OF_RANGE, BAD_CHOICE,
         BAD_FORMAT, NO_OVERLAP, REJECTED, NO_ENGINE, UNKNOWN, NOT_ALLOWED)


@dataclass(frozen=True)
class Problem:
    param: str
    code: str
    message: str

    def __str__(self) -> str:
        return self.message


def messages(problems) -> list[str]:
    """The messages of ``problems``, in order (what the panels show)."""
    return [str(p) for p in problems]
