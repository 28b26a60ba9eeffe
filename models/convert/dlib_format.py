"""Reader of dlib's serialization primitives (integers, bools, strings, floats, tensors)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

# dlib writes at most 8 magnitude bytes: its widest integer is 64 bits.
_MAX_INT_BYTES = 8
_NEGATIVE_FLAG = 0x80
_SIZE_MASK = 0x0F

# dlib marks non-finite floats with these reserved exponents instead of a mantissa.
_EXP_POS_INF = 32000
_EXP_NEG_INF = 32001
_EXP_NAN = 32002

TENSOR_VERSION = 2
ALIAS_TENSOR_VERSION = 1


class DlibFormatError(ValueError):
    """The bytes do not follow dlib's serialization format."""

    def __init__(self, offset: int, expected: str, found: str = "") -> None:
        self.offset = offset
        self.expected = expected
        detail = f": {found}" if found else ""
        # Offset -1 marks a structural problem found after parsing (e.g. a hand-built net).
        where = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(f"dlib format error{where}: expected {expected}{detail}")


@dataclass(frozen=True)
class AliasShape:
    """Shape of a dlib alias_tensor: a view into a layer's flat parameter tensor."""

    n: int
    k: int
    nr: int
    nc: int

    @property
    def size(self) -> int:
        """Number of floats the view covers."""
        return self.n * self.k * self.nr * self.nc

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The (n, k, nr, nc) tuple."""
        return (self.n, self.k, self.nr, self.nc)


class DlibReader:
    """Sequential decoder over a byte buffer holding dlib-serialized objects."""

    def __init__(self, data: bytes, offset: int = 0) -> None:
        self._raw = data
        self._data = memoryview(data)
        self._pos = offset

    @property
    def data(self) -> bytes:
        """The whole underlying buffer."""
        return self._raw

    @property
    def offset(self) -> int:
        """Current byte offset into the buffer."""
        return self._pos

    @property
    def remaining(self) -> int:
        """Bytes left to read."""
        return len(self._data) - self._pos

    def at_end(self) -> bool:
        """True when every byte has been consumed."""
        return self._pos >= len(self._data)

    def _take(self, count: int, what: str) -> memoryview:
        if count < 0 or self._pos + count > len(self._data):
            raise DlibFormatError(
                self._pos, what, f"needs {count} bytes, only {self.remaining} left"
            )
        chunk = self._data[self._pos : self._pos + count]
        self._pos += count
        return chunk

    def read_int(self, what: str = "integer") -> int:
        """Read a signed variable-length integer (control byte, then magnitude little-endian)."""
        start = self._pos
        control = self._take(1, f"{what} control byte")[0]
        size = control & _SIZE_MASK
        if control & ~(_SIZE_MASK | _NEGATIVE_FLAG) or size > _MAX_INT_BYTES:
            raise DlibFormatError(start, f"{what} control byte", f"invalid value 0x{control:02x}")
        magnitude = int.from_bytes(self._take(size, f"{what} magnitude"), "little")
        return -magnitude if control & _NEGATIVE_FLAG else magnitude

    def expect_int(self, value: int, what: str) -> None:
        """Read an integer and fail unless it equals `value`."""
        start = self._pos
        found = self.read_int(what)
        if found != value:
            raise DlibFormatError(start, f"{what} = {value}", f"found {found}")

    def read_dim(self, what: str) -> int:
        """Read a non-negative integer used as a size."""
        start = self._pos
        value = self.read_int(what)
        if value < 0:
            raise DlibFormatError(start, f"non-negative {what}", f"found {value}")
        return value

    def read_bool(self, what: str = "bool") -> bool:
        """Read a bool stored as the ASCII byte '1' or '0'."""
        start = self._pos
        byte = self._take(1, what)[0]
        if byte == ord("1"):
            return True
        if byte == ord("0"):
            return False
        raise DlibFormatError(start, f"{what} ('0' or '1')", f"found byte 0x{byte:02x}")

    def read_string(self, what: str = "string") -> str:
        """Read a string: an integer length, then that many bytes."""
        start = self._pos
        length = self.read_dim(f"{what} length")
        raw = bytes(self._take(length, f"{what} bytes"))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DlibFormatError(start, f"{what} (utf-8)", str(err)) from err

    def expect_string(self, value: str, what: str) -> None:
        """Read a string and fail unless it equals `value`."""
        start = self._pos
        found = self.read_string(what)
        if found != value:
            raise DlibFormatError(start, f"{what} {value!r}", f"found {found!r}")

    def read_float(self, what: str = "float") -> float:
        """Read a float or double stored as mantissa * 2**exponent."""
        mantissa = self.read_int(f"{what} mantissa")
        start = self._pos
        exponent = self.read_int(f"{what} exponent")
        if exponent == _EXP_POS_INF:
            return float("inf")
        if exponent == _EXP_NEG_INF:
            return float("-inf")
        if exponent == _EXP_NAN:
            return float("nan")
        try:
            # ldexp converts the 64-bit mantissa to a double once (one rounding, as dlib's own
            # reader does), then scales exactly; far faster than exact fractions on the
            # 1.3 M floats of a shape predictor.
            return math.ldexp(mantissa, exponent)
        except OverflowError as err:
            raise DlibFormatError(start, f"{what} exponent in range", f"found {exponent}") from err

    def _read_shape(self, what: str) -> tuple[int, int, int, int]:
        n = self.read_dim(f"{what} num_samples")
        k = self.read_dim(f"{what} k")
        nr = self.read_dim(f"{what} nr")
        nc = self.read_dim(f"{what} nc")
        return n, k, nr, nc

    def read_tensor(self, what: str = "tensor") -> FloatArray:
        """Read a tensor (version 2): shape n, k, nr, nc, then float32 little-endian in NCHW."""
        self.expect_int(TENSOR_VERSION, f"{what} version")
        shape = self._read_shape(what)
        count = shape[0] * shape[1] * shape[2] * shape[3]
        raw = self._take(4 * count, f"{what} data ({count} float32)")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias_tensor(self, what: str = "alias_tensor") -> AliasShape:
        """Read an alias_tensor (version 1): only its shape is stored."""
        self.expect_int(ALIAS_TENSOR_VERSION, f"{what} version")
        return AliasShape(*self._read_shape(what))
