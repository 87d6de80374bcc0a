"""Routing in distributed mode: any instance answers any request.

`ForwardPlugin` (a Bottle plugin, installed inside the ApiPlugin so authentication, the
company id check and the tenant check have already run) looks at the company a request
is about (the `<companyId>` in the path, or `companyId` in the body of the two routes
that carry it there). When another instance owns that company (it holds the lease, or
placement assigns it there), the request is forwarded to it as it came, with the same
method, path, query, key and body, and its answer is passed back; event streams are
passed through chunk by chunk as the owner sends them. A forwarded request carries
`X-Switchboard-Forwarded-By`, and an instance never forwards such a request again, so
two instances that disagree for a moment cannot bounce a request between them.

The list of sessions is the cluster's: the instance asked adds every other live
member's list to its own (the others asked with the hop header, so each answers only
for itself); an instance that does not answer is named in `unreachableInstances`.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterator
from urllib.parse import quote

import bottle
import urllib3
from bottle import HTTPResponse, request

from switchboard.supervision.cluster import Cluster, OwnerUnreachable
from switchboard.supervision.placement import Member

from .plumbing import ApiError

log = logging.getLogger(__name__)

HOP_HEADER = "X-Switchboard-Forwarded-By"
_HOP_ENVIRON = "HTTP_X_SWITCHBOARD_FORWARDED_BY"
# Routes whose company is named in the JSON body rather than the path.
BODY_COMPANY = {("POST", "/api/whatsapp/sessions"), ("POST", "/webhook/whatsapp/baileys/send")}
# Lists answered for the whole cluster: each instance lists only the sessions it runs.
MERGED_LISTS = {("GET", "/api/whatsapp/sessions")}
# Request headers passed on (the rest are the client's business with this instance).
_PASS_REQUEST = ("Content-Type", "X-Api-Key", "Authorization", "Last-Event-ID", "Accept", "Idempotency-Key")
# Hop-by-hop headers: never copied from the owner's answer.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
               "proxy-authenticate", "proxy-authorization"}


class ForwardPlugin:
    name = "switchboard-routing"
    api = 2

    def __init__(self, cluster: Cluster, *, timeout: float = 30.0, stream_timeout: float = 60.0) -> None:
        self.cluster = cluster
        self.timeout = timeout                  # a whole answer (a send waits for WhatsApp's ack)
        self.stream_timeout = stream_timeout    # between two chunks of an event stream (heartbeats come sooner)
        self.http = urllib3.PoolManager(num_pools=32, maxsize=16, retries=False)
        self.forwarded = 0

    def apply(self, callback: Callable, route: bottle.Route) -> Callable:
        if (route.method, route.rule) in MERGED_LISTS:
            return self._merged(callback)
        in_path = "<companyId>" in route.rule
        in_body = (route.method, route.rule) in BODY_COMPANY
        if not (in_path or in_body):
            return callback
        streams = route.rule.endswith("/events")

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            company_id = kwargs.get("companyId") if in_path else _company_in_body()
            if not isinstance(company_id, str):
                return callback(*args, **kwargs)          # the route itself says what is wrong
            if company_id in self.cluster.moving:
                # being handed over: nothing new here; a retry reaches the new owner
                raise ApiError(503, f"session {company_id} is moving to another instance; retry shortly",
                               {"Retry-After": "1"}, retryAfter=1000)
            if request.environ.get(_HOP_ENVIRON):
                return callback(*args, **kwargs)          # forwarded to us: answer here, whatever we think
            try:
                owner = self.cluster.owner_of(company_id)
            except OwnerUnreachable as exc:
                raise ApiError(503, str(exc), {"Retry-After": "1"}, retryAfter=1000) from None
            if owner is None:
                return callback(*args, **kwargs)
            return self.forward(owner, streams)
        return wrapper

    def forward(self, owner: Member, stream: bool) -> HTTPResponse:
        if not owner.url:
            raise ApiError(503, f"instance {owner.id} has not said where it can be reached yet",
                           {"Retry-After": "1"}, retryAfter=1000)
        env = request.environ
        path = quote(env.get("PATH_INFO", "/").encode("latin-1"), safe="/")
        url = owner.url.rstrip("/") + path + (f"?{env['QUERY_STRING']}" if env.get("QUERY_STRING") else "")
        headers = {name: request.headers[name] for name in _PASS_REQUEST if name in request.headers}
        headers[HOP_HEADER] = self.cluster.id
        body = _body_bytes() if request.content_length > 0 else None
        read = self.stream_timeout if stream else self.timeout
        try:
            upstream = self.http.request(request.method, url, body=body, headers=headers, preload_content=False,
                                         redirect=False, timeout=urllib3.Timeout(connect=2.0, read=read))
        except urllib3.exceptions.HTTPError as exc:
            log.warning("forwarding %s %s to %s failed: %s", request.method, path, owner.id, exc)
            raise ApiError(503, f"the session's owner (instance {owner.id}) did not answer; retry shortly",
                           {"Retry-After": "1"}, retryAfter=1000) from None
        self.forwarded += 1
        answer_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
        answer_headers["X-Switchboard-Instance"] = owner.id
        if stream and upstream.status == 200:
            return HTTPResponse(_chunks(upstream), upstream.status, headers=answer_headers)
        try:
            data = upstream.read()
        except urllib3.exceptions.HTTPError:
            raise ApiError(503, f"the session's owner (instance {owner.id}) broke off its answer; retry shortly",
                           {"Retry-After": "1"}, retryAfter=1000) from None
        finally:
            upstream.release_conn()
        return HTTPResponse(data, upstream.status, headers=answer_headers)

    def _merged(self, callback: Callable) -> Callable:
        """The list of sessions of the whole cluster: this instance's, and every other live
        member's (asked with the hop header, so each answers only its own)."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mine = callback(*args, **kwargs)
            if request.environ.get(_HOP_ENVIRON) or not isinstance(mine, dict):
                return mine
            answers, unreachable = [mine], []
            env = request.environ
            headers = {name: request.headers[name] for name in _PASS_REQUEST if name in request.headers}
            headers[HOP_HEADER] = self.cluster.id
            for member in list(self.cluster.members.values()):
                if member.id == self.cluster.id or not member.url:
                    continue
                url = member.url.rstrip("/") + env.get("PATH_INFO", "/") + \
                    (f"?{env['QUERY_STRING']}" if env.get("QUERY_STRING") else "")
                try:
                    upstream = self.http.request("GET", url, headers=headers, timeout=urllib3.Timeout(2.0, 5.0))
                    answer = json.loads(upstream.data) if upstream.status == 200 else None
                except (urllib3.exceptions.HTTPError, ValueError):
                    answer = None
                if isinstance(answer, dict):
                    answers.append(answer)
                else:
                    unreachable.append(member.id)
            return merge_lists(answers, unreachable)
        return wrapper

    def close(self) -> None:
        self.http.clear()


def merge_lists(answers: list[dict[str, Any]], unreachable: list[str]) -> dict[str, Any]:
    """One list answer from each instance's: the sessions together (a company listed by
    two instances for a moment, while it moves, once: the connected one), counts made
    again, other numbers summed."""
    merged: dict[str, Any] = dict(answers[0])
    sessions: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for session in answer.get("sessions", []):
            known = sessions.get(session.get("companyId"))
            if known is None or (session.get("status") == "connected" and known.get("status") != "connected"):
                sessions[session.get("companyId")] = session
    merged["sessions"] = sorted(sessions.values(), key=lambda s: str(s.get("companyId")))
    for name in ("total", "count"):
        if name in merged:
            merged[name] = len(sessions)
    if isinstance(merged.get("metrics"), dict):
        totals: dict[str, Any] = {}
        for answer in answers:
            for key, value in (answer.get("metrics") or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        totals.update({"totalSessions": len(sessions),
                       "activeConnections": sum(1 for s in sessions.values() if s.get("status") == "connected")})
        merged["metrics"] = {**merged["metrics"], **{k: v for k, v in totals.items() if k in merged["metrics"]}}
    if unreachable:
        merged["unreachableInstances"] = sorted(unreachable)
    return merged


def _chunks(upstream: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The owner's event stream, passed on as each chunk arrives; the upstream connection
    closes when either side goes away."""
    try:
        for chunk in upstream.stream(4096, decode_content=False):
            if chunk:
                yield chunk
    except urllib3.exceptions.HTTPError as exc:
        log.info("a forwarded event stream ended: %s", exc)
    finally:
        upstream.release_conn()
        upstream.close()


def _body_bytes() -> bytes:
    body = request.body                  # bottle keeps it, rewound, as wsgi.input for the route
    raw = body.read()
    body.seek(0)
    return raw


def _company_in_body() -> Any:
    if request.content_length <= 0:
        return None
    try:
        data = json.loads(_body_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data.get("companyId") if isinstance(data, dict) else None


def document(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document in distributed mode: every route that may be forwarded can
    also answer 503 (the owner does not answer, or the session is moving)."""
    unavailable = {"description": "the session's owner instance did not answer, or the session is moving "
                                  "to another instance; retry after Retry-After",
                   "headers": {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, item in spec.get("paths", {}).items():
        for method, operation in item.items():
            if method == "parameters" or not isinstance(operation, dict):
                continue
            if "{companyId}" in path or (method.upper(), path) in BODY_COMPANY:
                operation.setdefault("responses", {}).setdefault("503", unavailable)
    return spec
