"""One-time emergency override codes: HMAC with the device key, an expiry, verified offline.

Format: `<code_id>.<expires unix seconds>.<16 hex MAC>`. The server issues it with
`issue_code` (it holds the same device key); the device checks it without a network, refuses
reuse (codes are recorded in the outbox database), and every use is flagged for review.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from contract.codes import ReasonCode
from edge_agent.cab.types import GateFault
from edge_agent.outbox import Outbox

MAC_HEX = 16
"""64 bits: enough against guessing a one-time, short-lived code, short enough to read out."""
_FORMAT = re.compile(r"^(?P<id>[A-Za-z0-9_-]{1,64})\.(?P<exp>\d{9,11})\.(?P<mac>[0-9a-f]{16})$")


@dataclass(frozen=True)
class OverrideCode:
    """A verified, now-used override code."""

    code_id: str
    expires_at: datetime


def _mac(key: bytes, device_id: str, code_id: str, expires: int) -> str:
    message = f"jifang-override\n{device_id}\n{code_id}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:MAC_HEX]


def issue_code(key: bytes, device_id: str, code_id: str, expires_at: datetime) -> str:
    """The code text for one device (server side; also used by tests and the demo)."""
    expires = int(expires_at.timestamp())
    return f"{code_id}.{expires}.{_mac(key, device_id, code_id, expires)}"


def redeem_code(
    text: str,
    key: bytes,
    device_id: str,
    now: datetime,
    max_validity_s: int,
    outbox: Outbox,
) -> OverrideCode:
    """Verify and consume a code; raise GateFault with why it is refused."""
    found = _FORMAT.match(text.strip())
    if found is None:
        raise GateFault(ReasonCode.OVERRIDE, "override code is malformed")
    code_id, expires = found.group("id"), int(found.group("exp"))
    if not hmac.compare_digest(_mac(key, device_id, code_id, expires), found.group("mac")):
        raise GateFault(ReasonCode.OVERRIDE, "override code is not valid for this device")
    expires_at = datetime.fromtimestamp(expires, UTC)
    remaining = (expires_at - now).total_seconds()
    if remaining <= 0:
        raise GateFault(ReasonCode.OVERRIDE, f"override code {code_id} expired at {expires_at}")
    if remaining > max_validity_s:
        raise GateFault(ReasonCode.OVERRIDE, f"override code {code_id} is valid for too long")
    if not outbox.use_code(code_id):
        raise GateFault(ReasonCode.OVERRIDE, f"override code {code_id} was already used")
    return OverrideCode(code_id, expires_at)
