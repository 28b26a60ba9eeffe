"""The heartbeat worker both agents run: one Heartbeat every `server.heartbeat_interval_s`.

Each agent supplies what its heartbeat says (state, outbox depth, gallery version); the
cadence and the error handling are the same for the cab and the filling station.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from contract.messages import Heartbeat
from edge_agent.config import AgentConfigBase
from edge_agent.uplink import UplinkError

logger = logging.getLogger(__name__)


class HeartbeatUplink(Protocol):
    """The one uplink call the heartbeat worker needs."""

    def heartbeat(self, beat: Heartbeat) -> None:
        """Send the heartbeat or raise UplinkError."""
        ...


def run_heartbeat(
    config: AgentConfigBase,
    stop_event: threading.Event,
    uplink: HeartbeatUplink,
    beat: Callable[[], Heartbeat],
) -> None:
    """Named worker 'heartbeat': send `beat()` now and then every heartbeat_interval_s."""
    while not stop_event.is_set():
        try:
            uplink.heartbeat(beat())
        except UplinkError as err:
            logger.warning("heartbeat not delivered: %s", err)
        except Exception:  # the worker must outlive a bad beat; the next one may go through
            logger.exception("heartbeat failed")
        stop_event.wait(config.server.heartbeat_interval_s)
