"""The dashboard pages over real HTTP (SQLite and PostgreSQL): what each page shows, the links and
keys with ``:`` ``^`` ``,``, empty states, escaping, 404s, and that no page loads torch.
Plus the chart's ticks and path. (The browser run is test_dashboard_browser.py.)"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import select

from api.dashboard.chart import ChartData, PastPoint, render_chart
from api.dashboard.format import mase, method_name, num
from api.dashboard.ticks import format_time_tick, time_ticks, value_ticks
from forecaster.store import migrate
from forecaster.config.settings import Settings
from forecaster.store.tables import (
    IngestRun, JobRun, ModelVersion, Series, make_engine, make_sessionmaker, utcnow, write_session,
)
from tests.api_server import ADMIN_KEY, BASELINE, PUSHED, SPX, TRAINED, Api, make_settings, running_api

ROOT = Path(__file__).resolve().parent.parent
UTC = dt.timezone.utc


def _row(html: str, key: str) -> str:
    match = re.search(rf'<tr data-key="{re.escape(key)}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {key}"
    return match.group(1)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).strip()


def test_dashboard_lists_every_series_with_its_champion_and_holdout_mase(api: Api) -> None:
    r = api.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    versions = api.client.get(f"/v1/series/{TRAINED}/models").json()["versions"]
    champion = next(v for v in versions if v["is_champion"])
    trained = _row(html, TRAINED)
    served = api.client.get(f"/v1/series/{TRAINED}/forecast").json()["method"]
    pill = method_name(served, 2)  # v2, or v2 plus the candidate it serves ("v2 AutoTheta")
    assert pill.startswith("v2") and re.search(rf'<td class="serving"><span class="pill[^"]*">{re.escape(pill)}</span>', trained)
    assert re.search(rf'holdout-model[^"]*">{mase(champion["metrics"]["model"]["mase"])}</td>', trained)
    assert re.search(rf'holdout-naive">{mase(champion["metrics"]["naive"]["mase"])}</td>', trained)
    method = api.client.get(f"/v1/series/{BASELINE}/forecast").json()["method"]
    assert f'<span class="pill warn">{method.replace("_", " ")}</span>' in _row(html, BASELINE)
    assert "no data yet" in _row(html, PUSHED)
    assert f'href="/series/{quote(SPX, safe="")}"' in html  # yfinance%3A%5EGSPC%3Aclose
    assert '<div class="v">4</div>' in html  # series in all


def test_series_page_draws_a_week_of_observations_and_the_next_forecast(api: Api) -> None:
    r = api.client.get(f"/series/{quote(TRAINED, safe='')}")
    assert r.status_code == 200
    path = re.search(r'<path class="obs" data-points="(\d+)" d="([^"]+)"', r.text)
    assert path is not None and path.group(1) == "168"
    assert len(re.findall(r"[ML]", path.group(2))) == 168  # 7 days of hours
    forecast = api.client.get(f"/v1/series/{TRAINED}/forecast").json()
    assert re.search(rf'<text class="nextval"[^>]*>{re.escape(num(forecast["value"]))}</text>', r.text)
    assert "for 2024-01-26 00:00 by v2" in _text(r.text)
    assert len(re.findall(r'<tr data-version="\d+">', r.text)) == 2  # the version history
    assert "No forecast has met its actual yet" in r.text


def test_series_page_takes_keys_encoded_or_not_and_explains_an_empty_push_series(sqlite_api: Api) -> None:
    for path in (f"/series/{quote(SPX, safe='')}", f"/series/{SPX}"):
        r = sqlite_api.client.get(path)
        assert r.status_code == 200, path
        text = _text(r.text)
        assert "No observations yet." in text and "This is a push series" in text
        assert f"/v1/series/{quote(SPX, safe='')}/observations" in r.text
        assert "No model version yet" in text
    baseline = _text(sqlite_api.client.get(f"/series/{BASELINE}").text)
    assert "No model version yet" in baseline and "baseline serves sine:baseline" in baseline


def test_unknown_series_page_is_an_html_404_naming_the_key(sqlite_api: Api) -> None:
    r = sqlite_api.client.get("/series/nope:x")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "no series &#39;nope:x&#39;" in r.text


def test_user_provided_text_is_escaped(sqlite_api_db: str) -> None:
    engine = make_engine(sqlite_api_db)
    try:
        with write_session(make_sessionmaker(engine)) as session:
            series = session.scalar(select(Series).where(Series.key == TRAINED))
            assert series is not None
            series.unit = "<b>°C</b>"
            mv = session.scalar(select(ModelVersion).where(ModelVersion.series_id == series.id).limit(1))
            assert mv is not None
            mv.status_reason = '<script>alert("x")</script>'
    finally:
        engine.dispose()
    with running_api(make_settings(sqlite_api_db)) as api:
        page, index = api.client.get(f"/series/{TRAINED}").text, api.client.get("/").text
    assert "<script>" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "<b>°C</b>" not in page + index and "&lt;b&gt;°C&lt;/b&gt;" in page and "&lt;b&gt;°C&lt;/b&gt;" in index


def test_pages_never_copy_the_host_header_and_carry_security_headers(sqlite_api: Api) -> None:
    r = sqlite_api.client.get(f"/series/{SPX}", headers={"Host": "evil.example"})
    assert r.status_code == 200 and "evil.example" not in r.text
    assert f'"$URL/v1/series/{quote(SPX, safe="")}/observations"' in r.text  # the copy-paste command
    for page in (sqlite_api.client.get("/"), r, sqlite_api.client.get("/series/nope:x")):
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"


def test_a_failed_run_is_public_but_its_error_text_needs_the_key(sqlite_api_db: str) -> None:
    ingest_error = "connection to http://scraper:hunter2@10.0.0.7/feed refused"
    train_error = "RuntimeError: /srv/forecaster/secret/weights.pt is not readable"
    engine = make_engine(sqlite_api_db)
    try:
        with write_session(make_sessionmaker(engine)) as session:
            session.add(IngestRun(series_key=BASELINE, source="sine", status="failed", finished_at=utcnow(),
                                  error=ingest_error))
            session.add(JobRun(kind="train", trigger="api", series_keys=[TRAINED], status="failed",
                               finished_at=utcnow(), series_total=1, series_failed=1, error=train_error,
                               progress={"results": [{"series": TRAINED, "status": "failed", "detail": train_error}]}))
    finally:
        engine.dispose()
    with running_api(make_settings(sqlite_api_db)) as api:
        pages = {path: api.client.get(path).text for path in ("/", f"/series/{BASELINE}", f"/series/{TRAINED}")}
        runs = api.client.get("/v1/jobs/runs", headers={"X-API-Key": ADMIN_KEY}).json()["runs"]
        assert api.client.get("/v1/jobs/runs").status_code == 401
    for path, html in pages.items():
        assert "hunter2" not in html and "10.0.0.7" not in html and "/srv/forecaster" not in html, path
    assert "failed" in _row(pages["/"], BASELINE) and "failed" in _row(pages["/"], TRAINED)
    assert "the error text: GET /v1/jobs/runs (admin key) or the server log" in pages[f"/series/{BASELINE}"]
    assert runs[0]["error"] == train_error  # with the key, the whole text


def test_an_empty_install_says_how_to_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    with running_api(Settings(database_url=url)) as api:
        text = _text(api.client.get("/").text)
    assert "No series yet." in text and "forecaster ingest" in text


def test_dashboard_pages_never_import_torch(sqlite_api_db: str) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from tests.api_server import make_settings, running_api
        with running_api(make_settings({sqlite_api_db!r})) as api:
            statuses = [api.client.get(p).status_code for p in ("/", "/series/{quote(TRAINED, safe='')}",
                                                                "/series/{BASELINE}", "/series/nope")]
        print(json.dumps({{"statuses": statuses, "loaded": sorted(m for m in ("torch", "forecaster.modelling.predictor")
                                                                  if m in sys.modules)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"statuses": [200, 200, 200, 404], "loaded": []}


# ---------------------------------------------------------------- chart pieces


def test_value_ticks_are_round_and_cover_the_data() -> None:
    assert value_ticks(41.3, 63.9) == ([40.0, 45.0, 50.0, 55.0, 60.0, 65.0], 40.0, 65.0)
    ticks, lo, hi = value_ticks(5.0, 5.0)  # a flat series still gets an axis
    assert lo < 5.0 < hi and len(ticks) >= 2


def test_time_ticks_fall_on_midnights_for_a_week_and_on_months_for_half_a_year() -> None:
    ticks, unit = time_ticks(dt.datetime(2010, 12, 24, 23, tzinfo=UTC), dt.datetime(2011, 1, 1, tzinfo=UTC))
    assert unit == "day" and [format_time_tick(t, unit) for t in ticks][:2] == ["Dec 25", "Dec 26"]
    assert all(t.hour == 0 for t in ticks)
    ticks, unit = time_ticks(dt.datetime(2018, 7, 10, tzinfo=UTC), dt.datetime(2018, 12, 31, tzinfo=UTC))
    assert [format_time_tick(t, unit) for t in ticks] == ["Aug 2018", "Sep 2018", "Oct 2018", "Nov 2018", "Dec 2018"]


def test_chart_breaks_the_line_at_a_gap_and_escapes_the_unit() -> None:
    t0 = dt.datetime(2024, 1, 1, tzinfo=UTC)
    ts = [t0 + dt.timedelta(hours=h) for h in (0, 1, 2, 5, 6)]
    nxt = PastPoint(t0 + dt.timedelta(hours=7), 3.0, 2.0, 4.0, None, "v1")
    svg = str(render_chart(ChartData(ts, [1.0, 2.0, 1.5, 2.5, 2.0], dt.timedelta(hours=1), [], nxt, "<x>")))
    d = re.search(r'class="obs" data-points="5" d="([^"]+)"', svg)
    assert d is not None and [c[0] for c in d.group(1).split()] == ["M", "L", "L", "M", "L"]
    assert "&lt;x&gt;" in svg and "<x>" not in svg
    assert svg.count('class="nextpt"') == 1
