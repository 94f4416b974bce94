"""/docs (Swagger UI) and /redoc (ReDoc) render in a real browser with every request that
leaves loopback blocked: their scripts, styles and favicon come from the app itself.

Skipped when /usr/bin/chromium (Debian's package) or Playwright is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.api_server import Api, make_settings, running_api

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")


@pytest.fixture(scope="module")
def docs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path_factory.mktemp('docs') / 'docs.db'}"  # the docs read no data
    with running_api(make_settings(url)) as api:
        yield api


@pytest.fixture
def offline_page(tmp_path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A Chromium page whose requests to anything but 127.0.0.1 are aborted (and recorded)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    blocked: list[str] = []
    served: list[str] = []

    def route(r: Any) -> None:
        host = urlsplit(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            served.append(r.request.url)
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            viewport={"width": 1280, "height": 900},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        try:
            context.route("**/*", route)
            yield context.new_page(), blocked, served
        finally:
            context.close()


def test_swagger_ui_renders_every_operation_with_nothing_fetched_from_outside(
        docs_api: Api, offline_page: tuple[Any, list[str], list[str]]) -> None:
    page, blocked, served = offline_page
    assert page.goto(f"{docs_api.url}/docs").status == 200
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)  # drawn from /openapi.json by the script
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/series/{key}/forecast" in [p.replace("\u200b", "") for p in paths]
    assert "forecaster" in page.locator(".information-container .title").inner_text()
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "docs-offline.png"))
    assert blocked == []
    assert any(u.endswith("/docs-assets/swagger-ui-bundle.js") for u in served)


def test_redoc_renders_the_api_reference_with_nothing_fetched_from_outside(
        docs_api: Api, offline_page: tuple[Any, list[str], list[str]]) -> None:
    page, blocked, served = offline_page
    assert page.goto(f"{docs_api.url}/redoc").status == 200
    page.wait_for_selector("h1", timeout=30_000)  # ReDoc draws the title from /openapi.json
    assert "forecaster" in page.locator("h1").first.inner_text()
    assert page.get_by_text("/v1/series/{key}/forecast").count() >= 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "redoc-offline.png"))
    assert blocked == []
    assert any(u.endswith("/docs-assets/redoc.standalone.js") for u in served)
