"""Certificate-office import: CSV/XLSX with Chinese headers (plus a photo ZIP) or JSON.

An idempotent upsert keyed by certificate number, in four steps: `read` the file into raw
rows, `check` each row, `plan` every good row once against the registry, and `apply` exactly
that plan. Every row is checked before anything is written; a bad row rejects the whole batch
(unless `partial`), and the plan is applied in the caller's single transaction, so nothing is
ever half-applied. A dry run and an apply report the same plan.
"""

from __future__ import annotations

from server.importer.apply import ApplyResult, ImportSource, PlanNotApplicable, apply_plan
from server.importer.check import check_record
from server.importer.limits import DEFAULT_LIMITS, ImportFileError, ImportLimits
from server.importer.photos import FaceEnroller, PhotoError
from server.importer.plan import (
    FieldChange,
    ImportPlan,
    PlanSummary,
    RowAction,
    RowPlan,
    build_plan,
)
from server.importer.read import (
    FIELD_LABEL,
    HEADERS,
    REQUIRED,
    RawRow,
    read_records,
)
from server.importer.rows import CheckedRow
from server.importer.run import plan_import, run_import

__all__ = [
    "DEFAULT_LIMITS",
    "FIELD_LABEL",
    "HEADERS",
    "REQUIRED",
    "ApplyResult",
    "CheckedRow",
    "FaceEnroller",
    "FieldChange",
    "ImportFileError",
    "ImportLimits",
    "ImportPlan",
    "ImportSource",
    "PhotoError",
    "PlanNotApplicable",
    "PlanSummary",
    "RawRow",
    "RowAction",
    "RowPlan",
    "apply_plan",
    "build_plan",
    "check_record",
    "plan_import",
    "read_records",
    "run_import",
]
