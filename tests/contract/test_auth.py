"""Device request MACs and server-signed envelopes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.auth import (
    SignatureError,
    load_public_key_b64,
    parse_timestamp,
    public_key_b64,
    request_mac,
    sign_envelope,
    verify_envelope,
    verify_request_mac,
)


def test_request_mac_binds_method_path_time_and_body() -> None:
    key = b"k" * 32
    mac = request_mac(key, "POST", "/api/v1/events", "1700000000", b'{"a":1}')
    verify_request_mac(key, "post", "/api/v1/events", "1700000000", b'{"a":1}', mac.upper())
    for args in [
        (b"x" * 32, "POST", "/api/v1/events", "1700000000", b'{"a":1}'),
        (key, "PUT", "/api/v1/events", "1700000000", b'{"a":1}'),
        (key, "POST", "/api/v1/other", "1700000000", b'{"a":1}'),
        (key, "POST", "/api/v1/events", "1700000001", b'{"a":1}'),
        (key, "POST", "/api/v1/events", "1700000000", b'{"a":2}'),
    ]:
        with pytest.raises(SignatureError):
            verify_request_mac(*args, mac)


def test_envelope_verifies_only_untampered_payload() -> None:
    private = Ed25519PrivateKey.generate()
    public = load_public_key_b64(public_key_b64(private.public_key()))
    envelope = sign_envelope(private, "server-1", "gallery.delta", '{"to_version": 4}')
    assert verify_envelope(public, envelope) == '{"to_version": 4}'
    forged = envelope.model_copy(update={"payload": '{"to_version": 5}'})
    with pytest.raises(SignatureError, match="gallery.delta signature"):
        verify_envelope(public, forged)
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(SignatureError):
        verify_envelope(other, envelope)
    with pytest.raises(SignatureError, match="not an Ed25519 public key"):
        load_public_key_b64("AAAA")


@pytest.mark.parametrize("text", ["1700000000", "1700000000.25", "0"])
def test_plain_decimal_timestamps_parse(text: str) -> None:
    assert parse_timestamp(text) == float(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "1e9",
        "1_700_000_000",
        " 1",
        "1 ",
        "+1",
        "-1",
        "1.",
        ".5",
        "0x10",
        "１７",
        "1" * 13,
    ],
)
def test_timestamps_that_float_would_take_are_refused(text: str) -> None:
    # "nan" passed the skew window (every comparison with NaN is false): a replay forever.
    with pytest.raises(SignatureError, match="not decimal unix seconds"):
        parse_timestamp(text)
