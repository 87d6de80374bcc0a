"""Property-based check of distributed mode: schemathesis generates requests (valid and
invalid) from instance b's /openapi.json while the companies they name may live on
instance a, so many are forwarded: no answer is a 5xx other than a documented 503, and
every answer conforms to the document. Bounded: a few examples per operation."""
from __future__ import annotations

import contextlib
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from .support.cluster import Instances
from .support.http import ADMIN_KEY, Http, build_app, connect_session, serving, wait_until
from .support.servers import RedisServer

pytestmark = pytest.mark.timeout(240)
AUTH = {"X-Api-Key": ADMIN_KEY}
EXAMPLES = {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 2}
BUDGET_SECONDS = 120


def test_a_forwarding_instance_answers_as_its_document_says(tmp_path):
    server = RedisServer(tmp_path)
    instances = Instances(server.url, tmp_path / "shared")
    try:
        with contextlib.ExitStack() as stack:
            urls = {}
            for name in ("a", "b"):
                board = instances.start(name)
                served = stack.enter_context(serving(build_app(board, tmp_path / name, send_wait=1.0)))
                board.cluster.advertise(served.url)
                urls[name] = served.url
            assert wait_until(lambda: all(len(b.cluster.members) == 2 and all(
                m.url.startswith("http://127.0.0.1") for m in b.cluster.members.values())
                for b in instances.boards.values()), 10)
            http = Http(urls["b"])
            connect_session(http, "962302")
            http.post("/api/whatsapp/sessions", {"companyId": "waiting"})
            schema = schemathesis.openapi.from_url(urls["b"] + "/openapi.json", headers=AUTH)
            schema = schema.exclude(path_regex=r"/events$")
            failures: list[str] = []
            deadline = time.monotonic() + BUDGET_SECONDS
            for result in schema.get_all_operations():
                operation = result.ok()
                for mode, examples in EXAMPLES.items():
                    if time.monotonic() > deadline:
                        pytest.fail(f"schemathesis budget of {BUDGET_SECONDS} s exceeded")

                    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                    @given(case=operation.as_strategy(generation_mode=mode))
                    def check(case):
                        response = case.call(base_url=urls["b"], headers=AUTH, timeout=15)
                        case.validate_response(response, headers=AUTH)

                    try:
                        check()
                    except Unsatisfiable:
                        pass
                    except (Exception, BaseExceptionGroup) as exc:
                        failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
            assert not failures, "\n\n".join(failures)
    finally:
        instances.close()
        server.stop()
