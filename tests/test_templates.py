"""Issue 13, templates: named per-company templates with {{variables}}, checked when saved,
sent by name; a missing variable is a clear 400 and sends nothing."""
from __future__ import annotations

import pytest
import webtest

from switchboard.actors.phone import InvalidInput
from switchboard.actors.templates import TemplateStore, render, variables_of

from tests.support.http import ADMIN_KEY, build_app, running_board, wait_until

pytestmark = pytest.mark.timeout(60)
ADMIN = {"X-Api-Key": ADMIN_KEY}
BASE = "/api/whatsapp/sessions/acme/templates"


def test_variables_and_rendering():
    assert variables_of("Hi {{name}}, order {{ order }} for {{name}}") == ["name", "order"]
    assert render("Hi {{name}}, order {{ order }}", {"name": "Ann", "order": 42}) == "Hi Ann, order 42"
    with pytest.raises(InvalidInput, match="missing template variables: order"):
        render("Hi {{name}}, order {{order}}", {"name": "Ann"})


@pytest.mark.parametrize("body", ["", "   ", "Hi {{name", "Hi name}}", "Hi {{1abc}}", "Hi {{na-me}}", "{{}}",
                                  "x" * 70000, 5, None])
def test_malformed_templates_are_refused(body):
    with pytest.raises(InvalidInput):
        variables_of(body)


@pytest.mark.parametrize("values", [{"name": None}, {"name": ["a"]}, {"name": True}, "name", {"name": "x" * 5000}])
def test_bad_variable_values_are_refused(values):
    with pytest.raises(InvalidInput):
        render("Hi {{name}}", values)


def test_the_store_keeps_templates_per_company(tmp_path):
    store = TemplateStore(tmp_path)
    saved, created = store.put("acme", "hello", "Hi {{name}}")
    assert created and saved["variables"] == ["name"]
    assert not store.put("acme", "hello", "Hello {{name}}!")[1]
    assert TemplateStore(tmp_path).get("acme", "hello")["body"] == "Hello {{name}}!"   # on disk
    assert store.list("beta") == []
    assert (tmp_path / "acme" / "templates.json").stat().st_mode & 0o777 == 0o600
    assert store.delete("acme", "hello") and not store.delete("acme", "hello")
    with pytest.raises(InvalidInput):
        store.put("acme", "bad name!", "x")


@pytest.fixture
def web(tmp_path):
    with running_board(tmp_path / "data") as board:
        app = build_app(board, tmp_path / "data")
        try:
            yield webtest.TestApp(app), board
        finally:
            app.switchboard.close()


def _link(app, company_id="acme", phone="79990001122"):
    app.post_json("/api/whatsapp/sessions", {"companyId": company_id}, headers=ADMIN)
    app.post_json(f"/api/simulator/companies/{company_id}/scan", {"phone": phone}, headers=ADMIN)
    assert wait_until(lambda: app.get(f"/api/whatsapp/sessions/{company_id}/status",
                                      headers=ADMIN).json["status"] == "connected")


def test_templates_over_http_and_sent_by_name(web):
    app, board = web
    _link(app)
    res = app.put_json(f"{BASE}/order_ready", {"body": "Hello {{name}}, order {{order}} is ready"}, headers=ADMIN)
    assert res.status_int == 201 and res.json["variables"] == ["name", "order"]
    assert app.put_json(f"{BASE}/order_ready", {"body": "Hi {{name}}: {{order}} ready"}, headers=ADMIN).status_int == 200
    assert app.get(f"{BASE}/order_ready", headers=ADMIN).json["body"] == "Hi {{name}}: {{order}} ready"
    assert [t["name"] for t in app.get(BASE, headers=ADMIN).json["templates"]] == ["order_ready"]
    sent = app.post_json("/api/whatsapp/sessions/acme/messages",
                         {"to": "79001234567", "template": "order_ready", "variables": {"name": "Ann", "order": "A7"}},
                         headers=ADMIN).json
    assert sent["status"] == "sent"
    assert [m["text"] for m in board.network.messages("79001234567")] == ["Hi Ann: A7 ready"]
    # A missing variable is a 400 that names it, and nothing is sent.
    res = app.post_json("/api/whatsapp/sessions/acme/messages",
                        {"to": "79001234567", "template": "order_ready", "variables": {"name": "Ann"}},
                        headers=ADMIN, expect_errors=True)
    assert res.status_int == 400 and "order" in res.json["error"]
    res = app.post_json("/api/whatsapp/sessions/acme/messages", {"to": "79001234567", "template": "nope"},
                        headers=ADMIN, expect_errors=True)
    assert res.status_int == 404 and "no template" in res.json["error"]
    res = app.post_json("/api/whatsapp/sessions/acme/messages",
                        {"to": "79001234567", "template": "order_ready", "message": "x"},
                        headers=ADMIN, expect_errors=True)
    assert res.status_int == 400
    assert len(board.network.messages("79001234567")) == 1
    assert app.delete(f"{BASE}/order_ready", headers=ADMIN).json["deleted"] is True
    assert app.get(f"{BASE}/order_ready", headers=ADMIN, expect_errors=True).status_int == 404


@pytest.mark.parametrize("body, needle", [({"body": "Hi {{name"}, "placeholder"), ({"body": ""}, "body"),
                                          ({"body": "x", "description": 5}, "description"), ({}, "body")])
def test_a_bad_template_is_a_400_and_saves_nothing(web, body, needle):
    app, _board = web
    _link(app)
    res = app.put_json(f"{BASE}/t1", body, headers=ADMIN, expect_errors=True)
    assert res.status_int == 400 and needle in res.json["error"]
    assert app.get(BASE, headers=ADMIN).json["total"] == 0


def test_templates_of_an_unknown_company_or_another_tenant_are_404(web):
    app, _board = web
    _link(app)
    assert app.get("/api/whatsapp/sessions/nosuch/templates", headers=ADMIN, expect_errors=True).status_int == 404
    assert app.put_json("/api/whatsapp/sessions/nosuch/templates/x", {"body": "x"}, headers=ADMIN,
                        expect_errors=True).status_int == 404
    key = app.post_json("/api/keys", {"companyId": "other"}, headers=ADMIN).json["key"]
    assert app.get(BASE, headers={"X-Api-Key": key}, expect_errors=True).status_int == 404
    assert app.get(f"{BASE}/bad%20name", headers=ADMIN, expect_errors=True).status_int == 400
