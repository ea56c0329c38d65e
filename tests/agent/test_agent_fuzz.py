"""Schema-based fuzzing of the API (schemathesis + hypothesis) from the agent's OpenAPI document.

For every operation, positive (valid by the schema) and negative (invalid) requests go through the
real app with valid credentials, so the authenticated code paths (payload validation, decisions,
status, the test endpoint) are exercised, not just the 401. No request may get a 5xx, and answers
must match the documented schemas. The agent runs with dry_run on, so a generated payload that
happens to match a trigger cannot execute anything.
"""

from __future__ import annotations

from importlib import resources

import pytest
import schemathesis
import yaml
from agent_support import basic_auth
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

pytestmark = pytest.mark.agent

DOCUMENT = yaml.safe_load(resources.files("rollback_agent").joinpath("openapi.yaml").read_text())
OPERATIONS = [(method.upper(), path) for path, ops in DOCUMENT["paths"].items() for method in ops]
# Negative data needs something to break: a body or a constrained parameter.
NEGATIVE = [
    (m, p)
    for m, p in OPERATIONS
    if "requestBody" in DOCUMENT["paths"][p][m.lower()]
    or (DOCUMENT["paths"][p][m.lower()].get("parameters") and not p.endswith("{incident_id}"))
]
CASES = [(m, p, GenerationMode.POSITIVE) for m, p in OPERATIONS] + [
    (m, p, GenerationMode.NEGATIVE) for m, p in NEGATIVE
]


def test_document_lists_every_route(agent_env) -> None:
    app = agent_env.app()
    routes = {
        (m, str(r.rule).replace("<", "{").replace(">", "}"))
        for r in app.url_map.iter_rules()
        if r.endpoint != "static"
        for m in r.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {g.value}" for m, p, g in CASES])
def test_api_never_answers_5xx(agent_env, method: str, path: str, mode: GenerationMode) -> None:
    agent_env.write_config(dry_run=True)
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", agent_env.app())
    operation = schema[path][method]
    seen: list[int] = []

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(mode, headers=basic_auth()))
    def check(case) -> None:
        response = case.call()
        seen.append(response.status_code)
        assert response.status_code < 500, (
            case.method,
            case.formatted_path,
            response.status_code,
            response.text[:500],
        )
        if mode is GenerationMode.POSITIVE:
            case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])

    check()
    assert seen, "no request was generated"
