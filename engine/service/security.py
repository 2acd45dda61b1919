"""Who may call the service and which server-side files a job may name.

- Tokens: ``--token-file`` holds one bearer token per line (``#`` comments; ``name: token`` names its owner in
  the log). A job belongs to the token that created it (``owner_of``: a hash, never the token itself); each
  token sees only its own jobs. Without a token file the server only listens on a loopback address.
- References: a job's input given as ``{"href": "city/ortho.tif"}`` names a file under the server's data root.
  URLs, GDAL virtual paths (``/vsicurl/``, ``/vsizip/``...), ``..`` and links that lead out of the root are
  refused, so that a client can neither read the server's other files nor make it fetch from the network.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
from pathlib import Path

MIN_TOKEN_LENGTH = 16
LOCAL_OWNER = "local"            # every job of a server without tokens (loopback only)


class RefusedPath(ValueError):
    """A reference the server will not open; the message says why and what to send instead."""


def load_tokens(path: "str | Path") -> dict[str, str]:
    """``{owner id: name}`` from a token file; ValueError naming the file and the fix for a bad one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--token-file {path}: cannot be read ({exc.strerror or exc}).") from None
    owners: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, token = line.partition(": ") if ": " in line else ("", "", line)
        name, token = name.strip(), token.strip()
        if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
            raise ValueError(f"--token-file {path}, line {number}: a token must be at least {MIN_TOKEN_LENGTH} "
                             "characters without spaces; make one with `python -c \"import secrets; "
                             "print(secrets.token_urlsafe(32))\"`.")
        owners[owner_of(token)] = name or f"token {len(owners) + 1}"
    if not owners:
        raise ValueError(f"--token-file {path}: holds no token; put one token per line.")
    return owners


def owner_of(token: str) -> str:
    """The id a token's jobs are filed under (a hash: the job table never holds a token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]


def bearer(header: "str | None") -> "str | None":
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def known(owners: dict[str, str], token: "str | None") -> "str | None":
    """The owner id of ``token`` when it is one of ``owners``, else None (compared in constant time)."""
    if not token:
        return None
    wanted = owner_of(token)
    found = None
    for owner in owners:
        if hmac.compare_digest(owner, wanted):
            found = owner
    return found


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def resolve_reference(root: "str | Path", ref: str) -> Path:
    """The file ``ref`` names under ``root`` (a path relative to it); RefusedPath otherwise."""
    text = str(ref).strip()
    fix = "give a path relative to the server's data root, or upload the file"
    if not text:
        raise RefusedPath(f"an empty reference; {fix}.")
    if "\x00" in text:
        raise RefusedPath(f"a reference with a NUL character; {fix}.")
    if _URL.match(text) or text.lower().startswith(("file:", "http:", "https:", "ftp:")):
        raise RefusedPath(f"{text!r} is a URL: the server does not fetch from the network; {fix}.")
    if "/vsi" in text.lower() or text.lower().startswith("vsi"):
        raise RefusedPath(f"{text!r} is a GDAL virtual path: it is refused; {fix}.")
    parts = re.split(r"[\\/]+", text)
    if ".." in parts:
        raise RefusedPath(f"{text!r} leads out of the data root ('..'); {fix}.")
    if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
        raise RefusedPath(f"{text!r} is an absolute path; {fix}.")
    root = Path(root).resolve()
    path = (root / text)
    real = Path(os.path.realpath(path))
    if real != root and root not in real.parents:
        raise RefusedPath(f"{text!r} leads out of the data root (a link); {fix}.")
    return real
