"""``stackgan2 serve`` keeps its own OpenAPI contract: Schemathesis (its pytest integration) tests every
operation of the real server's ``/openapi.json`` with its default checks (every built-in one) and a fixed seed.

The real command runs as a subprocess with the shipped model (``conftest.cli_server``). After the fuzzing
(file order, same server) it must still draw, and its log must hold no traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from conftest import cli_server
from schemathesis.config import SchemathesisConfig

from stackgan2.pipeline import shipped_model_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shipped_model_dir() is None, reason="no pretrained toy-birds model in assets/toy-birds"),
]

# Per operation: the examples and coverage phases (boundaries, wrong types, no body, undeclared methods),
# then up to MAX_EXAMPLES fuzzed cases; about 130 requests to POST /v1/images. The file takes ~12 s on
# 2 CPU cores, the server's start included.
SEED, MAX_EXAMPLES = 20240611, 100

# A prompt the schema allows is still refused when the model cannot draw it; the 422's description says
# so. Schemathesis counts that as a valid body rejected, so 422 is expected there, but only for these
# reasons (check below): any other refusal of a schema-valid body is a finding.
CONFIG = {
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},  # no replays of earlier runs: the seed's cases
    "operations": [{
        "include-name": "POST /v1/images",
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "422"]}},
    }],
}
UNDRAWABLE_PROMPT = ("prompt is empty", "contains control characters", "contains no words",
                     "has no word the text encoder knows")


def refused_only_for_an_undrawable_prompt(ctx, response, case) -> None:
    """A schema-valid body answered 422 names one of the prompt problems the 422's description lists."""
    if response.status_code == 422 and case.meta is not None and case.meta.generation.mode.is_positive:
        error = response.json()["error"]
        assert any(reason in error for reason in UNDRAWABLE_PROMPT), f"a schema-valid body was refused: {error}"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("serve-contract") / "serve.log"
    with cli_server(log) as url:
        yield url, log


@pytest.fixture(scope="module")
def served_schema(served):
    # an explicit config: a schemathesis.toml in the working directory must not change the run
    return schemathesis.openapi.from_url(f"{served[0]}/openapi.json", config=SchemathesisConfig.from_dict(CONFIG))


schema = schemathesis.pytest.from_fixture("served_schema")


@schema.parametrize()
def test_every_operation_keeps_the_openapi_contract(case):
    case.call_and_validate(additional_checks=[refused_only_for_an_undrawable_prompt])


def test_the_fuzzed_server_still_draws_and_logged_no_traceback(served):
    url, log = served
    response = httpx.post(f"{url}/v1/images", json={"prompt": "a small red bird", "seed": 1}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["seed"] == 1
    assert "Traceback" not in log.read_text(), log.read_text()


def test_the_contract_names_every_status(served):
    """Each operation lists what it can answer, every error as the Error body; 404 and 405 (with Allow),
    answers to requests no operation takes, are reusable responses; a 405 carries Allow."""
    url, _ = served
    document = httpx.get(f"{url}/openapi.json", timeout=30).json()
    expected = {("/healthz", "get"): {"200", "500"}, ("/v1/model", "get"): {"200", "500"},
                ("/v1/images", "post"): {"200", "400", "406", "413", "415", "422", "500"}}
    listed = {(path, method): set(operation["responses"])
              for path, item in document["paths"].items() for method, operation in item.items()}
    assert listed == expected
    error = {"$ref": "#/components/schemas/Error"}
    for (path, method), statuses in expected.items():
        for status in statuses - {"200"}:
            assert document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"] == error
    assert "no word the text encoder knows" in document["paths"]["/v1/images"]["post"]["responses"]["422"]["description"]
    assert set(document["components"]["responses"]) == {"NotFound", "MethodNotAllowed"}
    assert document["components"]["responses"]["MethodNotAllowed"]["headers"]["Allow"]["required"] is True
    for method, path, allow in [("TRACE", "/healthz", "GET"), ("GET", "/v1/images", "POST"), ("DELETE", "/", "GET")]:
        response = httpx.request(method, f"{url}{path}", timeout=30)
        assert response.status_code == 405 and response.headers["allow"] == allow, response.text
        assert response.json()["error"] == f"Method Not Allowed: {method} {path} (it takes {allow})"
