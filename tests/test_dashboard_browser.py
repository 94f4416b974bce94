"""The dashboard in a real browser (Chromium through Playwright) on real data: the bundled San
Francisco temperatures through a ``csv`` series and a daily sine, trained with a tiny model, then fed
more observations so that stored forecasts meet their actuals. Screenshots go to artifacts/screenshots/.

Skipped when /usr/bin/chromium (Debian's package) or Playwright is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from api.dashboard.format import method_name
from api.dashboard.render import _coverage_flag
from forecaster.store import migrate
from forecaster.store import registry
from forecaster.usecases.accuracy import series_accuracy
from forecaster.config.settings import Settings
from forecaster.store.tables import make_engine, make_sessionmaker, write_session
from forecaster.usecases.forecasting import refresh_after_ingest, refresh_forecast
from forecaster.store.series import series_by_key
from forecaster.usecases.ingest import ingest_series
from forecaster.usecases.models import promote_version, rollback
from forecaster.store.jobruns import create_run
from forecaster.usecases.executor import InProcessQueue
from forecaster.data.sources import load_snapshot
from tests.api_server import running_api

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
SF = "csv:san-francisco,2010:temp^F"  # : , ^ in a key, as real keys have
SINE = "sine:weekly"
PUSH = "push:meter"
HELD_BACK = 30  # SF hours (and sine days) ingested one at a time after training
TINY = {"epochs": 3, "hidden_size": 8}

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


def _settings(url: str, csv: Path, sine_days: int) -> Settings:
    return Settings(database_url=url, snapshot_fallback=False, series=[
        {"key": SF, "source": "csv", "frequency": "1h", "unit": "°F", "model": TINY,
         "params": {"path": str(csv), "time_column": "ts", "value_column": "value"}},
        {"key": SINE, "source": "sine", "frequency": "1D", "model": TINY,
         "params": {"period": 7, "noise": 0.15, "length": sine_days, "seed": 3, "level": 10, "start": "2024-01-01"}},
        {"key": PUSH, "source": "push", "frequency": "1h", "unit": "kWh"},
    ])


def build_dashboard_db(tmp: Path) -> Settings:
    """Ingest, train (as a job run), then ingest one new step at a time so forecasts meet actuals."""
    url, csv = f"sqlite:///{tmp / 'dash.db'}", tmp / "sf.csv"
    frame = load_snapshot("sf_temp_hourly")
    frame.iloc[:-HELD_BACK].to_csv(csv, index=False)
    sine_days = 400
    settings = _settings(url, csv, sine_days)
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        sm = make_sessionmaker(engine)
        for spec in settings.series[:2]:
            assert ingest_series(sm, settings, spec, after_write=refresh_after_ingest).ok
        run = create_run(sm, settings, kind="train", keys=[SF, SINE])
        assert InProcessQueue(sm, settings).execute(run.id).status == "ok"
        with write_session(sm) as session:  # whatever the gate thought, a model serves SF
            if registry.champion_of(session, series_by_key(session, SF).id) is None:
                registry.promote(session, series_key=SF, version=1, force=True)
                refresh_forecast(session, series_by_key(session, SF))
        for i in range(1, HELD_BACK + 1):
            frame.iloc[: len(frame) - HELD_BACK + i].to_csv(csv, index=False)
            settings = _settings(url, csv, sine_days + i)
            for spec in settings.series[:2]:
                assert ingest_series(sm, settings, spec, after_write=refresh_after_ingest).ok
    finally:
        engine.dispose()
    return settings


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = build_dashboard_db(tmp_path_factory.mktemp("dashboard"))
    with running_api(settings) as api:
        yield api


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(  # a fresh profile (user data dir) per test module
            str(profile), executable_path=str(CHROMIUM), headless=True, viewport={"width": 1280, "height": 900},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-").lower()


def _mase(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def test_the_series_table_shows_each_series_champion_and_mase(dashboard: Any, page: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert page.goto(f"{dashboard.url}/").status == 200
    page.screenshot(path=str(SHOTS / "dashboard.png"), full_page=True)
    sf_row = page.locator(f'tr[data-key="{SF}"]')
    assert sf_row.locator("a.key").inner_text() == SF
    engine = make_engine(dashboard.settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            champion = registry.champion_of(session, series_by_key(session, SF).id)
            assert champion is not None
            acc = series_accuracy(session, series_key=SF, window=100, min_actuals=20)
    finally:
        engine.dispose()
    served = (champion.hyperparameters.get("serving") or {}).get("method")  # v1, or v1 plus the candidate it serves
    assert sf_row.locator("td.serving .pill").inner_text() == method_name(served, champion.version)
    assert sf_row.locator("td.holdout-model").inner_text() == _mase(champion.metrics["model"]["mase"])
    assert sf_row.locator("td.holdout-naive").inner_text() == _mase(champion.metrics["naive"]["mase"])
    live = sf_row.locator("td.live").inner_text().splitlines()
    flag = _coverage_flag(acc, None)  # the live interval's coverage, flagged when off its level
    assert live == [_mase(acc.champion_live_mase), f"{HELD_BACK} actuals"] + ([flag] if flag else [])
    assert "no data yet" in page.locator(f'tr[data-key="{PUSH}"]').inner_text()


def test_a_series_page_draws_the_chart_and_the_live_accuracy(dashboard: Any, page: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.goto(f"{dashboard.url}/")
    page.locator(f'tr[data-key="{SF}"] a.key').click()  # the link's URL-encoded key leads to the page
    page.wait_for_load_state()
    assert page.url.endswith(f"/series/{quote(SF, safe='')}")
    page.screenshot(path=str(SHOTS / f"series-{slug(SF)}.png"), full_page=True)
    path = page.locator("svg.chart path.obs")
    assert len(re.findall(r"[ML]", path.get_attribute("d") or "")) == 7 * 24  # a week of hours
    box = path.bounding_box()
    assert box is not None and box["width"] > 800 and box["height"] > 100  # drawn across the chart
    assert page.locator("svg.chart circle.past").count() == HELD_BACK
    assert page.locator("svg.chart circle.nextpt").count() == 1
    row = page.locator("#accuracy tbody tr").first
    cells = row.locator("td").all_inner_texts()
    assert cells[2] == str(HELD_BACK)
    assert page.locator("#versions tbody tr").count() >= 1

    page.goto(f"{dashboard.url}/series/{quote(SINE, safe='')}")
    page.screenshot(path=str(SHOTS / f"series-{slug(SINE)}.png"), full_page=True)
    assert len(re.findall(r"[ML]", page.locator("svg.chart path.obs").get_attribute("d") or "")) == 120
    page.goto(f"{dashboard.url}/series/{quote(PUSH, safe='')}")
    assert "No observations yet" in page.locator("#chart").inner_text()
    page.screenshot(path=str(SHOTS / f"series-{slug(PUSH)}.png"), full_page=True)


def test_the_pages_security_policy_blocks_nothing_they_use(dashboard: Any, page: Any) -> None:
    blocked: list[str] = []

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            blocked.append(message.text)

    page.on("console", on_console)
    try:
        for path in ("/", f"/series/{quote(SF, safe='')}"):
            answer = page.goto(f"{dashboard.url}{path}")
            assert "default-src 'none'" in answer.headers["content-security-policy"]
            assert answer.headers["x-frame-options"] == "DENY"
            # The inline stylesheet and style attributes still apply.
            assert page.locator("header.top").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(17, 24, 39)"
        assert page.locator("#next .v").evaluate("e => getComputedStyle(e).color") == "rgb(124, 58, 237)"
        page.goto(f"{dashboard.url}/docs")
        page.locator(".opblock").first.wait_for(timeout=20_000)  # Swagger UI ran its inline script
        assert blocked == []
    finally:
        page.remove_listener("console", on_console)


# ---------------------------------------------------------------- the versions table at a laptop's width

VERSIONED = "sine:versions"


@pytest.fixture(scope="module")
def versioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A series trained three times (tiny model, two statistical candidates), then rolled back once:
    a champion, a retired and a rejected version, with long reasons."""
    tmp = tmp_path_factory.mktemp("versions")
    url = f"sqlite:///{tmp / 'versions.db'}"
    settings = Settings(database_url=url, snapshot_fallback=False, series=[
        {"key": VERSIONED, "source": "sine", "frequency": "1h",
         "model": {**TINY, "candidates": ["ets_seasonal", "theta"]},
         "params": {"period": 24, "noise": 0.3, "length": 400, "seed": 5}}])
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        sm = make_sessionmaker(engine)
        assert ingest_series(sm, settings, settings.series[0], after_write=refresh_after_ingest).ok
        for _ in range(3):
            run = create_run(sm, settings, kind="train", keys=[VERSIONED])
            assert InProcessQueue(sm, settings).execute(run.id).status == "ok"
        # Retrains on the same data tie their champion, so the gate keeps v1: serve v2, then v3, by force.
        for version in (2, 3):
            promote_version(sm, series_key=VERSIONED, version=version, force=True)
        assert rollback(sm, series_key=VERSIONED).champion.version == 2  # v3 is rejected now
    finally:
        engine.dispose()
    with running_api(settings) as api:
        yield api


def test_the_versions_table_fits_a_1400_pixel_window_reasons_and_all(versioned: Any, page: Any) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 900})
    try:
        assert page.goto(f"{versioned.url}/series/{quote(VERSIONED, safe='')}").status == 200
        page.locator("#versions").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / "series-versions-1400.png"), full_page=True)
        rows = page.locator("#versions tbody tr")
        assert rows.count() == 3
        card = page.locator("#versions")
        scroll_width, client_width = card.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert scroll_width <= client_width  # nothing hides behind a sideways scroll
        for i in range(3):
            reason = rows.nth(i).locator("td.reason")
            assert reason.inner_text().strip()  # every version says why it serves or not
            box = reason.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 1400
        coverage = {rows.nth(i).get_attribute("data-version"): rows.nth(i).locator("td.coverage").inner_text()
                    for i in range(3)}
        assert coverage["3"] == "—"  # rejected: its interval serves no one
        assert coverage["2"].endswith("%") and coverage["1"].endswith("%")
        assert "rolled back to v2" in rows.first.locator("td.reason").inner_text()
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
