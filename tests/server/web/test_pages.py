"""The pages over real HTTP without a browser: roles, forms, filters, language, privacy."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from server.web.charts import ImageSizeError, image_size, stacked_bars
from server.web.i18n import CATALOGS
from tests.models.faces import astronaut
from tests.server.conftest import PASSWORD, World
from tests.server.web.conftest import Seeded, jpeg, png, post_overfilled_fill, upload

REVIEW_PAGES = ("/review", "/dashboard")


def _login(world: World, username: str) -> httpx.Client:
    client = httpx.Client(base_url=world.base, timeout=60)
    response = client.post("/login", data={"username": username, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return client


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "page has no CSRF field"
    return found.group(1)


def test_catalogs_have_the_same_keys() -> None:
    zh, en = CATALOGS["zh-CN"], CATALOGS["en"]
    assert set(zh) == set(en)
    for key in zh:
        assert re.findall(r"{(\w+)}", zh[key]) == re.findall(r"{(\w+)}", en[key]) or sorted(
            re.findall(r"{(\w+)}", zh[key])
        ) == sorted(re.findall(r"{(\w+)}", en[key])), key


def test_every_enum_value_has_text() -> None:
    from contract.codes import CertificateStatus, EventKind, ReasonCode, Severity
    from server.domain import Outcome, ReviewStatus, Role

    for prefix, enum in (
        ("reason", ReasonCode),
        ("kind", EventKind),
        ("severity", Severity),
        ("status", ReviewStatus),
        ("outcome", Outcome),
        ("cert", CertificateStatus),
        ("role", Role),
    ):
        for member in enum:
            assert f"{prefix}.{member.value}" in CATALOGS["zh-CN"], (prefix, member)


def test_image_size_reads_png_and_jpeg_headers() -> None:
    image = astronaut()[:300, :200]
    assert image_size(png(image)) == (200, 300)
    assert image_size(jpeg(image)) == (200, 300)
    with pytest.raises(ImageSizeError, match="not a PNG or JPEG"):
        image_size(b"GIF89a....")
    with pytest.raises(ImageSizeError, match="without a frame header"):
        image_size(b"\xff\xd8\xff\xd9")


def test_stacked_bars_draw_one_rect_per_nonzero_value() -> None:
    from datetime import date

    days = [date(2026, 11, 1), date(2026, 11, 2)]
    svg = stacked_bars(days, {"厂区 A": [2, 0], "<b>": [1, 3]}, "违规")
    assert svg.startswith("<svg") and svg.count("<title>") == 1 + 3
    assert "&lt;b&gt;" in svg and "<b>" not in svg  # names are escaped
    assert "厂区 A (2)" in svg and "&lt;b&gt; (4)" in svg


def test_anonymous_visitors_are_sent_to_login(seeded: Seeded) -> None:
    world = seeded.world
    for path in ("/", "/review", f"/review/{seeded.no_match}", "/dashboard", "/operators"):
        response = world.http.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next="), path
    form = world.http.get("/login")
    assert form.status_code == 200 and "登录" in form.text and 'lang="zh-CN"' in form.text
    wrong = world.http.post("/login", data={"username": "supervisor", "password": "nope"})
    assert wrong.status_code == 401 and "用户名或密码错误" in wrong.text


def test_login_goes_to_the_role_home_and_never_off_site(seeded: Seeded) -> None:
    world = seeded.world
    for user, home in (
        ("supervisor", "/review"),
        ("cert_office", "/operators"),
        ("admin", "/review"),
    ):
        response = world.http.post("/login", data={"username": user, "password": PASSWORD})
        assert response.headers["location"] == home, user
        assert "jifang_session" in response.headers["set-cookie"]
        assert "httponly" in response.headers["set-cookie"].lower()
    off_site = world.http.post(
        "/login",
        data={"username": "supervisor", "password": PASSWORD, "next": "//evil.example/"},
    )
    assert off_site.headers["location"] == "/review"


def test_cert_office_and_devices_cannot_reach_review_pages(seeded: Seeded) -> None:
    world = seeded.world
    office = _login(world, "cert_office")
    pages = [*REVIEW_PAGES, f"/review/{seeded.no_match}", f"/review/evidence/{'0' * 64}"]
    for path in pages:
        response = office.get(path)
        assert response.status_code == 403, path
        assert "无权访问" in response.text
        signed = world.crane.request("GET", path)
        assert signed.status_code == 403, path
    posted = office.post(
        f"/review/{seeded.no_match}/decision",
        data={"outcome": "false_alarm", "csrf": "x"},
    )
    assert posted.status_code == 403
    nav = office.get("/operators").text
    assert 'href="/review"' not in nav and 'href="/dashboard"' not in nav
    assert 'href="/operators"' in nav
    history = world.call("supervisor", "GET", f"/api/v1/review/events/{seeded.no_match}/decisions")
    assert history.json() == []


def test_forms_need_the_session_csrf_token(seeded: Seeded) -> None:
    world = seeded.world
    client = _login(world, "supervisor")
    path = f"/review/{seeded.no_match}/decision"
    missing = client.post(path, data={"outcome": "false_alarm"})
    assert missing.status_code == 400 and "表单" in missing.text
    page = client.get(f"/review/{seeded.no_match}")
    token = _csrf(page.text)
    bad = client.post(path, data={"outcome": "maybe", "csrf": token})
    assert bad.status_code == 400
    assert (
        world.call("supervisor", "GET", f"/api/v1/review/events/{seeded.no_match}/decisions").json()
        == []
    )
    ok = client.post(path, data={"outcome": "false_alarm", "comment": "光线", "csrf": token})
    assert ok.status_code == 303 and ok.headers["location"].endswith("saved=1")
    decisions = world.call(
        "supervisor", "GET", f"/api/v1/review/events/{seeded.no_match}/decisions"
    )
    assert [(d["outcome"], d["comment"]) for d in decisions.json()] == [("false_alarm", "光线")]


def test_queue_filters_counts_and_bad_values(seeded: Seeded) -> None:
    client = _login(seeded.world, "supervisor")
    everything = client.get("/review").text
    assert "共 4 条：待处理 4，处理中 0，已决定 0" in everything
    assert seeded.authorized not in everything  # informational events are not queued
    crane = client.get("/review", params={"device": "crane-01"}).text
    assert "共 3 条" in crane and seeded.overfill not in crane
    today = datetime.now(UTC).astimezone().date()
    recent = client.get("/review", params={"since": (today - timedelta(days=1)).isoformat()}).text
    assert seeded.old not in recent and seeded.no_match in recent
    critical = client.get("/review", params={"severity": "critical"}).text
    assert "共 1 条" in critical and seeded.overfill in critical
    bad = client.get("/review", params={"severity": "huge", "since": "yesterday"})
    assert bad.status_code == 200
    assert "筛选条件无效，已忽略：严重程度" in bad.text and "开始日期" in bad.text
    assert "共 4 条" in bad.text


def test_event_page_shows_match_cylinder_timeline_and_audit(seeded: Seeded) -> None:
    client = _login(seeded.world, "supervisor")
    cab = client.get(f"/review/{seeded.no_match}").text
    assert 'id="score">0.412<' in cab and 'id="threshold">0.950<' in cab and "低于阈值" in cab
    assert f'href="/operators/{seeded.operator_id}">张伟<' in cab
    assert seeded.certificate_no in cab
    x0, y0, x1, y1 = seeded.face_box
    assert f'x="{x0}" y="{y0}"' in cab and 'viewBox="0 0 512 512"' in cab
    assert "本事件" in cab and f"/review/{seeded.authorized}" not in cab  # listed, unlinked
    timeline = cab[cab.index('id="timeline"') : cab.index("</ol>", cab.index('id="timeline"'))]
    assert timeline.count("<li") == 2  # itself and the start 4 minutes later; not 20 min later
    assert "events.ingest" in cab and "evidence.store" in cab
    liveness_failed = client.get(f"/review/{seeded.old}").text
    assert "未匹配到人员" in liveness_failed and "未通过" in liveness_failed
    station = client.get(f"/review/{seeded.overfill}").text
    assert "气瓶记录" in station and "YSP-15" in station and "14.5" in station
    assert "box box-zone" in station
    english = client.get(f"/lang/en?next=/review/{seeded.overfill}", follow_redirects=True)
    assert 'lang="en"' in english.text and "Cylinder record" in english.text
    missing = client.get(f"/review/{seeded.authorized}")
    assert missing.status_code == 404


def test_a_violating_fill_is_shown_on_its_violation_item(seeded: Seeded) -> None:
    fill_id = post_overfilled_fill(seeded)
    client = _login(seeded.world, "supervisor")
    queue = client.get("/review").text
    assert "共 4 条" in queue  # the fill is the overfill's incident, not a fifth item
    assert f'data-event="{fill_id}"' not in queue
    row = queue[queue.index(f'data-event="{seeded.overfill}"') :]
    row = row[: row.index("</tr>")]
    assert "CYL-0001 · 充装 16.2 kg" in row
    page = client.get(f"/review/{seeded.overfill}").text
    fill = page[page.index('id="fill"') : page.index("</dl>", page.index('id="fill"'))]
    assert "超装" in fill and 'id="fill-net">16.2<' in fill and "15.3" in fill
    assert fill_id in fill
    assert "复核结论同时适用于这条充装记录" in page
    assert page.count('class="evidence-img"') == 2  # the violation's frame and the fill's
    timeline = page[page.index('id="timeline"') : page.index("</ol>", page.index('id="timeline"'))]
    assert "并入本条复核" in timeline and f"/review/{fill_id}" not in timeline
    # The fill's own address opens the incident's item, keeping the queue filter.
    moved = client.get(f"/review/{fill_id}?severity=critical", follow_redirects=False)
    assert moved.status_code == 303
    assert moved.headers["location"] == f"/review/{seeded.overfill}?severity=critical"
    board = client.get("/dashboard").text
    assert "待复核 4 条" in board and "充装违规 (1)" in board and "充装 (1)" not in board
    english = client.get(f"/lang/en?next=/review/{seeded.overfill}", follow_redirects=True)
    assert "The fill" in english.text and "the decision covers the fill too" in english.text


def test_decide_and_next_walks_the_filtered_queue(seeded: Seeded) -> None:
    client = _login(seeded.world, "supervisor")
    first = client.get(f"/review/{seeded.expired}?device=crane-01")
    token = _csrf(first.text)
    assert f'href="/review/{seeded.no_match}?device=crane-01" id="next"' in first.text
    moved = client.post(
        f"/review/{seeded.expired}/decision",
        data={
            "outcome": "confirmed_violation",
            "csrf": token,
            "q": "device=crane-01",
            "go": "next",
        },
    )
    assert moved.headers["location"] == f"/review/{seeded.no_match}?device=crane-01"
    queue = client.get("/review", params={"device": "crane-01", "mine": "1"}).text
    assert seeded.expired not in queue and seeded.no_match in queue  # per-user reviewed state
    other = _login(seeded.world, "admin").get("/review", params={"mine": "1"}).text
    assert seeded.expired in other  # another reviewer has not reviewed it


def test_reviewed_mark_and_claim_from_the_page(seeded: Seeded) -> None:
    client = _login(seeded.world, "supervisor")
    token = _csrf(client.get(f"/review/{seeded.overfill}").text)
    client.post(f"/review/{seeded.overfill}/reviewed", data={"reviewed": "1", "csrf": token})
    page = client.get(f"/review/{seeded.overfill}").text
    assert "取消已复核" in page
    client.post(f"/review/{seeded.overfill}/claim", data={"csrf": token})
    admin = _login(seeded.world, "admin")
    admin_token = _csrf(admin.get(f"/review/{seeded.overfill}").text)
    refused = admin.post(f"/review/{seeded.overfill}/claim", data={"csrf": admin_token})
    assert refused.headers["location"].endswith("conflict=1")
    assert "已被其他复核员认领" in admin.get(refused.headers["location"]).text


def test_operator_page_hides_photos_by_default(seeded: Seeded) -> None:
    world = seeded.world
    office = _login(world, "cert_office")
    page = office.get(f"/operators/{seeded.operator_id}").text
    assert "张伟" in page and seeded.certificate_no in page and "有效" in page
    assert 'id="thumbnails-off"' in page and "/photo" not in page
    assert 'id="operator-events"' not in page  # events are for reviewers
    supervisor = _login(world, "supervisor").get(f"/operators/{seeded.operator_id}").text
    assert seeded.no_match in supervisor and seeded.expired in supervisor
    photo = office.get(f"/operators/{seeded.operator_id}/templates/{_template_id(world)}/photo")
    assert photo.status_code == 404


def _template_id(world: World) -> str:
    from sqlalchemy import select

    from server.tables import Template

    with world.app.state.sessions() as session:
        return str(session.scalars(select(Template.id)).one())


@pytest.mark.settings(web_show_template_thumbnails=True)
def test_operator_photos_where_the_privacy_setting_allows(seeded: Seeded) -> None:
    world = seeded.world
    office = _login(world, "cert_office")
    url = f"/operators/{seeded.operator_id}/templates/{_template_id(world)}/photo"
    page = office.get(f"/operators/{seeded.operator_id}").text
    assert 'id="thumbnails-off"' not in page and "服务器未保存登记照片" in page
    assert office.get(url).status_code == 404
    # The content store is keyed by hash: once these bytes are stored, the photo shows.
    upload(seeded.station, seeded.photo, "image/jpeg")
    page = office.get(f"/operators/{seeded.operator_id}").text
    assert f'src="{url}"' in page
    photo = office.get(url)
    assert photo.status_code == 200 and photo.content == seeded.photo


def test_dashboard_charts_backlog_and_offline_devices(seeded: Seeded) -> None:
    client = _login(seeded.world, "supervisor")
    page = client.get("/dashboard").text
    assert page.count("<svg") >= 2 and "厂区 site-1 (3)" in page and "充装违规 (1)" in page
    assert "待复核 4 条" in page
    offline = page[page.index('id="offline"') :]
    # The crane delivered events and the station sent a heartbeat; the forklift never called.
    assert "forklift-01" in offline and "crane-01" not in offline and "station-01" not in offline


def test_safe_next_keeps_redirects_on_this_site() -> None:
    from server.web.deps import safe_next

    assert safe_next("/review?device=crane-01") == "/review?device=crane-01"
    for bad in ("//evil.example", "/\t/evil.example", "/\\evil.example", "https://x", "", None):
        assert safe_next(bad, "/home") == "/home", bad


def test_other_event_kinds_render(seeded: Seeded) -> None:
    from contract.codes import ReasonCode
    from contract.ids import uuid7
    from contract.messages import (
        CabOverrideEvent,
        CabOverridePayload,
        CabReverifyEvent,
        CabReverifyPayload,
        MatchInfo,
        StationFillEvent,
        StationFillPayload,
    )
    from tests.server.helpers import batch_of

    now = datetime.now(UTC)
    reverify = CabReverifyEvent(
        event_id=uuid7(),
        device_id="crane-01",
        seq=10,
        occurred_at=now,
        reason=ReasonCode.DRIVER_CHANGED,
        payload=CabReverifyPayload(
            expected_operator_id=seeded.operator_id,
            observed=MatchInfo(operator_id="op-stranger", score=0.97, threshold=0.95, margin=0.2),
        ),
    )
    override = CabOverrideEvent(
        event_id=uuid7(),
        device_id="crane-01",
        seq=11,
        occurred_at=now,
        reason=ReasonCode.OVERRIDE,
        payload=CabOverridePayload(code_id="OVR-7", expires_at=now, cause="抢修"),
    )
    fill = StationFillEvent(
        event_id=uuid7(),
        device_id="station-01",
        seq=2,
        occurred_at=now,
        reason=ReasonCode.UNREGISTERED_CYLINDER,
        payload=StationFillPayload(
            scale_id="scale-1", scanned_code="CYL-9999", net_kg=14.1, started_at=now
        ),
    )
    world = seeded.world
    assert world.crane.post_batch(batch_of("crane-01", [reverify, override])).status_code == 200
    assert seeded.station.post_batch(batch_of("station-01", [fill])).status_code == 200
    client = _login(world, "supervisor")
    page = client.get(f"/review/{reverify.event_id}")
    assert page.status_code == 200
    assert "人员 op-stranger 不在登记库中" in page.text and "应为人员" in page.text
    assert "张伟" in page.text and "无活体结果" in page.text
    page = client.get(f"/review/{override.event_id}")
    assert page.status_code == 200 and "OVR-7" in page.text and "抢修" in page.text
    page = client.get(f"/review/{fill.event_id}")
    assert page.status_code == 200 and "气瓶 CYL-9999 未登记" in page.text and "14.1" in page.text


def test_pages_load_nothing_from_other_hosts() -> None:
    from server.web.render import STATIC, TEMPLATES

    for path in [*TEMPLATES.iterdir(), *STATIC.iterdir()]:
        text = path.read_text(encoding="utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path.name


def test_a_normalised_score_is_shown_on_its_own_scale(seeded: Seeded) -> None:
    from contract.codes import ReasonCode, ScoreKind
    from contract.messages import MatchInfo
    from tests.server.helpers import batch_of
    from tests.server.web.conftest import cab_event

    match = MatchInfo(
        operator_id=seeded.operator_id,
        score=2.25,
        threshold=4.5,
        margin=2.0,
        score_kind=ScoreKind.AS_NORM,
    )
    event = cab_event("crane-01", 9, datetime.now(UTC), ReasonCode.CLAIM_MISMATCH, match)
    posted = seeded.world.crane.post_batch(batch_of("crane-01", [event]))
    assert posted.status_code == 200, posted.text
    page = _login(seeded.world, "supervisor").get(f"/review/{event.event_id}").text
    assert 'id="score">2.250<' in page and 'id="threshold">4.500<' in page
    assert "归一化分数" in page and "低于阈值" in page
    # On 0..2x the threshold: the bar is a quarter full, the mark at the middle.
    assert 'width="60.0"' in page and 'x1="120.0"' in page
    cosine = _login(seeded.world, "supervisor").get(f"/review/{seeded.no_match}").text
    assert "归一化分数" not in cosine
