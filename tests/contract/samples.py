"""One valid instance of every wire message, for round-trip and storage tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from contract.codes import (
    CertificateStatus,
    ClaimKind,
    DeviceKind,
    GateState,
    ReasonCode,
    Severity,
)
from contract.ids import uuid7
from contract.messages import (
    CabDecisionEvent,
    CabDecisionPayload,
    CabOverrideEvent,
    CabOverridePayload,
    CabReverifyEvent,
    CabReverifyPayload,
    CategoryRule,
    CertificateInfo,
    ClaimInfo,
    DeviceConfig,
    DeviceFaultEvent,
    DeviceFaultPayload,
    DeviceIdentity,
    EmbeddingContract,
    EventBatch,
    EventBatchAck,
    EvidenceDetection,
    EvidenceRef,
    EvidenceZone,
    GalleryDelta,
    GalleryOperator,
    GallerySnapshot,
    GalleryTemplate,
    GalleryUpdateRequired,
    Heartbeat,
    MatchInfo,
    Message,
    SequenceGap,
    SignedEnvelope,
    StationCylinder,
    StationCylinderType,
    StationFiller,
    StationFillEvent,
    StationFillPayload,
    StationRegistry,
    StationViolationEvent,
    StationViolationPayload,
)

NOW = datetime(2026, 11, 29, 8, 30, tzinfo=UTC)
SHA = "ab" * 32
CONTRACT = EmbeddingContract(
    pack_name="jifang-open", pack_version="1.0.0", contract_id="c0ffee00deadbeef", dim=4
)
MATCH = MatchInfo(
    operator_id="op-1", certificate_no="TS-Q2-0001", score=0.81, threshold=0.62, margin=0.2
)


def events(device_id: str = "FL-0001") -> list[Message]:
    """One event of every kind, in sequence."""
    common = {"device_id": device_id, "occurred_at": NOW}
    return [
        CabDecisionEvent(
            event_id=uuid7(),
            seq=1,
            reason=ReasonCode.AUTHORIZED,
            **common,
            evidence=(EvidenceRef(sha256=SHA, media_type="image/jpeg", box=(1, 2, 3, 4)),),
            payload=CabDecisionPayload(
                decision="authorized",
                state_from=GateState.VERIFYING,
                state_to=GateState.AUTHORIZED,
                frames_used=3,
                match=MATCH,
                liveness_score=0.93,
                claim=ClaimInfo(kind=ClaimKind.EMPLOYEE_NO, value="E-77"),
            ),
        ),
        CabReverifyEvent(
            event_id=uuid7(),
            seq=2,
            reason=ReasonCode.DRIVER_CHANGED,
            severity=Severity.HIGH,
            **common,
            payload=CabReverifyPayload(expected_operator_id="op-1", observed=MATCH),
        ),
        CabOverrideEvent(
            event_id=uuid7(),
            seq=3,
            reason=ReasonCode.OVERRIDE,
            severity=Severity.HIGH,
            **common,
            payload=CabOverridePayload(code_id="ovr-9", expires_at=NOW + timedelta(hours=1)),
        ),
        StationFillEvent(
            event_id=uuid7(),
            seq=4,
            reason=ReasonCode.FILL_OK,
            **common,
            payload=StationFillPayload(
                scale_id="S1",
                cylinder_code="370100-000123",
                scanned_code="370100-000123",
                camera_code="370100-000123",
                tare_kg=15.2,
                net_kg=14.6,
                rated_fill_kg=14.5,
                started_at=NOW - timedelta(minutes=2),
                ended_at=NOW,
            ),
        ),
        StationViolationEvent(
            event_id=uuid7(),
            seq=5,
            reason=ReasonCode.OVERFILL,
            severity=Severity.MEDIUM,
            **common,
            evidence=(
                EvidenceRef(
                    sha256=SHA,
                    media_type="image/jpeg",
                    role="zone",
                    box=(400, 20, 630, 350),
                    camera_id="cam1",
                    captured_at=NOW - timedelta(seconds=0.1),
                    zones=(
                        EvidenceZone(
                            zone_id="Z-S1",
                            scale_id="S1",
                            polygon=((400, 20), (630, 20), (630, 350), (400, 350)),
                            operator_polygon=((10, 20), (390, 20), (390, 350)),
                        ),
                    ),
                    detections=(EvidenceDetection(label="cylinder", box=(420, 40, 600, 340)),),
                ),
            ),
            payload=StationViolationPayload(
                scale_id="S1",
                cylinder_code="370100-000123",
                observed=15.3,
                limit=14.8,
                detail="净重超过额定充装量",
            ),
        ),
        DeviceFaultEvent(
            event_id=uuid7(),
            seq=6,
            reason=ReasonCode.CAMERA_LOST,
            severity=Severity.MEDIUM,
            **common,
            payload=DeviceFaultPayload(component="camera", message="no frame for 5 s"),
        ),
    ]


def top_level(device_id: str = "FL-0001") -> list[Message]:
    """One instance of every top-level message."""
    operator = GalleryOperator(
        operator_id="op-1",
        display_name="张三",
        id_number_masked="3701**********1234",
        certificates=(
            CertificateInfo(
                certificate_no="TS-Q2-0001",
                category="Q2",
                scope="桥式起重机",
                issue_date=date(2024, 1, 1),
                expiry_date=date(2028, 1, 1),
                status=CertificateStatus.VALID,
            ),
        ),
    )
    template = GalleryTemplate(
        template_id="t-1",
        operator_id="op-1",
        embedding=(0.5, 0.5, 0.5, 0.5),
        quality=0.9,
        source_sha256=SHA,
    )
    return [
        DeviceIdentity(
            device_id=device_id, kind=DeviceKind.FORKLIFT, site_id="site-1", agent_version="0.1"
        ),
        Heartbeat(device_id=device_id, sent_at=NOW, agent_version="0.1", state="locked"),
        EventBatch(device_id=device_id, sent_at=NOW, events=tuple(events(device_id))),  # type: ignore[arg-type]
        EventBatchAck(accepted=(uuid7(),), gaps=(SequenceGap(first_missing=7, last_missing=9),)),
        GallerySnapshot(
            device_id=device_id,
            version=3,
            contract=CONTRACT,
            generated_at=NOW,
            operators=(operator,),
            templates=(template,),
        ),
        GalleryDelta(
            device_id=device_id,
            from_version=3,
            to_version=4,
            contract=CONTRACT,
            generated_at=NOW,
            upsert_templates=(template,),
            removed_operator_ids=("op-2",),
        ),
        GalleryUpdateRequired(
            device_id=device_id, server_contract=CONTRACT, device_contract_id="0123456789"
        ),
        DeviceConfig(
            device_id=device_id,
            kind=DeviceKind.CRANE,
            site_id="site-1",
            config_version=2,
            issued_at=NOW,
            accepted_categories=(CategoryRule(category="Q2", scope="桥式起重机"),),
        ),
        SignedEnvelope(
            payload_type="gallery.snapshot", payload="{}", key_id="server-1", signature="AAAA"
        ),
        StationRegistry(
            device_id=device_id,
            station_id="ST-JN-001",
            generated_at=NOW,
            cylinder_types=(StationCylinderType(code="YSP35.5", rated_fill_kg=14.5),),
            cylinders=(
                StationCylinder(
                    code="SD-LPG-000101",
                    type_code="YSP35.5",
                    owner_station_id="ST-JN-001",
                    status="in_service",
                    manufactured_on=date(2022, 3, 1),
                    design_life_years=8,
                    next_inspection_due=date(2027, 3, 1),
                ),
            ),
            fillers=(
                StationFiller(
                    operator_id="op-1",
                    certificate_no="TP37000001",
                    category="P",
                    valid_until=date(2028, 12, 31),
                    status=CertificateStatus.VALID,
                ),
            ),
        ),
    ]
