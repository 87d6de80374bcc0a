"""The simulator service's control API fuzzed from its own /openapi.json, as the gateway's
is (tests/test_http_schemathesis.py): no 5xx, every answer as documented, and schema-valid
input accepted. A linked company and one showing a QR code give the faults something to hit."""
from __future__ import annotations

import queue
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from switchboard.actors.connection import Connected, QrCode
from switchboard.actors.transports.simulated import SimulatedTransport

from tests.support.simulator import SIMULATOR_KEY, ServiceInThread
from tests.test_simulated_faults import next_event

pytestmark = pytest.mark.timeout(240)
AUTH = {"X-Api-Key": SIMULATOR_KEY}
EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 5}
BUDGET_SECONDS = 90


def test_the_service_api_has_no_server_errors_and_no_schema_violations(tmp_path):
    with ServiceInThread(tmp_path / "sim") as service:
        transport = SimulatedTransport(service.net)
        for company_id, phone in (("962302", "79990001122"), ("waiting", None)):
            events: queue.Queue = queue.Queue()
            transport.connect(company_id, tmp_path / company_id, events.put).open()
            next_event(events, QrCode)
            if phone:
                service.net.scan(company_id, phone)
                next_event(events, Connected)
        schema = schemathesis.openapi.from_url(service.url + "/openapi.json", headers=AUTH)
        failures: list[str] = []
        operations = 0
        deadline = time.monotonic() + BUDGET_SECONDS
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode, examples in EXAMPLES.items():
                if time.monotonic() > deadline:
                    pytest.fail(f"budget of {BUDGET_SECONDS} s exceeded after {operations} operations")

                @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode))
                def check(case):
                    response = case.call(base_url=service.url, headers=AUTH, timeout=15)
                    case.validate_response(response, headers=AUTH)
                try:
                    check()
                except Unsatisfiable:
                    pass
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
        assert operations >= 7
        assert not failures, "\n\n".join(failures)
