"""Schemathesis against the app's own OpenAPI schema on a real server: no 5xx, every response matches the
schema, and bad input gets a 4xx whose body names the field. Bounded: a few examples per operation and mode.

Hypothesis drives schemathesis's strategies directly (its pytest plugin does not load under pytest 9).
"""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    negative_data_rejection,
]  # fmt: skip
EXAMPLES = 10


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx, value) -> bytes:
    """The batch body is declared as a string of lines; anything else goes as one JSON line."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else (json.dumps(value) + "\n").encode()


def check_case(case, api: Api) -> None:
    # On the wire any batch body is a string of lines; a "non-string" one exists only in the generator.
    checks = [c for c in CHECKS if c is not negative_data_rejection or case.operation.path != "/v1/accounts:batch"]
    response = case.call_and_validate(base_url=api.url, headers=api.auth(), checks=checks)
    if 400 <= response.status_code < 500 and response.headers.get("content-type") == "application/json":
        body = response.json()
        assert body["error"] and body["message"]
        if response.status_code == 422:
            assert body["fields"] and all(item["field"] for item in body["fields"]), body


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_own_schema(api: Api, mode: GenerationMode) -> None:
    api.put_account("A1", account_body())
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)  # fmt: skip
        def run(case) -> None:
            check_case(case, api)

        try:
            run()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # e.g. /healthz: no input, so nothing to break
