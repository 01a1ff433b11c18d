"""The operations dashboard in headless Chromium, on a network that resolves nothing but loopback: with the
admin key in the address's fragment every chart draws marks from the real record and breakers; without a key
the page asks for one and shows nothing. A screenshot goes to artefacts/dashboard.png."""

# ruff: noqa: F811 - the fixtures come back as test parameters

from __future__ import annotations

import re
from html import unescape

import pytest

from tests.api_fixtures import Api, api_keys, api_settings  # noqa: F401
from tests.browser.chromium import dump_dom, screenshot
from tests.integration.test_dashboard import worked_api  # noqa: F401
from tests.pg_fixtures import database_url_fixture, pg_server_fixture, record_pool_fixture  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
CHARTS = ("funnel", "attempts", "outcomes", "rules", "providers", "variants")


def _points(dom: str) -> dict[str, int]:
    found = re.findall(r'<div class="chart" id="([a-z]+)" data-points="(\d+)"', dom)
    return {name: int(points) for name, points in found}


def test_every_chart_holds_data_from_the_record(worked_api: Api) -> None:
    key = worked_api.keys["admin"][0]
    url = f"{worked_api.url}/v1/admin/dashboard#key={key}"
    dom = unescape(dump_dom(url))
    points = _points(dom)
    assert {name: points.get(name, 0) > 0 for name in CHARTS} == dict.fromkeys(CHARTS, True), points
    assert "no_consent:sms" in dom and "SMTP_PASSWORD" in dom  # the denial's rule and the open breaker's setting
    assert key not in dom  # the key left the address; it is kept for the tab only
    screenshot(url, "dashboard.png", size="1280,1500")


def test_without_a_key_the_page_asks_for_one_and_shows_nothing(worked_api: Api) -> None:
    dom = unescape(dump_dom(f"{worked_api.url}/v1/admin/dashboard"))
    assert '<form id="key-form">' in dom  # no longer hidden
    assert all(points == 0 for points in _points(dom).values())
