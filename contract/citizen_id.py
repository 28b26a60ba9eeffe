"""GB 11643 citizen ID numbers: the check character, validation, and made-up valid numbers."""

from __future__ import annotations

import re
from datetime import date

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
"""GB 11643-1999: weight of each of the first 17 digits (2^(17-i) mod 11)."""
_CHECK = "10X98765432"
"""The check character for each weighted sum mod 11."""
_PATTERN = re.compile(r"^\d{17}[\dX]$")


def gb11643_check_char(first17: str) -> str:
    """The check character (0-9 or X) that completes 17 digits to an ID number."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"need exactly 17 digits, got {first17!r}")
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def validate_gb11643(value: str) -> str | None:
    """Why `value` is not a valid GB 11643 citizen ID number, or None when it is."""
    if not _PATTERN.match(value):
        return "must be 17 digits and a check character (0-9 or X)"
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return f"birth date {value[6:14]} is not a date"
    expected = gb11643_check_char(value[:17])
    if value[17] != expected:
        return f"check digit is {value[17]}, GB 11643 gives {expected}"
    return None


def make_gb11643(region: str, birth: str, sequence: int) -> str:
    """A valid ID number: 6-digit region, 8-digit birth date, last 3 digits of `sequence`.

    For demos, tests and benchmarks: the numbers are well formed, not anyone's.
    """
    if len(region) != 6 or len(birth) != 8:
        raise ValueError(f"region must have 6 digits and birth 8, got {region!r}, {birth!r}")
    body = f"{region}{birth}{sequence % 1000:03d}"
    return body + gb11643_check_char(body)
