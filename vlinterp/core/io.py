"""Writing outputs: atomically, and never over a file vlinterp did not write.

Every file vlinterp writes goes to a temp file beside its destination and is moved into place
with ``os.replace``, so a reader sees the old file or the new one, never half of one. Each
directory vlinterp writes into keeps a manifest, ``.vlinterp-manifest.json``, of the files it
wrote there and their SHA-256. An existing file may be replaced only when the manifest lists it
with the same content (vlinterp wrote it and nobody changed it since); anything else is the
user's and is never overwritten or deleted.

* :func:`write_bytes` / :func:`write_text` / :func:`write_json`: one file.
* :func:`atomic_path`: a temp path for libraries that write by file name (safetensors, savefig).
* :func:`output_dir`: a whole output directory, built aside and published; files of an earlier
  vlinterp run in it are replaced, the user's files stay.
* :func:`check_output_file` / :func:`check_output_dir`: the same rules, checked before any work
  (the CLI calls them while it parses arguments).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

from .errors import OutputError

MANIFEST = ".vlinterp-manifest.json"


# ------------------------------------------------------------------ manifests
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(d: str) -> dict[str, str]:
    try:
        with open(os.path.join(d, MANIFEST)) as f:
            data = json.load(f)
        files = data.get("files", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(d: str, files: dict[str, str]) -> None:
    data = json.dumps({"written_by": "vlinterp", "files": dict(sorted(files.items()))}, indent=1).encode()
    _replace_bytes(os.path.join(d, MANIFEST), data)


def _record(path: str) -> None:
    """Add ``path`` (just written) to its directory's manifest."""
    record_written([path])


def record_written(paths) -> None:
    """Record files vlinterp has just moved into place (one manifest write per folder), so that a
    later run may replace or remove them."""
    by_dir: dict[str, list[str]] = {}
    for p in paths:
        d, name = os.path.split(os.path.abspath(os.fspath(p)))
        by_dir.setdefault(d, []).append(name)
    for d, names in by_dir.items():
        files = _read_manifest(d)
        files.update({n: _sha256(os.path.join(d, n)) for n in names})
        _write_manifest(d, files)


def written_by_vlinterp(path: str) -> bool:
    """Whether ``path`` is a file vlinterp wrote and nobody has changed since."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isfile(path):
        return False
    d, name = os.path.split(path)
    want = _read_manifest(d).get(name)
    return want is not None and want == _sha256(path)


# ----------------------------------------------------------------- one file
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_bytes(path: str, data: bytes) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_output_file(path, flag: str = "output") -> str:
    """Raise :class:`OutputError` unless ``path`` may be written: it does not exist, or vlinterp
    wrote it (unchanged since). Its folder need not exist. Returns the path."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(f"{flag} {path!r} is a directory; give a file path")
    if os.path.lexists(path) and not written_by_vlinterp(path):
        raise OutputError(f"{flag} {path!r} exists and was not written by vlinterp; choose another path or move it away")
    parent = os.path.dirname(os.path.abspath(path))
    _check_parent(parent, flag, path)
    return path


def _check_parent(parent: str, flag: str, path: str) -> None:
    p = parent
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    if p and not os.path.isdir(p):
        raise OutputError(f"{flag} {path!r}: {p!r} is a file, not a directory")
    if p and not os.access(p, os.W_OK):
        raise OutputError(f"{flag} {path!r}: {p!r} is not writable")


def write_bytes(path, data: bytes, flag: str = "output") -> str:
    """Write ``data`` to ``path`` atomically (creating its folder) and record it in the folder's
    manifest. Refuses (:class:`OutputError`) to replace a file vlinterp did not write."""
    path = check_output_file(path, flag)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _replace_bytes(path, data)
    _record(path)
    return path


def write_text(path, text: str, flag: str = "output") -> str:
    return write_bytes(path, text.encode("utf-8"), flag)


def write_json(path, obj, indent: int | None = 1, flag: str = "output") -> str:
    return write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"), flag)


@contextlib.contextmanager
def atomic_path(path, flag: str = "output"):
    """Yield a temp file name beside ``path`` (same extension) for a library to write; on success
    it replaces ``path`` (and is recorded), on error it is removed and ``path`` is untouched."""
    path = check_output_file(path, flag)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _record(path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ------------------------------------------------------------ output folders
def check_output_dir(path, flag: str = "--out") -> str:
    """Raise :class:`OutputError` unless ``path`` can take a vlinterp output: it does not exist, is
    empty, or holds an earlier vlinterp output (its manifest). Returns the path."""
    path = os.fspath(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"{flag} {path!r} exists and is not a directory")
    if os.path.isdir(path):
        entries = [e for e in os.listdir(path) if e != MANIFEST]
        if entries and not os.path.isfile(os.path.join(path, MANIFEST)):
            raise OutputError(f"{flag} {path!r} is not empty and holds no vlinterp output; choose a new or empty directory")
        if not os.access(path, os.W_OK):
            raise OutputError(f"{flag} {path!r} is not writable")
    else:
        _check_parent(os.path.dirname(os.path.abspath(path)), flag, path)
    return path


@contextlib.contextmanager
def output_dir(path, flag: str = "--out"):
    """Yield a temp directory to fill; on success its files become ``path``'s.

    A new ``path`` is the temp directory renamed (one atomic step). Into an existing one (empty,
    or an earlier vlinterp output) each file is moved with ``os.replace``, then the files the
    earlier run wrote that this run did not are removed if unchanged; the user's files are never
    touched, and a user's file in the way of a new one stops the publish (:class:`OutputError`).
    On error the temp directory is removed and ``path`` is as it was."""
    path = os.path.abspath(check_output_dir(path, flag))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    try:
        yield tmp
        new = {os.path.relpath(os.path.join(d, f), tmp): _sha256(os.path.join(d, f))
               for d, _, fs in os.walk(tmp) for f in fs if f != MANIFEST}
        _publish_modes(tmp)
        if not os.path.exists(path):
            _write_manifest(tmp, new)
            os.replace(tmp, path)
            return
        old = _read_manifest(path)
        for rel in new:
            dest = os.path.join(path, rel)
            if os.path.lexists(dest) and old.get(rel) != (_sha256(dest) if os.path.isfile(dest) else None):
                raise OutputError(f"{flag} {path!r}: {rel!r} is in the way and was not written by vlinterp; move it away and run again")
        for rel in new:
            dest = os.path.join(path, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(os.path.join(tmp, rel), dest)
        for rel, sha in old.items():
            dest = os.path.join(path, rel)
            if rel not in new and os.path.isfile(dest) and _sha256(dest) == sha:
                os.remove(dest)
                _remove_empty_dirs(os.path.dirname(dest), path)
        _write_manifest(path, new)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _remove_empty_dirs(d: str, root: str) -> None:
    while os.path.abspath(d) != os.path.abspath(root) and os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)
        d = os.path.dirname(d)


def _publish_modes(root: str) -> None:
    """mkdtemp/mkstemp create 0700/0600 entries; outputs get the usual permissions."""
    um = _umask()
    os.chmod(root, 0o777 & ~um)
    for d, dirs, files in os.walk(root):
        for x in dirs:
            os.chmod(os.path.join(d, x), 0o777 & ~um)
        for x in files:
            os.chmod(os.path.join(d, x), 0o666 & ~um)


__all__ = ["MANIFEST", "write_bytes", "write_text", "write_json", "atomic_path", "output_dir",
           "check_output_file", "check_output_dir", "written_by_vlinterp", "record_written"]
