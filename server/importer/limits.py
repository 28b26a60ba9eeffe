"""The caps an import is held to: archive sizes and entries, sheet rows and columns."""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.settings import ServerSettings

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


class ImportFileError(Exception):
    """The file as a whole cannot be read (format, headers, encoding, a cap)."""


@dataclass(frozen=True)
class ImportLimits:
    """Caps checked while reading, so a hostile file is refused before it costs memory."""

    photo_max_bytes: int = 10 * MIB
    max_office_bytes: int = 64 * MIB
    max_uncompressed_bytes: int = 256 * MIB
    max_zip_entries: int = 20_000
    max_rows: int = 100_000
    max_columns: int = 64

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> ImportLimits:
        """The limits the server's settings give."""
        return cls(
            photo_max_bytes=settings.photo_max_bytes,
            max_office_bytes=settings.import_max_office_bytes,
            max_uncompressed_bytes=settings.import_max_uncompressed_bytes,
            max_zip_entries=settings.import_max_zip_entries,
            max_rows=settings.import_max_rows,
            max_columns=settings.import_max_columns,
        )


DEFAULT_LIMITS = ImportLimits()


def open_zip(data: bytes, what: str, *, max_entries: int, max_total: int) -> zipfile.ZipFile:
    """Open an uploaded ZIP; its central directory's entry count and declared sizes are checked.

    CPython's zipfile never inflates an entry past its declared size (it stops there and the
    CRC check fails), so the declared total bounds what reading the archive can cost.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as err:
        raise ImportFileError(f"{what} is not a readable ZIP file: {err}") from err
    infos = archive.infolist()
    if len(infos) > max_entries:
        raise ImportFileError(
            f"{what} has {len(infos)} entries, more than {max_entries} "
            "(JIFANG_IMPORT_MAX_ZIP_ENTRIES)"
        )
    declared = sum(i.file_size for i in infos)
    if declared > max_total:
        largest = max(infos, key=lambda i: i.file_size)
        raise ImportFileError(
            f"{what}: its entries declare {declared} bytes uncompressed, more than {max_total} "
            f"(largest: {largest.filename}, {largest.file_size} bytes)"
        )
    return archive
