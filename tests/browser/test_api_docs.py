"""The API's docs on a machine without internet: every operation has a hand-chosen camelCase id, /docs
(Swagger UI) and /redoc (ReDoc) load only from the API itself, and headless Chromium renders them with
every operation listed (so the scripts and styles really loaded). Screenshots go to artefacts/."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import re
from html import unescape

import pytest
from fastapi.routing import APIRoute

from dispatcher.api import create_app
from tests.api_fixtures import Api, api, api_keys, api_settings  # noqa: F401
from tests.browser.chromium import dump_dom, screenshot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
CAMEL_CASE = re.compile(r"[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)+|[a-z][a-z0-9]*")
# A few of the ids client generators and runbooks name: renaming one breaks their code, so it is a test.
KNOWN_IDS = {
    "upsertAccount", "getAccount", "batchUpsertAccounts", "postEvent", "requestContact", "listDeadLetters",
    "getLiveness", "getReadiness", "twilioMessageStatus", "twilioCallStatus", "emailBounce",
}  # fmt: skip


def operations(api: Api) -> list[tuple[str, str, dict]]:
    """(method, path, operation) for every operation in the served OpenAPI document."""
    paths = api.client.get("/openapi.json").json()["paths"]
    return [(method.upper(), path, op) for path, item in paths.items() for method, op in item.items()]


def test_every_route_has_a_hand_chosen_camel_case_operation_id(api: Api) -> None:
    app = create_app(api.engine, api.settings)
    unnamed = [f"{sorted(r.methods)} {r.path}" for r in app.routes
               if isinstance(r, APIRoute) and r.include_in_schema and r.operation_id is None]  # fmt: skip
    assert not unnamed, f"give these routes operation_id= (FastAPI would invent snake_case ids): {unnamed}"
    ids = [op["operationId"] for _, _, op in operations(api)]
    assert [i for i in ids if not CAMEL_CASE.fullmatch(i)] == []
    assert sorted({i for i in ids if ids.count(i) > 1}) == [], "operation ids must be unique"
    assert sorted(KNOWN_IDS - set(ids)) == [], "ids that clients rely on were renamed or lost"


def test_the_docs_pages_load_nothing_from_outside_the_api(api: Api) -> None:
    for page in ("/docs", "/redoc"):
        html = api.client.get(page).text
        external = re.findall(r"""(?:src|href)=["'](?:https?:)?//[^"']+""", html)
        assert external == [], f"{page} reaches outside the API: {external}"
        for asset in re.findall(r"""(?:src|href)=["'](/docs-assets/[^"']+)""", html):
            response = api.client.get(asset)
            assert response.status_code == 200 and len(response.content) > 1000, asset


def test_swagger_ui_renders_every_operation_offline(api: Api) -> None:
    dom = unescape(dump_dom(f"{api.url}/docs"))
    assert "swagger-ui" in dom and "opblock" in dom, "Swagger UI did not render (its script or CSS missing?)"
    missing = [f"{m} {p}" for m, p, op in operations(api) if op["operationId"] not in dom or op["summary"] not in dom]
    assert missing == [], f"operations missing from the rendered /docs: {missing}"
    screenshot(f"{api.url}/docs", "api-docs.png", size="1280,2400")


def test_redoc_renders_every_operation_offline(api: Api) -> None:
    dom = unescape(dump_dom(f"{api.url}/redoc"))
    missing = [f"{m} {p}" for m, p, op in operations(api) if op["summary"] not in dom]
    assert missing == [], f"operations missing from the rendered /redoc: {missing}"
    # ReDoc links each operation by its id (#operation/<operationId>): the ids reached the page too.
    assert all(f"operation/{op['operationId']}" in dom for _, _, op in operations(api))
    screenshot(f"{api.url}/redoc", "api-redoc.png", size="1280,2000")
