"""Photos named by rows: found in the ZIP, hashed, and enrolled with the face engine."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from contract.messages import EmbeddingContract
from server.faces import Enrolled, EnrollmentError
from server.importer.read import FIELD_LABEL, ImportFileError
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


class PhotoArchive:
    """The photo ZIP of an import (or its absence), with a size limit per photo."""

    def __init__(self, data: bytes | None, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._zip: zipfile.ZipFile | None = None
        if data is not None:
            try:
                self._zip = zipfile.ZipFile(io.BytesIO(data))
            except zipfile.BadZipFile as err:
                raise ImportFileError(f"photo archive is not a ZIP file: {err}") from err

    def read(self, name: str) -> bytes:
        """The bytes of photo `name`; PhotoError when it is missing, ambiguous or too big."""
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
        if info.file_size > self._max_bytes:
            raise PhotoError(
                f"{name}: {info.file_size} bytes is over the {self._max_bytes}-byte limit"
            )
        return self._zip.read(info)


def _enroll(faces: FaceEnroller | None, name: str, photo: bytes) -> NewTemplate:
    if faces is None:
        raise PhotoError("no face engine")
    try:
        enrolled = faces.enroll(photo)
    except EnrollmentError as err:
        raise PhotoError(f"{name}: {err}") from err
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
            blob = archive.read(row.photo)
            sha = hashlib.sha256(blob).hexdigest()
            op = registry.operators.get(row.id_number)
            if (op is not None and (op.id, sha) in registry.templates) or (
                (row.id_number, sha) in planned
            ):
                photos[row.row] = RowPhoto(sha256=sha, template=None)
                continue
            template = _enroll(faces, row.photo, blob)
        except PhotoError as err:
            errors.append(ImportRowError(row=row.row, field=FIELD_LABEL["photo"], message=str(err)))
            continue
        planned.add((row.id_number, sha))
        photos[row.row] = RowPhoto(sha256=sha, template=template)
    return photos, errors
