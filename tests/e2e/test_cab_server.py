"""The cab gate against the real server: signed gallery sync, decisions, events stored once."""

from __future__ import annotations

from pathlib import Path

from contract.codes import EventKind, ReasonCode
from edge_agent.cab.agent import build_gate, sync_once
from edge_agent.cab.simclip import SimulatedOperator
from edge_agent.cab.sources import ReplayFeed
from edge_agent.config import parse_config
from edge_agent.uplink import Uplink
from jifang.demo_kit import FORKLIFT, cab_config, deliver_all, server_events
from models.liveness import observe
from models.liveness.synthetic import rigid_sequence
from models.manifest import load_calibration
from tests.e2e.conftest import CabWorld


def _operator(engine, world: CabWorld, display, person: str) -> SimulatedOperator:  # noqa: ANN001
    seen = observe(engine, world.scenes[person], 0.0)
    assert seen is not None and seen.dense is not None
    return SimulatedOperator(
        world.scenes[person], seen.face.detection.box, seen.dense.points, display
    )


def test_cab_syncs_decides_and_the_server_stores_each_event_once(
    cab_world: CabWorld, engine, tmp_path: Path
) -> None:
    world = cab_world
    config = parse_config(
        cab_config(world.server.url, world.forklift, world.pack, tmp_path / "cab")
    )
    parts = build_gate(config, engine=engine, calibrations=load_calibration(world.pack))
    uplink = Uplink(world.server.url, FORKLIFT, world.forklift.key.encode("ascii"), 30.0)
    try:
        sync_once(parts.gate, uplink)  # signature checked against the key from registration
        gallery = parts.gate.cache.gallery
        assert gallery is not None
        names = {o.display_name for o in gallery.operators.values()}
        assert names == {"张伟", "王芳"}  # the N1 holders of the forklift's site
        gate = parts.gate
        display = gate.verifier.liveness.display
        authorized = gate.request_start(_operator(engine, world, display, "astronaut"))
        assert authorized.reason == ReasonCode.AUTHORIZED, authorized.detail
        operator_id = authorized.operator_id
        gate.engine_started()
        gate.engine_stopped()
        stranger = gate.request_start(_operator(engine, world, display, "cameraman"))
        assert stranger.reason == ReasonCode.NO_MATCH, stranger.detail
        printed = [im for im, _ in rigid_sequence(world.scenes["astronaut"], 45, seed=2)]
        photo = gate.request_start(ReplayFeed(printed, 15.0, loop=False))
        assert photo.reason == ReasonCode.LIVENESS_FAILED, photo.detail
        sent = {p.event_id for p in parts.outbox.due(100)}
        assert deliver_all(parts, uplink) == len(sent)
        assert parts.outbox.depth() == 0
        # Delivering again sends nothing new.
        assert deliver_all(parts, uplink) == 0
    finally:
        uplink.close()
        parts.close()
    stored = server_events(world.server.app, FORKLIFT)
    assert {e["event_id"] for e in stored} == sent and len(stored) == len(sent)
    decisions = [e for e in stored if e["kind"] == EventKind.CAB_DECISION.value]
    assert [e["reason"] for e in decisions] == ["AUTHORIZED", "NO_MATCH", "LIVENESS_FAILED"]
    first = decisions[0]["body"]["payload"]
    assert first["match"]["operator_id"] == operator_id
    assert first["match"]["certificate_no"] == "T370102000001"
    assert first["liveness_score"] is not None
    refused = decisions[2]
    assert refused["flagged"] and refused["body"]["payload"]["detail"].startswith("liveness ")
    # The denied attempts are in the supervisors' review queue, with their evidence.
    queue = world.admin.get("/api/v1/review/events", device=FORKLIFT)
    assert {e["event_id"] for e in queue} >= {decisions[1]["event_id"], refused["event_id"]}
    assert all(d["body"]["evidence"] for d in decisions)
