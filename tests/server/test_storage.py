"""Wire messages survive storage in both server databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, MetaData, String, Table, insert, select

from contract.messages import EventBatch
from server.db import make_engine
from server.settings import ServerSettings
from tests.contract import samples


def test_event_json_round_trips_through_the_database(db_url: str) -> None:
    metadata = MetaData()
    table = Table(
        "wire_roundtrip", metadata, Column("id", String(36), primary_key=True), Column("body", JSON)
    )
    engine = make_engine(db_url)
    metadata.create_all(engine)
    batch = samples.top_level()[2]
    assert isinstance(batch, EventBatch)
    with engine.begin() as conn:
        for event in batch.events:
            conn.execute(
                insert(table).values(id=str(event.event_id), body=event.model_dump(mode="json"))
            )
    with engine.connect() as conn:
        rows = dict(conn.execute(select(table.c.id, table.c.body)).all())
    engine.dispose()
    restored = EventBatch.model_validate(
        {**batch.model_dump(mode="json"), "events": [rows[str(e.event_id)] for e in batch.events]}
    )
    assert restored == batch
    assert rows[str(batch.events[4].event_id)]["payload"]["detail"] == "净重超过额定充装量"


def test_sqlite_engine_uses_wal(tmp_path) -> None:
    settings = ServerSettings(data_dir=tmp_path / "data")
    assert settings.database_url.endswith("/data/jifang.db")
    from server.db import engine_from_settings

    engine = engine_from_settings(settings)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()


def test_settings_come_from_the_environment(monkeypatch, tmp_path) -> None:
    from server.settings import get_settings

    monkeypatch.setenv("JIFANG_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("JIFANG_PORT", "9123")
    settings = get_settings()
    assert settings.port == 9123
    assert settings.database_url == f"sqlite:///{tmp_path}/jifang.db"
    monkeypatch.setenv("JIFANG_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert get_settings().database_url == "postgresql+psycopg://u@h/db"
