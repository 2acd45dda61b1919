"""The service's guards as pure functions: references confined to the data root, tokens, upload names,
durations."""
from __future__ import annotations

import pytest

from engine.service.main import parse_duration
from engine.service.security import (RefusedPath, bearer, is_loopback, known, load_tokens, owner_of,
                                     resolve_reference)
from engine.service.uploads import safe_name


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root" / "city").mkdir(parents=True)
    (tmp_path / "root" / "city" / "a.tif").write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "root" / "escape.tif").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "root" / "inside.tif").symlink_to(tmp_path / "root" / "city" / "a.tif")
    return tmp_path / "root"


@pytest.mark.parametrize("ref", ["city/a.tif", "city//a.tif", "./city/a.tif", "inside.tif"])
def test_references_under_the_root_resolve(root, ref):
    assert resolve_reference(root, ref) == (root / "city" / "a.tif").resolve()


@pytest.mark.parametrize("ref, why", [
    ("../secret.txt", "'..'"), ("city/../../secret.txt", "'..'"), ("city\\..\\..\\secret.txt", "'..'"),
    ("/etc/passwd", "absolute"), ("C:/Windows/win.ini", "absolute"), ("\\\\server\\share\\x.tif", "absolute"),
    ("escape.tif", "a link"), ("http://169.254.169.254/latest/meta-data", "URL"), ("HTTPS://x/y.tif", "URL"),
    ("file:///etc/passwd", "URL"), ("s3://bucket/key.tif", "URL"), ("/vsicurl/http://x/y.tif", "virtual"),
    ("vsizip/city/a.zip", "virtual"), ("city/a.tif\x00.png", "NUL"), ("", "empty"),
])
def test_references_that_leave_the_root_are_refused(root, ref, why):
    with pytest.raises(RefusedPath, match=why):
        resolve_reference(root, ref)


def test_tokens_file_names_owners_and_refuses_weak_tokens(tmp_path):
    good = tmp_path / "tokens"
    good.write_text("# team\nalice: aaaaaaaaaaaaaaaaaaaa\n\nbbbbbbbbbbbbbbbbbbbbbbbb\n")
    owners = load_tokens(good)
    assert owners == {owner_of("aaaaaaaaaaaaaaaaaaaa"): "alice", owner_of("bbbbbbbbbbbbbbbbbbbbbbbb"): "token 2"}
    assert "aaaaaaaaaaaaaaaaaaaa" not in str(owners)                    # only hashes are kept
    assert known(owners, bearer("Bearer aaaaaaaaaaaaaaaaaaaa")) == owner_of("aaaaaaaaaaaaaaaaaaaa")
    assert known(owners, bearer("bearer  bbbbbbbbbbbbbbbbbbbbbbbb")) is not None
    for header in (None, "", "Bearer", "Basic aaaaaaaaaaaaaaaaaaaa", "Bearer cccccccccccccccccccc"):
        assert known(owners, bearer(header)) is None
    weak = tmp_path / "weak"
    weak.write_text("short\n")
    with pytest.raises(ValueError, match="line 1: a token must be at least 16"):
        load_tokens(weak)
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no token"):
        load_tokens(tmp_path / "empty")
    with pytest.raises(ValueError, match="cannot be read"):
        load_tokens(tmp_path / "missing")


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "::1", "localhost", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.10", "example.org"]))


@pytest.mark.parametrize("name, safe", [("a b.tif", "a_b.tif"), ("../../etc/passwd", "passwd"),
                                        ("C:\\x\\y.tif", "y.tif"), ("..", "upload"), (".hidden", "hidden"),
                                        ("ü.tif", "_.tif"), ("x" * 300 + ".tif", "x" * 100 + ".tif")])
def test_upload_names_are_reduced_to_safe_file_names(name, safe):
    assert safe_name(name) == safe


def test_durations():
    assert [parse_duration(t) for t in ("7d", "12h", "30m", "90s", "90", "0", "1.5h")] == \
        [604800, 43200, 1800, 90, 90, 0, 5400]
    with pytest.raises(Exception, match="duration"):
        parse_duration("soon")
