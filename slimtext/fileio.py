"""Atomic directory writes and checksum manifests, shared by model directories and checkpoints.

A directory is written under a temporary sibling name and renamed into place only when complete,
so a crash never leaves a half-written directory under the real name. `manifest.json` records the
sha256 and size of every file; readers verify it before trusting anything inside.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from glob import escape as glob_escape
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"


class IntegrityError(ValueError):
    """A directory whose files are missing, truncated or changed since they were written."""


class TargetExistsError(FileExistsError, ValueError):
    """`atomic_dir` refuses to replace an existing path: replacing deletes it, and it is not a
    directory that may be deleted. A ValueError too, so command lines report it as a user error."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(p: Path) -> dict:
    return {"sha256": sha256_file(p), "size": p.stat().st_size}


def write_manifest(folder: Path) -> None:
    """List every file under `folder`: for a directory this process just wrote in full."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            files[p.relative_to(folder).as_posix()] = _entry(p)
    _save_manifest(folder, files)


def update_manifest(folder: Path, names: Iterable[str]) -> None:
    """Add or refresh the entries of `names` (files just written into a listed directory) and
    leave the rest as listed: a rescan would also list strays, e.g. the temporary file of an
    export that was killed, which later fail verification once they are cleaned up."""
    folder = Path(folder)
    files = read_manifest(folder)
    for name in names:
        files[name] = _entry(folder / name)
    _save_manifest(folder, files)


def _save_manifest(folder: Path, files: dict) -> None:
    # Atomically: a crash mid-write must not leave a truncated manifest that fails every load.
    atomic_write_text(folder / MANIFEST, json.dumps({"files": files}, indent=1) + "\n")


def read_manifest(folder: Path) -> dict[str, dict]:
    """The manifest's {relative path: {"sha256", "size"}}, checked for shape (IntegrityError)."""
    mpath = Path(folder) / MANIFEST
    if not mpath.is_file():
        raise IntegrityError(f"{folder}: no {MANIFEST}; not a complete slimtext directory")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # bad JSON, not UTF-8, nested too deep
        raise IntegrityError(f"{mpath}: unreadable manifest ({e})") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise IntegrityError(f'{mpath}: malformed manifest (expected {{"files": {{...}}}})')
    for rel, meta in files.items():
        parts = PurePosixPath(rel).parts
        if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
            # Only files inside the directory: never hash (or vouch for) anything outside it.
            raise IntegrityError(f"{mpath}: malformed manifest (entry {rel!r} is outside)")
        if not (
            isinstance(meta, dict)
            and type(meta.get("size")) is int
            and isinstance(meta.get("sha256"), str)
        ):
            raise IntegrityError(
                f"{mpath}: malformed manifest (entry {rel!r} needs an integer size and a sha256)"
            )
    return files


def verify_manifest(
    folder: Path, required: tuple[str, ...] = (), derived: tuple[str, ...] = ()
) -> dict[str, dict]:
    """Raise IntegrityError naming the first missing, truncated or altered file; returns the
    manifest's listing (what may be read: a file it does not list vouches for nothing).

    `derived` files (exports made from the others, made again at need; names, or folders
    ending in "/") do not fail the check: one that does not verify is left out of the listing,
    so it is never used. An export killed between replacing its file and listing it made the
    whole directory unloadable."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IntegrityError(f"{folder}: not a directory")
    files = read_manifest(folder)
    for name in required:
        if name not in files:
            raise IntegrityError(f"{folder}: {name} is not listed in {MANIFEST}")

    def is_derived(rel: str) -> bool:
        return rel in derived or any(rel.startswith(d) for d in derived if d.endswith("/"))

    for rel in [r for r in files if is_derived(r)]:
        try:
            _verify_entry(folder, rel, files[rel])
        except IntegrityError:
            del files[rel]
    for rel, meta in files.items():
        if not is_derived(rel):
            _verify_entry(folder, rel, meta)
    return files


def entry_matches(folder: Path, rel: str, meta: dict) -> bool:
    """Whether `folder / rel` is still the file its manifest entry `meta` describes."""
    try:
        _verify_entry(folder, rel, meta)
    except IntegrityError:
        return False
    return True


def _verify_entry(folder: Path, rel: str, meta: dict) -> None:
    """IntegrityError unless `folder / rel` is the file of `meta` (size and sha256)."""
    p = folder / rel
    if not p.is_file():
        if p.is_symlink():  # git-annex content not fetched, a link into a folder not copied
            raise IntegrityError(f"{p} is a link to {os.readlink(p)}, which does not exist")
        raise IntegrityError(f"{folder}: {rel} is missing (truncated copy?)")
    try:
        size = p.stat().st_size
        digest = sha256_file(p) if size == meta["size"] else None
    except OSError as e:  # removed or made unreadable after the check above
        raise IntegrityError(f"{p}: unreadable ({e})") from None
    changed = size != meta["size"] or digest != meta["sha256"]
    if changed and (why := _why_changed(p, meta)):
        raise IntegrityError(f"{p}: {why}")
    if size != meta["size"]:
        raise IntegrityError(
            f"{p}: size {size} bytes, expected {meta['size']} (truncated or altered)"
        )
    if digest != meta["sha256"]:
        raise IntegrityError(f"{p}: checksum mismatch; the file changed after it was written")


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def _why_changed(p: Path, meta: dict) -> str | None:
    """What a version control system did to a file that no longer matches its manifest entry,
    where that can be told: a Git LFS pointer stands in for it, or its line ends became CRLF
    (git's core.autocrlf, or `text` in .gitattributes, on a Windows checkout)."""
    try:
        if p.stat().st_size > 2 * meta["size"] + 1024:
            return None  # (a CRLF copy is at most twice the size; nothing to read for that)
        data = p.read_bytes()
    except OSError:
        return None
    if data.startswith(_LFS_POINTER):
        return "a Git LFS pointer, not the file: fetch it with `git lfs pull`"
    if (
        b"\r\n" in data
        and hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest() == meta["sha256"]
    ):
        return (
            "its line ends were changed to CRLF (git's core.autocrlf, or `text` in "
            ".gitattributes): check the model out again with them off (`* -text` in "
            ".gitattributes, or git -c core.autocrlf=false clone ...)"
        )
    return None


def file_mode(directory: bool = False) -> int:
    """The mode open() (or mkdir) would give a new file (directory) under the process umask.

    mkstemp/mkdtemp create 0600/0700 whatever the umask, and safetensors writes 0600: published
    as is, a model trained by one user could not be served by another (a service account).
    """
    umask = os.umask(0)  # the only portable way to read it; restored at once
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def set_default_modes(root: Path) -> None:
    dmode, fmode = file_mode(directory=True), file_mode()
    for dirpath, _dirs, filenames in os.walk(root):
        os.chmod(dirpath, dmode)
        for name in filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):  # chmod follows links: never touch what one points to
                os.chmod(p, fmode)


def _is_empty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def _holds_manifest(path: Path) -> bool:
    return (path / MANIFEST).is_file()


# What a killed write leaves in a directory it was writing into (an export's temporary file).
_OUR_TEMP = re.compile(r"\..+\.tmp")


def _unlisted(folder: Path) -> list[str]:
    """Files under `folder` its manifest does not list (our own killed writes' temporary files
    aside), i.e. what a user put there: hidden ones too (`.git`, `.env`, notes), which were
    taken for temporary files and deleted with the directory. [] when the manifest can't be
    read."""
    try:
        listed = {*read_manifest(folder), MANIFEST}
    except IntegrityError:
        return []
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        ours = len(rel.parts) == 1 and _OUR_TEMP.fullmatch(rel.name)
        if p.is_file() and not ours and rel.as_posix() not in listed:
            out.append(rel.as_posix())
    return out


def check_replaceable(
    target: str | os.PathLike,
    is_ours: Callable[[Path], bool] = _holds_manifest,
    overwrite: bool = True,
) -> None:
    """Raise TargetExistsError unless `atomic_dir` may replace `target`: it is absent, an empty
    directory, or a directory `is_ours` recognises (default: one holding a manifest, i.e. one
    `atomic_dir` wrote). Replacing deletes the old target, so anything else (a project folder,
    a data file passed by mistake) is refused rather than lost."""
    target = Path(target)
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise TargetExistsError(f"{target} already exists")
    if target.is_symlink():
        # Replacing swaps the link itself for a directory: the model landed beside the link's
        # target (on the link's filesystem), and what it pointed to kept the old weights.
        raise TargetExistsError(
            f"{target} is a symbolic link (to {os.readlink(target)}); give the directory it "
            "points to, or another path"
        )
    if not target.is_dir():
        raise TargetExistsError(
            f"{target} exists and is not a directory; refusing to replace it (choose another path)"
        )
    if _is_empty_dir(target):
        return
    if is_ours(target):
        if extra := _unlisted(target):
            raise TargetExistsError(
                f"{target} is a slimtext directory that also holds files slimtext did not write "
                f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); replacing it "
                "would delete them: move them out, or choose another path"
            )
        # Replacing deletes the old copy: one this user cannot delete (another user's) stayed
        # beside it as a hidden full copy of that model, for ever.
        for d in [target, *(p for p in target.rglob("*") if p.is_dir() and not p.is_symlink())]:
            if not os.access(d, os.W_OK | os.X_OK):
                raise TargetExistsError(
                    f"{target}: cannot replace it, as its old copy could not be deleted ({d} is "
                    "not writable by this user): choose another path, or ask its owner"
                )
        return
    raise TargetExistsError(
        f"{target} exists and is neither empty nor a directory slimtext wrote; refusing to "
        "replace it, as that would delete its contents: choose another path, or remove it first"
    )


@contextlib.contextmanager
def atomic_dir(
    target: str | os.PathLike,
    overwrite: bool = True,
    is_ours: Callable[[Path], bool] = _holds_manifest,
) -> Iterator[Path]:
    """Yield a temporary directory; on success write its manifest and rename it to `target`.

    An existing `target` is replaced only after the new one is complete, and only when
    `check_replaceable(target, is_ours)` allows it, checked before any work and again just
    before the swap. On Linux the two are exchanged in one atomic rename (renameat2), so a reader
    or a crash sees the old directory or the new one, never neither; elsewhere the old one is
    moved aside first and moved back if the second rename fails. Files and directories get the
    modes a plain write would give.
    """
    # Absolute (links kept, not resolved): "." has itself as parent, and the temporary
    # directory would be made inside the target.
    target = Path(os.path.abspath(target))
    check_replaceable(target, is_ours, overwrite)  # fail before the caller does any work
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_abandoned(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    held = _hold(tmp)  # until the end: tells a later sweep this one is still being written
    try:
        yield tmp
        write_manifest(tmp)
        set_default_modes(tmp)
        _fsync_dir(tmp)
        check_replaceable(target, is_ours, overwrite)  # something may have appeared meanwhile
        if not os.path.lexists(target):
            os.replace(tmp, target)
            old = None
        elif _exchange(tmp, target):
            old = tmp  # now holds the previous target
        else:
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if held is not None:
            os.close(held)
    if old is not None:
        if old.is_symlink():  # a link to the old directory: drop the link, not its target
            old.unlink()
        else:
            shutil.rmtree(old, ignore_errors=True)
            if old.exists():  # checked writable before; something changed meanwhile
                warnings.warn(f"could not remove the replaced copy {old}; delete it", stacklevel=2)


def flock(fd: int, wait: bool = True) -> bool | None:
    """An exclusive flock on `fd`: True once taken, False when another holds it (only with
    `wait=False`), None where there is no flock (not POSIX)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _hold(folder: Path) -> int | None:
    """An open descriptor of `folder` holding its lock (None where there is no flock): held by
    the process writing the folder."""
    fd = os.open(folder, os.O_RDONLY)
    if flock(fd) is None:
        os.close(fd)
        return None
    return fd


def _sweep_abandoned(target: Path) -> None:
    """Remove the temporary directories that writes of `target` killed mid-way left beside it
    (SIGKILL, a power cut): a full model's copy each. One still being written is locked by its
    writer (`_hold`) and left alone."""
    for tmp in target.parent.glob(f".{glob_escape(target.name)}.tmp-*"):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if flock(fd, wait=False):  # nobody holds it: its writer is gone
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:  # a filesystem without locks: leave it
            pass
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE).

    False where that is unavailable (another OS, an old kernel or libc, a filesystem without
    it); the caller then renames in two steps."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    renameat2.argtypes += [ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), file_mode())  # mkstemp's 0600 is not what a plain write gives
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


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere a
    no-op): a worker process must not live on as an orphan when the command that started it
    is killed (torchrun's ranks, bench's measurement processes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    parent = os.getppid()
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the call: nobody will signal us
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@contextlib.contextmanager
def readable_path(path: str | os.PathLike) -> Iterator[str]:
    """`path` as a str that libraries taking UTF-8 paths (safetensors, ONNX Runtime) accept:
    itself, or for a name that is not UTF-8 (a Latin-1 "mod\\xe8le" Python holds as a lone
    surrogate) the /proc/self/fd entry of the file opened here. Such a model directory could
    be written but never read back."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(text, os.O_RDONLY)
        try:
            proc = f"/proc/self/fd/{fd}"
            if not os.path.exists(proc):
                raise OSError(f"{os.fsencode(text)!r}: the path is not UTF-8; rename it")
            yield proc
        finally:
            os.close(fd)
        return
    yield text
