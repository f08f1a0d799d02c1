"""Reading a results bundle (`python -m analysis bundle`): checked before anything is used.

A bundle is a `.tar.gz` of records, kept-subset sidecars and score exports with a
`manifest.json` that lists the sha256 of every other member. Reading it refuses, in one
line, a member whose path would leave the folder it is unpacked into (absolute, `..`,
links, devices), a member the manifest does not list or lists with another sha256, and a
listed member that is missing. Only then is it unpacked, into a fresh folder of its own.

Inputs name a file inside a bundle as `BUNDLE.tar.gz:MEMBER` (e.g.
`method.path=study.tar.gz:scores/el2n.csv`); `resolve_input` turns such a name into the
path of the checked, unpacked file.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from benchmarks.errors import ConfigError

MANIFEST = "manifest.json"
FORMAT = "prunebench-bundle/1"
SUFFIXES = (".tar.gz", ".tgz")
_opened: dict[Path, Path] = {}


class BundleError(ConfigError):
    """A bundle that cannot be trusted or read: one line, nothing unpacked."""


def is_bundle(name: str | Path) -> bool:
    return str(name).endswith(SUFFIXES)


def member_name(name: str) -> str:
    """A member path that stays inside the folder, POSIX-normalised; else BundleError."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise BundleError(f"bundle member {name!r} leaves the bundle's folder; refused")
    return str(path)


def read_bundle(bundle: Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every member's bytes, each checked against the manifest."""
    if not bundle.is_file():
        raise BundleError(f"bundle {str(bundle)!r}: no such file")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            for info in tar:
                name = member_name(info.name)
                if info.isdir():
                    continue
                if not info.isfile():
                    raise BundleError(
                        f"bundle member {info.name!r} is a link or device, not a file; refused"
                    )
                if name in members:
                    raise BundleError(f"bundle member {name!r} appears twice; refused")
                handle = tar.extractfile(info)
                members[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BundleError(f"bundle {str(bundle)!r}: cannot read it ({err})") from None
    if MANIFEST not in members:
        raise BundleError(f"bundle {str(bundle)!r} has no {MANIFEST}")
    try:
        manifest = json.loads(members.pop(MANIFEST))
        listed = {member_name(n): str(h) for n, h in manifest["members"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BundleError(f"bundle {str(bundle)!r}: unreadable {MANIFEST} ({err})") from None
    for name, data in sorted(members.items()):
        if name not in listed:
            raise BundleError(f"bundle member {name!r} is not in the manifest; refused")
        if hashlib.sha256(data).hexdigest() != listed[name]:
            raise BundleError(
                f"bundle member {name!r} does not match its sha256 in the manifest "
                "(changed after the bundle was made); refused"
            )
    missing = sorted(set(listed) - set(members))
    if missing:
        raise BundleError(
            f"bundle {str(bundle)!r} lacks {len(missing)} member(s) its manifest lists "
            f"(first: {missing[0]})"
        )
    return manifest, members


def open_bundle(bundle: Path) -> Path:
    """The folder the checked bundle is unpacked into (once per process and bundle)."""
    bundle = Path(bundle).expanduser().resolve()
    if bundle in _opened:
        return _opened[bundle]
    manifest, members = read_bundle(bundle)
    folder = Path(tempfile.mkdtemp(prefix="prunebench-bundle-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for name, data in members.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    _opened[bundle] = folder
    return folder


def split_member(name: str) -> tuple[str, str] | None:
    """`BUNDLE.tar.gz:MEMBER` -> (the bundle's file, the member); None for a plain file name."""
    for suffix in SUFFIXES:
        marker = suffix + ":"
        if marker in name:
            archive, member = name.split(marker, 1)
            return archive + suffix, member
    return None


def resolve_input(name: str) -> str:
    """`BUNDLE.tar.gz:MEMBER` -> the checked, unpacked member's path; other names as given."""
    parts = split_member(name)
    if parts is None:
        return name
    archive, member = parts
    path = open_bundle(Path(archive)) / member_name(member)
    if not path.is_file():
        raise BundleError(f"{name}: the bundle has no member {member!r}")
    return str(path)
