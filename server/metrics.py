"""Prometheus metrics: events ingested and flagged, review backlog, sync lag per device."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server import gallery, incidents
from server.domain import ReviewStatus
from server.tables import Device, Event

logger = logging.getLogger(__name__)


class _DatabaseCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def collect(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "jifang_review_backlog",
            "review items (incidents) without a decision",
            labels=["severity"],
        )
        lag = GaugeMetricFamily(
            "jifang_device_gallery_lag_versions",
            "gallery versions a device is behind",
            labels=["device"],
        )
        age = GaugeMetricFamily(
            "jifang_device_sync_age_seconds",
            "seconds since a device last fetched its gallery",
            labels=["device"],
        )
        with self._sessions() as session:
            rows = session.execute(
                select(Event.severity, func.count())
                .where(
                    incidents.is_item(),
                    Event.review_status.in_([ReviewStatus.OPEN, ReviewStatus.CLAIMED]),
                )
                .group_by(Event.severity)
            ).all()
            for severity, count in rows:
                backlog.add_metric([severity], float(count))
            version = gallery.current_version(session)
            now = datetime.now(UTC)
            for device_id, gv, last in session.execute(
                select(Device.id, Device.gallery_version, Device.last_gallery_at)
            ):
                lag.add_metric([device_id], float(max(0, version - gv)))
                if last is not None:
                    if last.tzinfo is None:
                        last = last.replace(tzinfo=UTC)
                    age.add_metric([device_id], (now - last).total_seconds())
        yield backlog
        yield lag
        yield age


class Metrics:
    """The app's own registry (tests build many apps in one process)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.ingested = Counter(
            "jifang_events_ingested", "events stored", ["kind"], registry=self.registry
        )
        self.flagged = Counter(
            "jifang_events_flagged",
            "events flagged for review",
            ["severity"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "jifang_events_duplicate", "replayed events acknowledged", registry=self.registry
        )
        self.registry.register(_DatabaseCollector(sessions))
