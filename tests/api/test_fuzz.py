"""Schemathesis against the app's own OpenAPI (bounded), served by `pdistill serve` with its Ray
cluster and store, so that no route has an excuse for a 5xx: no request makes one, responses
match the documented status codes, media types and schemas, and every 422 names its field.

The reconciler is off (PDISTILL_RECONCILE=false): a generated spec that happens to be valid is
stored and stays queued instead of running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from api_harness import TINY, idle_server
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from orchestrator import ray_head
from orchestrator.settings import Settings

LOCATIONS = {"body", "query", "header", "path", "cookie"}
# Body-level problems (not JSON, not a mapping) name the body itself.
WHOLE_BODY = {"json_invalid", "yaml_invalid", "dict_type"}


@pytest.fixture(scope="module")
def fuzz_server(
    ray_head_proc: ray_head.Head, tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with idle_server(head=ray_head_proc, tmp=tmp, cache_dir=cache_dir) as (server, env):
        headers = {"Authorization": f"Bearer {env['PDISTILL_API_TOKEN']}"}
        campaign = httpx.post(f"{server.url}/v1/campaigns", json=TINY, headers=headers).json()["id"]
        yield {"server": server, "headers": headers, "campaign": campaign}


# The served app's own schema: the routes do not depend on settings, so an app built here has
# the same one. (schemathesis.pytest.from_fixture fails under pytest 9: `Function._nodeid`.)
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


def check_422_names_field(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code != 422:
        return None
    body = response.json()
    assert isinstance(body.get("message"), str) and body["message"], body
    for problem in body["detail"]:
        loc = problem["loc"]
        assert loc and loc[0] in LOCATIONS, f"422 without a location: {problem}"
        assert problem["msg"], f"422 without a message: {problem}"
        if not (loc == ["body"] and problem["type"] in WHOLE_BODY):
            assert len(loc) >= 2, f"422 that names no field: {problem}"
    return True


@schema.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_names_fields(case: Any, fuzz_server: dict[str, Any]) -> None:
    params = case.path_parameters or {}
    # Half the time aim at a real campaign, so routes get past their 404.
    if "campaign_id" in params and case.method == "GET" and hash(str(case.query)) % 2:
        params["campaign_id"] = fuzz_server["campaign"]
    if case.path.endswith("/events") and params.get("campaign_id") == fuzz_server["campaign"]:
        return  # the stream of a queued campaign stays open; tests/api/test_http.py reads it
    # The team's token on every request (schemathesis would send made-up bearer values, and
    # every such request would stop at 401; tests/api/test_http.py covers auth).
    headers = {**(case.headers or {}), **fuzz_server["headers"]}
    response = case.call(base_url=fuzz_server["server"].url, headers=headers, timeout=30)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            check_422_names_field,
        ],
    )
