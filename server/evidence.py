"""Evidence files on disk: durable atomic writes and a check that a stored file is intact.

This is the storage boundary: a failing disk shows up here as `StorageFull` (ENOSPC) or
`StorageError` (any other OSError), never as a half-written file under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
from pathlib import Path

logger = logging.getLogger(__name__)

_READ_CHUNK = 1024 * 1024


class StorageError(Exception):
    """An evidence file could not be written."""


class StorageFull(StorageError):
    """The disk holding the evidence folder is full (ENOSPC or EDQUOT)."""


def file_sha256(path: Path) -> str | None:
    """The SHA-256 of the file at `path`, or None when it is missing or unreadable."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def is_intact(path: Path, sha256: str) -> bool:
    """The file exists and its bytes still hash to `sha256`."""
    return file_sha256(path) == sha256


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` durably: temp file in the same folder, fsync, rename, fsync
    the folder. On any failure the temp file is removed and `path` is left as it was."""
    folder = path.parent
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"no space left for {path.name}") from err
        raise StorageError(f"cannot write {path.name}: {err}") from err


def _fsync_dir(folder: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
