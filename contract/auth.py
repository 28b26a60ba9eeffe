"""How a device authenticates to the server, and how it checks what the server signed.

Device -> server: every request carries the device id, a timestamp and an HMAC-SHA256 over
`method`, `path`, timestamp and the exact body bytes, keyed by the per-device key issued at
registration. Server -> device: galleries and configs come in a `SignedEnvelope`, signed with
the server's Ed25519 key, whose public half the device receives at registration.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.messages import SignedEnvelope

HEADER_DEVICE = "X-Jifang-Device"
HEADER_TIMESTAMP = "X-Jifang-Timestamp"
HEADER_SIGNATURE = "X-Jifang-Signature"
MAX_CLOCK_SKEW_S = 300
"""A request whose timestamp is further than this from the server's clock is refused."""
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
"""Plain decimal unix seconds: no sign, exponent, `nan`/`inf`, underscores or spaces."""


class SignatureError(Exception):
    """A signature is missing, malformed or does not verify."""


def request_mac(key: bytes, method: str, path: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of a device request."""
    message = b"\n".join([method.upper().encode(), path.encode(), timestamp.encode(), body])
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def parse_timestamp(text: str) -> float:
    """The unix time a device request states; SignatureError unless plain decimal seconds."""
    # float() alone takes "nan" (which passes every skew comparison, so it would replay
    # forever), "inf", "1e9", "1_700_000_000" and non-ASCII digits.
    if _TIMESTAMP.fullmatch(text) is None:
        raise SignatureError(f"timestamp {text[:32]!r} is not decimal unix seconds")
    return float(text)


def verify_request_mac(
    key: bytes, method: str, path: str, timestamp: str, body: bytes, signature: str
) -> None:
    """Raise SignatureError unless `signature` is the request's MAC (constant-time compare)."""
    expected = request_mac(key, method, path, timestamp, body)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise SignatureError("request signature does not match the device key")


def sign_envelope(
    private_key: Ed25519PrivateKey, key_id: str, payload_type: str, payload_json: str
) -> SignedEnvelope:
    """Wrap a JSON payload in an Ed25519-signed envelope."""
    signature = private_key.sign(payload_json.encode("utf-8"))
    return SignedEnvelope(
        payload_type=payload_type,
        payload=payload_json,
        key_id=key_id,
        signature=base64.b64encode(signature).decode("ascii"),
    )


def verify_envelope(public_key: Ed25519PublicKey, envelope: SignedEnvelope) -> str:
    """Return the envelope's payload JSON if the server's signature verifies."""
    try:
        public_key.verify(base64.b64decode(envelope.signature), envelope.payload.encode("utf-8"))
    except (InvalidSignature, ValueError) as err:
        raise SignatureError(f"{envelope.payload_type} signature does not verify") from err
    return envelope.payload


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, base64 (how a device stores the server key)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    """Inverse of public_key_b64."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
    except ValueError as err:
        raise SignatureError(f"not an Ed25519 public key: {err}") from err
