"""A short schemathesis run against the Authority's OpenAPI document, on the embedded default
and on PostgreSQL + Redis: whatever it generates for each operation (valid requests, and invalid
ones where a body, query or header can be invalid; all sent with the admin key), the answer is
never a 5xx.

The operations are listed at collection time from the app's own OpenAPI document (no server
is needed for that); each test then fuzzes the same operation of the document the running
``coupon up`` serves. Hypothesis drives schemathesis's strategies directly, because
schemathesis's lazy pytest loader (``from_fixture``) does not work with pytest 9.

``GET /v1/revocations/stream`` is left out: it is an endless event stream, so a plain call
never returns. ``test_api.py`` exercises it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema
from tests.services.harness import ADMIN_KEY_HEADER, AuthorityProcess, Launcher

from coupon.authority.app import create_app
from coupon.settings import Settings

MAX_EXAMPLES: Final = 50
STREAM: Final = ("GET", "/v1/revocations/stream")
_PATHS: Final[dict[str, dict[str, Any]]] = create_app(Settings()).openapi()["paths"]


def _has_invalid_inputs(operation: dict[str, Any]) -> bool:
    # Negative generation needs something that can be wrong: a body, a query or a header.
    # A route with only string path parameters (or none) accepts every request it can get.
    located = {p["in"] for p in operation.get("parameters", [])}
    return "requestBody" in operation or bool(located & {"query", "header"})


OPERATIONS: Final = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in _PATHS.items()
    for method, operation in item.items()
    if (method.upper(), path) != STREAM
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_invalid_inputs(operation)
]


@pytest.fixture(scope="module")
def fuzzed(engine: str, module_launcher: Launcher) -> Iterator[AuthorityProcess]:
    """An Authority of its own: the run revokes, rotates keys and adds credentials."""
    proc = module_launcher.start(engine, name=f"fuzzed-{engine}")
    yield proc
    proc.close()


@pytest.fixture(scope="module")
def api_schema(fuzzed: AuthorityProcess) -> BaseSchema:
    """The OpenAPI document the running Authority serves."""
    return schemathesis.openapi.from_url(f"{fuzzed.base_url}/v1/openapi.json", timeout=10)


class TestOpenApiFuzz:
    """Generated requests for every documented operation."""

    def test_served_document_lists_the_same_operations(self, api_schema: BaseSchema) -> None:
        """The served OpenAPI document has exactly the operations fuzzed here (and the stream)."""
        served = set()
        for result in api_schema.get_all_operations():
            assert isinstance(result, Ok), result
            served.add((result.ok().method.upper(), result.ok().path))
        assert served == {(m.upper(), p) for p, item in _PATHS.items() for m in item}
        assert STREAM in served

    @pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
    def test_no_server_errors(
        self,
        api_schema: BaseSchema,
        fuzzed: AuthorityProcess,
        method: str,
        path: str,
        mode: GenerationMode,
    ) -> None:
        """No generated request for this operation gets a 5xx answer."""
        operation = api_schema[path][method]
        headers = {ADMIN_KEY_HEADER: fuzzed.admin_key}

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def call(case: schemathesis.Case[Any]) -> None:
            response = case.call(headers=headers, timeout=10)
            assert response.status_code < 500, (
                f"{response.status_code} for {case.method} {case.formatted_path}\n"
                f"{case.as_curl_command(headers={ADMIN_KEY_HEADER: '<admin key>'})}\n"
                f"{response.text[:1000]}"
            )

        call()
