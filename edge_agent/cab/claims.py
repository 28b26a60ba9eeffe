"""Identity claims presented before the face check, and the IC-card reader boundary."""

from __future__ import annotations

import logging
import queue
import re
from dataclasses import dataclass
from typing import Protocol

from contract.codes import ClaimKind, ReasonCode
from contract.messages import CertificateInfo, ClaimInfo, GalleryOperator
from edge_agent.cab.cache import LocalGallery
from edge_agent.cab.types import GateFault

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedClaim:
    """A claim matched to one operator (and, for a certificate QR, one certificate)."""

    info: ClaimInfo
    operator: GalleryOperator
    certificate: CertificateInfo | None


def claim_info(kind: ClaimKind, value: str, cert_qr_pattern: str) -> ClaimInfo:
    """Normalise raw claim input: the certificate number out of a QR text, trimmed ids."""
    text = value.strip()
    if kind == ClaimKind.CERT_QR:
        found = re.search(cert_qr_pattern, text)
        if found is None:
            raise GateFault(ReasonCode.CLAIM_UNKNOWN, "QR text holds no certificate number")
        text = found.group("no")
    if not text:
        raise GateFault(ReasonCode.CLAIM_UNKNOWN, f"empty {kind.value} claim")
    return ClaimInfo(kind=kind, value=text[:256])


def resolve_claim(info: ClaimInfo, gallery: LocalGallery) -> ResolvedClaim:
    """The operator a claim names, or GateFault(CLAIM_UNKNOWN)."""
    for operator in gallery.operators.values():
        if info.kind == ClaimKind.CERT_QR:
            for certificate in operator.certificates:
                if certificate.certificate_no == info.value:
                    return ResolvedClaim(info, operator, certificate)
        elif (
            info.kind == ClaimKind.IC_CARD
            and operator.ic_card == info.value
            or info.kind == ClaimKind.EMPLOYEE_NO
            and operator.employee_no == info.value
        ):
            return ResolvedClaim(info, operator, None)
    raise GateFault(
        ReasonCode.CLAIM_UNKNOWN, f"no operator in gallery v{gallery.version} for this claim"
    )


class CardReader(Protocol):
    """An IC-card reader: returns a card number when one is presented."""

    def read(self, timeout_s: float) -> str | None:
        """The next card number, or None when none was presented within the timeout."""
        ...


class QueueCardReader:
    """A card reader fed by another component (a keyboard-wedge listener, a test, the API)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[str] = queue.Queue(maxsize=8)

    def present(self, card_no: str) -> None:
        """A card was read; drop it if nobody is consuming (a stale card must not linger)."""
        try:
            self._queue.put_nowait(card_no)
        except queue.Full:
            logger.warning("card reader queue full: card read dropped")

    def read(self, timeout_s: float) -> str | None:
        """The next card number, or None."""
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None
