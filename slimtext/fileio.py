"""Atomic directory writes and checksum manifests, shared by model directories and checkpoints.

A directory is written under a temporary sibling name and renamed into place only when complete,
so a crash never leaves a half-written directory under the real name. `manifest.json` records the
sha256 and size of every file; readers verify it before trusting anything inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

MANIFEST = "manifest.json"


class IntegrityError(ValueError):
    """A directory whose files are missing, truncated or changed since they were written."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path) -> None:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1) + "\n")


def verify_manifest(folder: Path, required: tuple[str, ...] = ()) -> None:
    """Raise IntegrityError naming the first missing, truncated or altered file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IntegrityError(f"{folder}: not a directory")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise IntegrityError(f"{folder}: no {MANIFEST}; not a complete slimtext directory")
    try:
        files = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError) as e:
        raise IntegrityError(f"{mpath}: unreadable manifest ({e})") from e
    for name in required:
        if name not in files:
            raise IntegrityError(f"{folder}: {name} is not listed in {MANIFEST}")
    for rel, meta in files.items():
        p = folder / rel
        if not p.is_file():
            raise IntegrityError(f"{folder}: {rel} is missing (truncated copy?)")
        size = p.stat().st_size
        if size != meta["size"]:
            raise IntegrityError(
                f"{p}: size {size} bytes, expected {meta['size']} (truncated or altered)"
            )
        if sha256_file(p) != meta["sha256"]:
            raise IntegrityError(f"{p}: checksum mismatch; the file changed after it was written")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory; on success write its manifest and rename it to `target`.

    An existing `target` is replaced only after the new one is complete (moved aside, then
    removed), so at every instant either the old or the new directory is whole.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        write_manifest(tmp)
        _fsync_dir(tmp)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    # Make the rename itself durable; not possible on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
