"""Schemathesis against the live OpenAPI schema: no generated request may cause a 5xx.

Operations are driven from a plain loop (rather than schemathesis' pytest plugin) so that the test
depends only on schemathesis' generation API.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from harness.server import ADMIN_TOKEN, Server

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES_PER_OPERATION = 40


@pytest.fixture(scope="module")
def api_schema(make_module_server) -> Any:  # type: ignore[no-untyped-def]
    # The admin token is also a user key here, so one header reaches every route.
    env = {"API_KEYS": ADMIN_TOKEN, "ENABLE_DIAGNOSTIC_TASKS": "false", "MAX_UPLOAD_MB": "1"}
    server: Server = make_module_server(env=env).start()
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def test_the_schema_covers_the_api(api_schema: Any) -> None:
    labels = {op.label for op in _operations(api_schema)}
    for expected in ("POST /v1/tasks", "GET /v1/tasks/{task_id}", "POST /admin/drain", "GET /metrics"):
        assert expected in labels


def test_no_request_causes_a_server_error(api_schema: Any) -> None:
    failures: list[str] = []
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def probe(case: Any) -> None:
            response = case.call(headers=AUTH, timeout=30)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )

        probe()
    assert not failures, "\n".join(failures[:20])
