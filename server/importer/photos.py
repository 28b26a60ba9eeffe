"""Photos named by rows: found in the ZIP, hashed, and enrolled with the face engine."""

from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from contract.messages import EmbeddingContract
from server.faces import Enrolled, EnrollmentError
from server.importer.limits import DEFAULT_LIMITS, ImportFileError, ImportLimits, open_zip
from server.importer.read import FIELD_LABEL
from server.importer.registry import Registry
from server.importer.rows import CheckedRow
from server.schemas import ImportRowError

logger = logging.getLogger(__name__)


class PhotoError(Exception):
    """A row's photo cannot be used; the message names the file and says why."""


class FaceEnroller(Protocol):
    """What the import needs of the face engine (server.faces.FaceService is one)."""

    @property
    def contract(self) -> EmbeddingContract:
        """The embedding contract new templates are made under."""
        ...

    def enroll(self, photo: bytes) -> Enrolled:
        """A template from an ID photo; raises EnrollmentError when it has no usable face."""
        ...


@dataclass(frozen=True)
class NewTemplate:
    """A template to store, with the contract that makes it comparable."""

    enrolled: Enrolled
    contract: EmbeddingContract


@dataclass(frozen=True)
class RowPhoto:
    """A row's photo: its hash, and the template to add (None when the operator has it)."""

    sha256: str
    template: NewTemplate | None


_CHUNK = 1024 * 1024
# What reading a damaged entry raises: a bad CRC or header (BadZipFile), a broken deflate
# stream (zlib.error), a truncated one (EOFError), an unsupported method or encryption.
_ENTRY_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
)


class PhotoArchive:
    """The photo ZIP of an import (or its absence), held to the import's caps.

    The central directory is checked when the archive is opened (entry count, declared total);
    each read counts the bytes actually inflated, per photo and for the archive, since declared
    sizes can lie.
    """

    def __init__(self, data: bytes | None, limits: ImportLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._inflated = 0
        self._zip: zipfile.ZipFile | None = None
        if data is not None:
            self._zip = open_zip(
                data,
                "photo ZIP",
                max_entries=limits.max_zip_entries,
                max_total=limits.max_uncompressed_bytes,
            )

    def read(self, name: str) -> bytes:
        """The bytes of photo `name`; PhotoError when it is missing, ambiguous, too big or damaged.

        ImportFileError when the archive as a whole inflates past its cap.
        """
        if self._zip is None:
            raise PhotoError(f"{name}: a photo is named but no photo ZIP was given")
        try:
            info = self._zip.getinfo(name)
        except KeyError:
            # Office archives often keep photos in a folder; a unique base name still identifies one.
            matches = [i for i in self._zip.infolist() if i.filename.rsplit("/", 1)[-1] == name]
            if len(matches) != 1:
                raise PhotoError(f"{name}: not in the photo ZIP") from None
            info = matches[0]
        limit = self._limits.photo_max_bytes
        if info.file_size > limit:
            raise PhotoError(f"{name}: {info.file_size} bytes is over the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        try:
            with self._zip.open(info) as member:
                while chunk := member.read(_CHUNK):
                    size += len(chunk)
                    self._inflated += len(chunk)
                    if size > limit:
                        raise PhotoError(f"{name}: inflates past the {limit}-byte limit")
                    if self._inflated > self._limits.max_uncompressed_bytes:
                        raise ImportFileError(
                            f"photo ZIP: at {name}, the entries inflate to more than "
                            f"{self._limits.max_uncompressed_bytes} bytes "
                            "(JIFANG_IMPORT_MAX_UNCOMPRESSED_BYTES)"
                        )
                    chunks.append(chunk)
        except _ENTRY_ERRORS as err:
            raise PhotoError(f"{name}: damaged in the photo ZIP ({err})") from None
        return b"".join(chunks)


def _enroll(faces: FaceEnroller | None, name: str, photo: bytes) -> NewTemplate:
    if faces is None:
        raise PhotoError("no face engine")
    try:
        enrolled = faces.enroll(photo)
    except EnrollmentError as err:
        raise PhotoError(f"{name}: {err}") from None
    return NewTemplate(enrolled=enrolled, contract=faces.contract)


def prepare_photos(
    rows: Sequence[CheckedRow],
    registry: Registry,
    archive: PhotoArchive,
    faces: FaceEnroller | None,
) -> tuple[dict[int, RowPhoto], list[ImportRowError]]:
    """The photo of each row that names one (by row number), and the rows whose photo failed.

    A photo the operator already has a template for (under the engine's contract) is not
    enrolled again; the same photo twice for one operator gives one template.
    """
    photos: dict[int, RowPhoto] = {}
    errors: list[ImportRowError] = []
    planned: set[tuple[str, str]] = set()  # (ID number, sha256) already given a template
    for row in rows:
        if row.photo is None:
            continue
        try:
            photo = _row_photo(row, row.photo, registry, archive, faces, planned)
        except PhotoError as err:
            errors.append(ImportRowError(row=row.row, field=FIELD_LABEL["photo"], message=str(err)))
            continue
        if photo.template is not None:
            planned.add((row.id_number, photo.sha256))
        photos[row.row] = photo
    return photos, errors


def _row_photo(
    row: CheckedRow,
    name: str,
    registry: Registry,
    archive: PhotoArchive,
    faces: FaceEnroller | None,
    planned: set[tuple[str, str]],
) -> RowPhoto:
    """Read, hash and (when needed) enrol one row's photo; its bytes die with this call.

    PhotoError is raised `from None`, so no traceback keeps the photo bytes alive.
    """
    blob = archive.read(name)
    sha = hashlib.sha256(blob).hexdigest()
    op = registry.operators.get(row.id_number)
    if (op is not None and (op.id, sha) in registry.templates) or ((row.id_number, sha) in planned):
        return RowPhoto(sha256=sha, template=None)
    return RowPhoto(sha256=sha, template=_enroll(faces, name, blob))
