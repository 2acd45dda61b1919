"""A request body streamed to disk: multipart file parts go straight into the job's folder, never whole into
memory, and the body is cut off at the size limit (``TooLarge``) before more than that is written.

A part with a filename is a file (saved as ``<folder>/<part name>/<file name>``, the name reduced to safe
characters); a part without one is a text field (``inputs``, ``model``), kept in memory up to 1 MiB.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

FIELD_LIMIT = 1 << 20


class TooLarge(Exception):
    """The body is larger than the server accepts."""


class BadBody(ValueError):
    """A body that is not what the endpoint takes; the message says what is."""


@dataclass
class Body:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)
    size: int = 0


def safe_name(name: str) -> str:
    """A client's file name as one safe file name: its last component, letters, digits, ``._-`` only."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".").rstrip(".") or "upload"
    stem, dot, suffix = base.rpartition(".")
    if dot and len(base) > 120:
        base = stem[:100] + "." + suffix[:16]
    return base[:120]


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise BadBody("the body must be multipart/form-data with a boundary")
    return options[b"boundary"]


class MultipartToDisk:
    """Feed it the body's chunks (``write``); file parts land under ``folder``; ``finish()`` gives the Body."""

    def __init__(self, content_type: str, folder: Path, limit: int, file_fields: "set[str] | None" = None):
        self.folder = Path(folder)
        self.limit = limit
        self.file_fields = file_fields        # the part names that may carry files (None: any)
        self.body = Body()
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._name = ""
        self._file = None
        self._text: bytearray | None = None
        callbacks = {"on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
                     "on_header_field": self._header_field, "on_header_value": self._header_value,
                     "on_header_end": self._header_end, "on_headers_finished": self._headers_done}
        self.parser = MultipartParser(boundary_of(content_type), callbacks)

    # -- parser callbacks
    def _begin(self):
        self._headers, self._file, self._text = {}, None, None

    def _header_field(self, data, start, end):
        self._field += data[start:end]

    def _header_value(self, data, start, end):
        self._value += data[start:end]

    def _header_end(self):
        self._headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_done(self):
        kind, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if kind != b"form-data" or not name:
            raise BadBody("every multipart part needs Content-Disposition: form-data with a name")
        self._name = name
        filename = options.get(b"filename")
        if filename is None:
            self._text = bytearray()
            return
        if self.file_fields is not None and name not in self.file_fields:
            raise BadBody(f"'{name}' does not take a file; the file inputs are: "
                          f"{', '.join(sorted(self.file_fields)) or 'none'}")
        target = self.folder / safe_name(name) / safe_name(filename.decode("utf-8", "replace"))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target in self.body.files.get(name, []):
            raise BadBody(f"two files named {target.name!r} for '{name}'")
        self._file = open(target, "wb")            # noqa: SIM115 - closed in _end or close()
        self.body.files.setdefault(name, []).append(target)

    def _data(self, data, start, end):
        if self._file is not None:
            self._file.write(data[start:end])
        elif self._text is not None:
            self._text += data[start:end]
            if len(self._text) > FIELD_LIMIT:
                raise BadBody(f"the field '{self._name}' is larger than {FIELD_LIMIT >> 10} KiB")

    def _end(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._text is not None:
            self.body.fields[self._name] = self._text.decode("utf-8", "replace")
            self._text = None

    # -- feeding
    def write(self, chunk: bytes) -> None:
        self.body.size += len(chunk)
        if self.body.size > self.limit:
            raise TooLarge()
        self.parser.write(chunk)

    def finish(self) -> Body:
        self.parser.finalize()
        return self.body

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
