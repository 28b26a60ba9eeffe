"""The review pages in real headless Chromium (Debian package, driven by Playwright)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.server.conftest import PASSWORD
from tests.server.web.conftest import Seeded, post_overfilled_fill

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser


def _log_in(page: Page, base: str, username: str, start: str) -> None:
    page.goto(base + start)
    assert "/login" in page.url  # not logged in yet: the page sends us to the form
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_supervisor_filters_opens_decides_and_finds_the_decision(
    seeded: Seeded, chromium: Browser, output_dir: Path
) -> None:
    base = seeded.world.base
    context = chromium.new_context(viewport={"width": 1440, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        _log_in(page, base, "supervisor", "/review")
        assert page.url.endswith("/review")
        assert "共 4 条" in page.inner_text("#counts")
        assert page.locator("nav.main-nav a").all_inner_texts() == ["复核队列", "总览", "作业人员"]

        page.select_option("select[name=device]", "crane-01")
        page.select_option("select[name=kind]", "cab.decision")
        page.click("#filters button[type=submit]")
        page.wait_for_load_state()
        assert "device=crane-01" in page.url and "kind=cab.decision" in page.url
        assert "共 3 条" in page.inner_text("#counts")
        rows = page.locator("#queue tbody tr")
        assert rows.count() == 3
        assert [rows.nth(i).get_attribute("data-event") for i in range(3)] == [
            seeded.expired,
            seeded.no_match,
            seeded.old,
        ]  # newest first
        page.screenshot(path=str(output_dir / "review-queue.png"), full_page=True)

        # Keyboard: j moves to the second row, Enter opens it.
        page.keyboard.press("j")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/review/{seeded.no_match}?*")
        image = page.locator("img.evidence-img").first
        image.wait_for()
        page.wait_for_function("document.querySelector('img.evidence-img').complete")
        natural = page.evaluate(
            "() => { const i = document.querySelector('img.evidence-img');"
            " return [i.naturalWidth, i.naturalHeight]; }"
        )
        assert natural == [512, 512]
        box = page.locator("svg.overlay rect.box-face")
        assert box.count() == 1
        drawn = box.bounding_box()
        shown = image.bounding_box()
        assert drawn is not None and shown is not None
        x0, y0, x1, y1 = seeded.face_box
        scale = shown["width"] / 512
        assert abs(drawn["x"] - (shown["x"] + x0 * scale)) < 4
        assert abs(drawn["width"] - (x1 - x0) * scale) < 4
        assert page.inner_text("#score") == "0.412"
        assert page.inner_text("#threshold") == "0.950"
        assert "张伟" in page.inner_text("#match")
        page.screenshot(path=str(output_dir / "review-event.png"), full_page=True)

        # Keyboard: 2 picks "false alarm", c focuses the comment; Save keeps the page.
        page.keyboard.press("2")
        assert page.is_checked("input[name=outcome][value=false_alarm]")
        page.keyboard.press("c")
        page.keyboard.type("逆光，人脸不清晰")
        page.click("#save")
        page.wait_for_url("**saved=1")
        history = page.inner_text("#history")
        assert "误报" in history and "逆光，人脸不清晰" in history and "supervisor" in history
        assert "已决定" in page.inner_text("h1")
        page.screenshot(path=str(output_dir / "review-event-decided.png"), full_page=True)

        # Enter decides and opens the next event of the filtered queue.
        page.keyboard.press("1")
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/review/{seeded.old}?*")
        assert "device=crane-01" in page.url
        page.goto(base + f"/review/{seeded.no_match}")
        history = page.inner_text("#history")
        assert history.index("确认违规") < history.index("误报")  # newest first
        assert "已被后续结论取代" in history

        page.goto(base + "/review?device=crane-01&mine=1")
        remaining = page.locator("#queue tbody tr")
        assert [remaining.nth(i).get_attribute("data-event") for i in range(remaining.count())] == [
            seeded.expired,
            seeded.old,
        ]
        assert errors == []
    finally:
        context.close()


def test_cert_office_is_kept_out_of_the_review_pages(
    seeded: Seeded, chromium: Browser, output_dir: Path
) -> None:
    base = seeded.world.base
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        _log_in(page, base, "cert_office", "/")
        assert page.url.endswith("/operators")
        assert page.locator("nav.main-nav a").all_inner_texts() == ["作业人员"]
        for path in ("/review", f"/review/{seeded.no_match}", "/dashboard"):
            response = page.goto(base + path)
            assert response is not None and response.status == 403, path
            assert "无权访问" in page.inner_text("h1")
        response = page.goto(base + f"/review/evidence/{'0' * 64}")
        assert response is not None and response.status == 403
        page.goto(base + f"/operators/{seeded.operator_id}")
        assert "有效" in page.inner_text("#certificates")
        page.screenshot(path=str(output_dir / "operator-cert-office.png"), full_page=True)
    finally:
        context.close()
    # A device key is refused too (devices sign requests; they never hold a session).
    for path in ("/review", f"/review/{seeded.no_match}", "/dashboard"):
        assert seeded.world.crane.request("GET", path).status_code == 403, path


def test_dashboard_and_english_pages_render(
    seeded: Seeded, chromium: Browser, output_dir: Path
) -> None:
    base = seeded.world.base
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    try:
        _log_in(page, base, "admin", "/dashboard")
        assert page.locator("svg.chart").count() == 2
        assert page.locator("svg.chart rect").count() >= 4
        assert "forklift-01" in page.inner_text("#offline")
        page.screenshot(path=str(output_dir / "dashboard.png"), full_page=True)
        page.click("a.lang")
        page.wait_for_load_state()
        assert page.locator("html").get_attribute("lang") == "en"
        assert "Devices offline" in page.inner_text("#offline")
        page.goto(base + f"/review/{seeded.overfill}")
        assert "Cylinder record" in page.inner_text("body")
        assert page.locator("svg.overlay rect.box-zone").count() == 1
        page.screenshot(path=str(output_dir / "review-event-station-en.png"), full_page=True)
    finally:
        context.close()


def test_a_violating_fill_is_one_item_with_the_fill_on_it(
    seeded: Seeded, chromium: Browser, output_dir: Path
) -> None:
    fill_id = post_overfilled_fill(seeded)
    base = seeded.world.base
    context = chromium.new_context(viewport={"width": 1440, "height": 1000}, locale="zh-CN")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    try:
        _log_in(page, base, "supervisor", "/review?kind=station.violation")
        rows = page.locator("#queue tbody tr")
        assert rows.count() == 1
        assert rows.first.get_attribute("data-event") == seeded.overfill
        assert rows.first.locator("td.detail").inner_text() == "CYL-0001 · 充装 16.2 kg"
        page.goto(base + "/review?kind=station.fill")
        assert page.locator("#queue tbody tr").count() == 0  # the fill is not an item apart
        page.goto(base + "/review")
        assert "共 4 条" in page.inner_text("#counts")
        page.click(f'#queue tbody tr[data-event="{seeded.overfill}"] a')
        page.wait_for_url(f"**/review/{seeded.overfill}*")
        fill = page.locator("#fill")
        assert fill.is_visible()
        assert page.inner_text("#fill-net") == "16.2"
        assert "超装" in fill.inner_text() and "CYL-0001" in fill.inner_text()
        assert "复核结论同时适用于这条充装记录" in page.inner_text("#fill-note")
        page.screenshot(path=str(output_dir / "review-incident.png"), full_page=True)
        # One decision on the item covers the incident; the fill's address shows the item.
        page.keyboard.press("1")
        page.click("#save")
        page.wait_for_url("**saved=1")
        assert "确认违规" in page.inner_text("#history")
        page.goto(base + f"/review/{fill_id}")
        assert page.url.endswith(f"/review/{seeded.overfill}")
        assert "已决定" in page.inner_text("h1")
        assert errors == []
    finally:
        context.close()
