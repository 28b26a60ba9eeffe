"""Decoding of dlib's serialization primitives from hand-built bytes."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from models.convert.dlib_format import AliasShape, DlibFormatError, DlibReader


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (b"\x01\x00", 0),
        (b"\x01\x96", 150),
        (b"\x81\x03", -3),
        (b"\x02\x80\x12", 4736),
        (b"\x02\x00\x01", 256),
        (b"\x08" + (2**63 - 1).to_bytes(8, "little"), 2**63 - 1),
        (b"\x00", 0),
    ],
)
def test_int_decodes_documented_examples(raw: bytes, value: int) -> None:
    reader = DlibReader(raw)
    assert reader.read_int() == value
    assert reader.at_end()


def test_ints_are_read_in_sequence() -> None:
    reader = DlibReader(b"\x01\x02\x81\x03\x01\x96")
    assert [reader.read_int(), reader.read_int(), reader.read_int()] == [2, -3, 150]
    assert reader.offset == 6


def test_truncated_int_names_offset_and_expectation() -> None:
    reader = DlibReader(b"\x01\x00\x02\x96")
    reader.read_int()
    with pytest.raises(DlibFormatError) as info:
        reader.read_int("num_filters")
    # The control byte at offset 2 promised 2 magnitude bytes; they were due at offset 3.
    assert info.value.offset == 3
    assert "byte 3" in str(info.value)
    assert "num_filters magnitude" in str(info.value)


def test_empty_stream_is_an_error_at_offset_zero() -> None:
    with pytest.raises(DlibFormatError) as info:
        DlibReader(b"").read_int("version")
    assert info.value.offset == 0
    assert "version control byte" in str(info.value)


@pytest.mark.parametrize("control", [0x09, 0x0F, 0x40, 0x10])
def test_invalid_control_byte_is_rejected(control: int) -> None:
    with pytest.raises(DlibFormatError, match="control byte"):
        DlibReader(bytes([control]) + b"\x00" * 16).read_int()


def test_expect_int_reports_found_value() -> None:
    with pytest.raises(DlibFormatError, match=r"tensor version = 2: found 1") as info:
        DlibReader(b"\x01\x01").expect_int(2, "tensor version")
    assert info.value.offset == 0


def test_bool_is_ascii_digit() -> None:
    reader = DlibReader(b"10")
    assert reader.read_bool() is True
    assert reader.read_bool() is False
    with pytest.raises(DlibFormatError, match="found byte 0x01") as info:
        DlibReader(b"\x01").read_bool()
    assert info.value.offset == 0


def test_string_is_length_then_bytes() -> None:
    reader = DlibReader(b"\x01\x05relu_\x01\x00")
    assert reader.read_string() == "relu_"
    assert reader.read_string() == ""
    assert reader.at_end()


def test_truncated_string_is_an_error() -> None:
    with pytest.raises(DlibFormatError, match="layer name bytes") as info:
        DlibReader(b"\x01\x09con").read_string("layer name")
    assert info.value.offset == 2


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        # 0.6 as stored by loss_metric_2: mantissa 0x99999a, exponent -24.
        (b"\x03\x9a\x99\x99\x81\x18", 10066330 / 2**24),
        (b"\x01\x03\x01\x01", 6.0),
        (b"\x81\x03\x01\x00", -3.0),
        (b"\x01\x01\x81\x01", 0.5),
        (b"\x01\x00\x01\x00", 0.0),
    ],
)
def test_float_is_mantissa_times_power_of_two(raw: bytes, value: float) -> None:
    reader = DlibReader(raw)
    assert reader.read_float() == value
    assert reader.at_end()


def test_float_special_exponents() -> None:
    # Exponents 32000, 32001, 32002 (0x7d00..0x7d02) are +inf, -inf and NaN.
    reader = DlibReader(b"\x01\x00\x02\x00\x7d\x01\x00\x02\x01\x7d\x01\x00\x02\x02\x7d")
    assert reader.read_float() == math.inf
    assert reader.read_float() == -math.inf
    assert math.isnan(reader.read_float())


def test_truncated_float_names_the_exponent() -> None:
    with pytest.raises(DlibFormatError, match="avg_red exponent") as info:
        DlibReader(b"\x01\x03").read_float("avg_red")
    assert info.value.offset == 2


def test_tensor_reads_nchw_float32_little_endian() -> None:
    values = [1.5, -2.0, 0.25, 8.0, 0.0, -0.125]
    raw = b"\x01\x02" + b"\x01\x01\x01\x02\x01\x01\x01\x03" + struct.pack("<6f", *values)
    tensor = DlibReader(raw).read_tensor()
    assert tensor.dtype == np.float32
    assert tensor.shape == (1, 2, 1, 3)
    np.testing.assert_array_equal(tensor.reshape(-1), np.asarray(values, dtype=np.float32))


def test_empty_tensor() -> None:
    reader = DlibReader(b"\x01\x02\x01\x00\x01\x00\x01\x00\x01\x00")
    assert reader.read_tensor().shape == (0, 0, 0, 0)
    assert reader.at_end()


def test_truncated_tensor_data_is_an_error() -> None:
    raw = b"\x01\x02\x01\x01\x01\x01\x01\x01\x01\x02" + struct.pack("<f", 1.0)
    with pytest.raises(DlibFormatError, match=r"params data \(2 float32\)") as info:
        DlibReader(raw).read_tensor("params")
    assert info.value.offset == 10


def test_tensor_wrong_version_is_an_error() -> None:
    with pytest.raises(DlibFormatError, match="tensor version = 2"):
        DlibReader(b"\x01\x01\x01\x00\x01\x00\x01\x00\x01\x00").read_tensor()


def test_negative_dimension_is_an_error() -> None:
    with pytest.raises(DlibFormatError, match="non-negative t k") as info:
        DlibReader(b"\x01\x02\x01\x01\x81\x01\x01\x01\x01\x01").read_tensor("t")
    assert info.value.offset == 4


def test_alias_tensor_is_version_one_and_a_shape() -> None:
    shape = DlibReader(b"\x01\x01\x01\x20\x01\x03\x01\x07\x01\x07").read_alias_tensor()
    assert shape == AliasShape(32, 3, 7, 7)
    assert shape.size == 32 * 3 * 7 * 7
