"""`jifang demo` options; the full run (server, cab, four decisions) is tests/e2e/test_demo.py."""

from __future__ import annotations

from typer.testing import CliRunner

from jifang.cli import app


def test_demo_offers_a_non_interactive_run() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0, result.output
    assert "--no-wait" in result.output and "--model-dir" in result.output


def test_the_overnight_step_crosses_midnight_within_a_day_at_any_hour() -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from jifang.demo import next_local_morning

    tz = ZoneInfo("Asia/Shanghai")
    # Shortly after midnight "00:30 tomorrow" is more than a day away: the synced gallery
    # would go stale before the certificate expires (seen at 00:19 local time).
    for hour, minute in [(0, 0), (0, 1), (0, 19), (0, 59), (1, 0), (12, 0), (23, 59)]:
        now = datetime(2026, 12, 7, hour, minute, 30, tzinfo=tz)
        step = next_local_morning("Asia/Shanghai", now)
        after = (now + step).astimezone(tz)
        assert after.date() == now.date() + timedelta(days=1), (now, after)
        assert timedelta(0) < step < timedelta(days=1), (now, step)
