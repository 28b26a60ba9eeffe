"""The wire contract: round trips, refusal of malformed input, and the exported schema."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from contract.ids import uuid7, uuid7_time_ms
from contract.messages import (
    MAX_COUNTER,
    SCHEMA_VERSION,
    TOP_LEVEL_MESSAGES,
    Event,
    EventBatch,
    GallerySnapshot,
    Heartbeat,
    Message,
)
from contract.schema import export, render, schemas
from tests.contract import samples

REPO = Path(__file__).resolve().parents[2]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def _paths(err: ValidationError) -> list[str]:
    return [".".join(str(p) for p in e["loc"]) for e in err.errors()]


@pytest.mark.parametrize("message", samples.top_level(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_json(message: Message) -> None:
    text = message.model_dump_json()
    again = type(message).model_validate_json(text)
    assert again == message
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION


def test_every_top_level_message_has_a_sample() -> None:
    assert {type(m) for m in samples.top_level()} == set(TOP_LEVEL_MESSAGES)


@pytest.mark.parametrize("event", samples.events(), ids=lambda e: e.kind)
def test_every_event_kind_round_trips_through_the_union(event: Message) -> None:
    parsed = EVENT_ADAPTER.validate_json(event.model_dump_json())
    assert parsed == event
    assert type(parsed) is type(event)


def _batch_dict() -> dict:
    batch = samples.top_level()[2]
    assert isinstance(batch, EventBatch)
    return json.loads(batch.model_dump_json())


def test_bad_field_inside_a_batch_is_refused_with_its_path() -> None:
    data = _batch_dict()
    data["events"][3]["payload"]["net_kg"] = -1
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert "events.3.station.fill.payload.net_kg" in _paths(info.value)


def test_naive_timestamp_is_refused() -> None:
    data = _batch_dict()
    data["events"][0]["occurred_at"] = "2026-11-29T08:30:00"
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert "events.0.cab.decision.occurred_at" in _paths(info.value)


def test_timestamps_are_normalised_to_utc() -> None:
    beat = Heartbeat.model_validate(
        {
            "device_id": "d1",
            "sent_at": "2026-11-29T16:30:00+08:00",
            "agent_version": "1",
            "state": "locked",
        }
    )
    assert beat.sent_at.utcoffset() is not None
    assert beat.sent_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert beat.sent_at.hour == 8


def test_unknown_field_and_unknown_kind_are_refused() -> None:
    data = _batch_dict()
    data["events"][1]["surprise"] = 1
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert "events.1.cab.reverify.surprise" in _paths(info.value)

    data = _batch_dict()
    data["events"][0]["kind"] = "cab.teleport"
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert "events.0" in _paths(info.value)


def test_event_id_must_be_uuid7_and_evidence_must_be_sha256() -> None:
    data = _batch_dict()
    data["events"][0]["event_id"] = str(uuid.uuid4())
    data["events"][0]["evidence"][0]["sha256"] = "not-a-hash"
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    paths = _paths(info.value)
    assert "events.0.cab.decision.event_id" in paths
    assert "events.0.cab.decision.evidence.0.sha256" in paths


def test_decision_and_reason_must_agree() -> None:
    data = _batch_dict()
    data["events"][0]["reason"] = "NO_MATCH"  # decision still says "authorized"
    with pytest.raises(ValidationError, match="AUTHORIZED exactly when"):
        EventBatch.model_validate(data)


def test_batch_refuses_events_of_another_device() -> None:
    data = _batch_dict()
    data["events"][2]["device_id"] = "FL-9999"
    with pytest.raises(ValidationError, match="events.2.device_id"):
        EventBatch.model_validate(data)


def test_unknown_major_schema_version_is_refused() -> None:
    data = _batch_dict()
    data["schema_version"] = "2.0"
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert "schema_version" in _paths(info.value)


def test_a_1_1_event_with_a_plain_evidence_ref_still_parses() -> None:
    """Schema 1.2 only added optional evidence fields: what a 1.1 agent sends is valid."""
    event = json.loads(samples.events()[0].model_dump_json())
    event["schema_version"] = "1.1"
    event["evidence"] = [{"sha256": samples.SHA, "media_type": "image/png", "box": [1, 2, 3, 4]}]
    parsed = EVENT_ADAPTER.validate_python(event)
    ref = parsed.evidence[0]
    assert (ref.role, ref.camera_id, ref.captured_at, ref.zones, ref.detections) == (
        "face",
        None,
        None,
        (),
        (),
    )


def test_evidence_zone_needs_a_polygon_of_three_points() -> None:
    data = _batch_dict()
    violation = next(e for e in data["events"] if e["kind"] == "station.violation")
    violation["evidence"][0]["zones"][0]["polygon"] = [[0, 0], [1, 1]]
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert any(p.endswith("evidence.0.zones.0.polygon") for p in _paths(info.value))


def test_gallery_embedding_length_must_match_contract() -> None:
    snapshot = samples.top_level()[4]
    data = json.loads(snapshot.model_dump_json())
    data["templates"][0]["embedding"] = [0.1, 0.2]
    with pytest.raises(ValidationError, match=r"templates\.0\.embedding has 2 values"):
        GallerySnapshot.model_validate(data)


def test_uuid7_sorts_by_creation_and_carries_time() -> None:
    ids = [uuid7() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 for i in ids)
    assert uuid7_time_ms(uuid7(now_ms=1_700_000_000_000)) >= 1_700_000_000_000


def test_schema_files_match_the_models(tmp_path: Path) -> None:
    committed = REPO / "docs" / "contract"
    export(tmp_path)
    fresh = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("*.schema.json")}
    stored = {p.name: p.read_text(encoding="utf-8") for p in committed.glob("*.schema.json")}
    assert fresh.keys() == stored.keys(), "run `python -m contract.schema` to regenerate"
    for name, text in fresh.items():
        assert text == stored[name], f"{name} is out of date: run `python -m contract.schema`"
    assert set(schemas()) == set(fresh)
    assert all(render(s).endswith("\n") for s in schemas().values())


@pytest.mark.parametrize("seq", [2**53, 2**62, 2**63 + 5])
def test_sequence_numbers_have_an_upper_bound(seq: int) -> None:
    # Unbounded, 2**63+5 overflowed the BIGINT column (500) and 2**62 blinded gap detection.
    data = _batch_dict()
    data["events"][0]["seq"] = seq
    with pytest.raises(ValidationError) as info:
        EventBatch.model_validate(data)
    assert any(e["type"] == "less_than_equal" for e in info.value.errors())
    data["events"][0]["seq"] = MAX_COUNTER
    assert EventBatch.model_validate(data).events[0].seq == MAX_COUNTER


def test_counters_on_the_wire_share_the_bound() -> None:
    base = {"device_id": "FL-0001", "sent_at": "2026-11-29T08:30:00Z", "agent_version": "1"}
    for field in ("gallery_version", "outbox_depth"):
        with pytest.raises(ValidationError, match=field):
            Heartbeat.model_validate({**base, "state": "locked", field: MAX_COUNTER + 1})
