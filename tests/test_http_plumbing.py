"""The routes' shared plumbing: the Bottle plugin enforces access levels, the companyId and
tenant checks, the body limit and the error mapping for any route, before (or around) its
body; the route table is the one source of the OpenAPI document."""
from __future__ import annotations

import json

import pytest
import webtest

from switchboard.http.app import routes
from switchboard.http.openapi import build_spec, op
from switchboard.http.plumbing import Routes, mount, ok

from tests.support.http import ADMIN_KEY, build_app, running_board

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}

probe = Routes("Probe")
calls: list[tuple[str, object]] = []


@probe.get("/probe/admin", access="admin", doc=op("admin only", "Any"))
def admin_only(ctx, principal):
    calls.append(("admin", principal))
    return ok({"who": principal.key_id})


@probe.get("/probe/public", access="public", doc=op("anyone", "Any"))
def public(ctx, principal):
    calls.append(("public", principal))
    return ok({"anonymous": principal is None})


@probe.post("/probe/companies/<companyId>", doc=op("one company", "Any"))
def company(ctx, principal, companyId):
    calls.append(("company", companyId))
    return ok({"companyId": companyId})


@probe.get("/probe/broken", doc=op("fails", "Any"))
def broken(ctx, principal):
    raise RuntimeError("secret internal detail")


@pytest.fixture
def web(tmp_path):
    calls.clear()
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data", body_limit=1000)
        mount(app, list(probe))
        try:
            yield webtest.TestApp(app)
        finally:
            app.switchboard.close()


def tenant_key(web, company_id):
    return {"X-Api-Key": web.post_json("/api/keys", {"companyId": company_id}, headers=ADMIN).json["key"]}


def error(res, status):
    assert res.status_int == status, res.text
    assert res.content_type == "application/json" and res.json["success"] is False
    assert "Traceback" not in res.text
    return res.json["error"]


def test_the_plugin_enforces_a_routes_access_level_before_its_body_runs(web):
    assert "API key required" in error(web.get("/probe/admin", expect_errors=True), 401)
    assert web.get("/probe/admin", expect_errors=True).headers["WWW-Authenticate"] == "Bearer"
    assert error(web.get("/probe/admin", headers={"X-Api-Key": "wrong-key-wrong-key"}, expect_errors=True),
                 401) == "invalid API key"
    tenant = tenant_key(web, "alpha")
    assert "admin" in error(web.get("/probe/admin", headers=tenant, expect_errors=True), 403)
    assert calls == []
    assert web.get("/probe/admin", headers=ADMIN).json["who"] == "admin"
    assert web.get("/probe/public").json["anonymous"] is True
    assert [kind for kind, _ in calls] == ["admin", "public"]


def test_the_plugin_checks_the_company_id_and_hides_other_tenants(web):
    tenant = tenant_key(web, "alpha")
    assert "companyId" in error(web.post("/probe/companies/bad.id", headers=ADMIN, expect_errors=True), 400)
    assert error(web.post("/probe/companies/beta", headers=tenant, expect_errors=True), 404) == \
        "Session not found for company beta"
    assert calls == []
    assert web.post("/probe/companies/alpha", headers=tenant).json["companyId"] == "alpha"
    assert web.post("/probe/companies/beta", headers=ADMIN).json["companyId"] == "beta"


def test_the_plugin_refuses_a_body_over_the_limit_before_the_route_runs(web):
    res = web.post("/probe/companies/alpha", "x" * 1001, headers={**ADMIN, "Content-Type": "application/json"},
                   expect_errors=True)
    assert "larger than 1000 bytes" in error(res, 413)
    assert calls == []


def test_an_unexpected_exception_is_a_json_500_without_traceback(web):
    res = web.get("/probe/broken", headers=ADMIN, expect_errors=True)
    assert error(res, 500) == "internal server error"
    assert "secret internal detail" not in res.text and "RuntimeError" not in res.text


def test_every_request_is_timed_per_route(web):
    for _ in range(3):
        web.get("/probe/public")
    text = web.get("/metrics", headers=ADMIN).text
    assert 'switchboard_http_requests_total{route="GET /probe/public"} 3.0' in text
    line = next(l for l in text.splitlines()
                if l.startswith('switchboard_http_request_seconds_total{route="GET /probe/public"}'))
    assert float(line.rsplit(" ", 1)[1]) > 0


def test_the_document_takes_security_from_the_access_level():
    spec = build_spec(list(probe))
    assert spec["paths"]["/probe/public"]["get"]["security"] == []
    assert "401" not in spec["paths"]["/probe/public"]["get"]["responses"]
    admin = spec["paths"]["/probe/admin"]["get"]
    assert "Admin key only." in admin["description"] and {"401", "403"} <= set(admin["responses"])
    assert [p["name"] for p in spec["paths"]["/probe/companies/{companyId}"]["parameters"]] == ["companyId"]


@pytest.mark.parametrize("simulator", [True, False])
def test_every_mounted_route_is_declared_once(simulator):
    declared = [(r.method, r.rule) for r in routes(simulator)]
    assert len(declared) == len(set(declared))
    assert json.dumps(build_spec(routes(simulator)))       # serialisable as served


def test_one_tenant_cannot_take_every_event_stream(tmp_path):
    import types

    from switchboard.http.sse import EventStreams, StreamsFull
    from switchboard.supervision.eventlog import EventLog

    class Board:
        delivery = types.SimpleNamespace(log=EventLog(tmp_path))      # streams read the event log

    streams = EventStreams(Board(), max_streams=8)
    opened = [streams.open(company_id="c1", kinds=None, last_event_id=0, disconnected=lambda: False, tenant="k1")
              for _ in range(2)]
    with pytest.raises(StreamsFull, match="already has 2"):
        streams.open(company_id="c1", kinds=None, last_event_id=0, disconnected=lambda: False, tenant="k1")
    for key in ("k2", "k3"):
        for _ in range(2):
            streams.open(company_id=key, kinds=None, last_event_id=0, disconnected=lambda: False, tenant=key)
    streams.open(company_id="c4", kinds=None, last_event_id=0, disconnected=lambda: False, tenant="k4")
    with pytest.raises(StreamsFull):            # tenants hold 7 of 8: the last is the admin's
        streams.open(company_id="c5", kinds=None, last_event_id=0, disconnected=lambda: False, tenant="k5")
    streams.open(company_id=None, kinds=None, last_event_id=0, disconnected=lambda: False)
    assert streams.count == 8 and opened


def test_a_time_that_is_not_a_time_is_refused():
    from switchboard.supervision.events import parse_since
    for bad in ("nan", "-5", "inf", "yesterday"):
        with pytest.raises(ValueError):
            parse_since(bad)
    assert parse_since("1795309608") == 1795309608.0
