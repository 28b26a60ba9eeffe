"""The server stores the edge's OUTBOX_QUARANTINED fault (issue 21 defect 15) like any event."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from contract.codes import ReasonCode
from contract.messages import EventBatchAck
from edge_agent.outbox import Outbox
from server.tables import Event
from tests.server.conftest import World
from tests.server.helpers import batch_of


def test_quarantine_notice_is_ingested(world: World, tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_bytes(os.urandom(8192))
    outbox = Outbox(path)
    try:
        (notice,) = outbox.report_notices("crane-01")
    finally:
        outbox.close()
    response = world.crane.post_batch(batch_of("crane-01", [notice]))
    assert response.status_code == 200, response.text
    assert EventBatchAck.model_validate_json(response.text).accepted == (notice.event_id,)
    with world.app.state.sessions() as session:
        row = session.scalars(select(Event).where(Event.event_id == str(notice.event_id))).one()
        assert row.kind == "device.fault" and row.reason == ReasonCode.OUTBOX_QUARANTINED.value
        assert row.severity == "high" and not row.flagged
        assert row.body["payload"]["component"] == "outbox"
        assert str(outbox.quarantined) in row.body["payload"]["message"]
