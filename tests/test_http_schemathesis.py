"""Property-based API check: schemathesis generates requests from /openapi.json (valid and
invalid ones) against the real server, and every answer must be free of 5xx and conform
to the document (status code, content type, headers, body schema). Bounded: a handful of
examples per operation, about half a minute in all."""
from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.http import ADMIN_KEY, build_app, connect_session, Http, running_board, serving

pytestmark = pytest.mark.timeout(240)
AUTH = {"X-Api-Key": ADMIN_KEY}
EXAMPLES = {GenerationMode.POSITIVE: 6, GenerationMode.NEGATIVE: 4}
BUDGET_SECONDS = 120


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(tmp_path):
    with running_board(tmp_path / "data", ask_timeout=2.0) as board, \
            serving(build_app(board, tmp_path / "data", send_wait=1.0)) as server:
        http = Http(server.url)
        connect_session(http, "962302")          # so that some generated requests hit a live session
        http.post("/api/whatsapp/sessions", {"companyId": "waiting"})
        schema = schemathesis.openapi.from_url(server.url + "/openapi.json", headers=AUTH)
        # event streams never end by themselves; tests/test_http_server.py covers them
        schema = schema.exclude(path_regex=r"/events$")
        failures: list[str] = []
        operations = 0
        deadline = time.monotonic() + BUDGET_SECONDS
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode, examples in EXAMPLES.items():
                if time.monotonic() > deadline:
                    pytest.fail(f"schemathesis budget of {BUDGET_SECONDS} s exceeded after {operations} operations")

                @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def check(case):
                    response = case.call(base_url=server.url, headers=AUTH, timeout=15)
                    case.validate_response(response, headers=AUTH)

                try:
                    check()
                except Unsatisfiable:
                    pass               # no invalid variant exists (an operation without inputs)
                except (Exception, BaseExceptionGroup) as exc:   # collect every operation's failure, then report them all
                    failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
        assert operations >= 30
        assert not failures, "\n\n".join(failures)
