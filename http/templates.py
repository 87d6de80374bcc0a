"""Message templates per company (issue 13): save, read, list, delete; sends name them
(`{"to", "template", "variables"}` on POST .../messages, http/messages.py)."""
from __future__ import annotations

from typing import Any

from switchboard.actors.payload import MAX_TEXT
from switchboard.actors.templates import MAX_TEMPLATES, TemplateNotFound, TemplateStore

from .auth import Principal
from .openapi import NULLABLE_STRING, _ok, body, op
from .plumbing import ApiError, Routes, json_body, not_found, ok
from .state import AppState

api = Routes("Templates")
TEMPLATE_NAME = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "minLength": 1, "maxLength": 64,
                 "example": "order_ready"}
TEMPLATE_BODY = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": r"\S",
                 "example": "Hello {{name}}, your order {{order}} is ready",
                 "description": "the text; {{name}} placeholders (letters, digits, '_')"}
_TEMPLATE_PROPS = {"name": TEMPLATE_NAME, "body": {"type": "string"}, "description": NULLABLE_STRING,
                   "variables": {"type": "array", "items": {"type": "string"}},
                   "updatedAt": {**NULLABLE_STRING, "format": "date-time"}, "companyId": {"type": "string"}}
TEMPLATE = _ok(_TEMPLATE_PROPS, ["name", "body", "variables"])
TEMPLATE_LIST = _ok({"templates": {"type": "array", "items": {"type": "object", "properties": _TEMPLATE_PROPS}},
                     "total": {"type": "integer"}}, ["templates", "total"])
_PATH = "/api/whatsapp/sessions/<companyId>/templates/<templateName>"


def store(ctx: AppState) -> TemplateStore:
    """The app's template store (made on first use; the files live in each company's directory)."""
    templates = getattr(ctx, "templates", None)
    if templates is None:
        templates = ctx.templates = TemplateStore(ctx.board.data_dir)
    return templates


def _company(ctx: AppState, company_id: str) -> None:
    if not ctx.board.exists(company_id):
        raise not_found(company_id)


@api.route("PUT", _PATH,
           doc=op("Save a message template (create or replace); checked now: malformed {{placeholders}} are a 400",
                  {"description": "saved", "content": {"application/json": {"schema": TEMPLATE}}},
                  errors=(400, 404), extra={201: {"description": "created",
                                              "content": {"application/json": {"schema": TEMPLATE}}}},
                  body=body({"body": TEMPLATE_BODY, "description": {"type": "string", "maxLength": 500}},
                            ["body"]),
                  description=f"at most {MAX_TEMPLATES} templates per company"))
def put_template(ctx: AppState, _principal: Principal, companyId: str, templateName: str) -> dict[str, Any]:
    _company(ctx, companyId)
    payload = json_body()
    saved, created = store(ctx).put(companyId, templateName, payload.get("body"), payload.get("description"))
    return ok({"companyId": companyId, **saved}, 201 if created else 200)


@api.get(_PATH, doc=op("A message template", {"description": "the template",
                                              "content": {"application/json": {"schema": TEMPLATE}}},
                       errors=(400, 404)))
def get_template(ctx: AppState, _principal: Principal, companyId: str, templateName: str) -> dict[str, Any]:
    _company(ctx, companyId)
    try:
        return ok({"companyId": companyId, **store(ctx).get(companyId, templateName)})
    except TemplateNotFound as exc:
        raise ApiError(404, str(exc)) from None


@api.delete(_PATH, doc=op("Delete a message template", "Any", errors=(400, 404)))
def delete_template(ctx: AppState, _principal: Principal, companyId: str, templateName: str) -> dict[str, Any]:
    _company(ctx, companyId)
    if not store(ctx).delete(companyId, templateName):
        raise ApiError(404, f"no template {templateName!r} for company {companyId}")
    return ok({"companyId": companyId, "name": templateName, "deleted": True})


@api.get("/api/whatsapp/sessions/<companyId>/templates",
         doc=op("The company's message templates", {"description": "the templates, by name",
                                                     "content": {"application/json": {"schema": TEMPLATE_LIST}}},
                errors=(400, 404)))
def list_templates(ctx: AppState, _principal: Principal, companyId: str) -> dict[str, Any]:
    _company(ctx, companyId)
    listed = store(ctx).list(companyId)
    return ok({"companyId": companyId, "templates": listed, "total": len(listed)})
