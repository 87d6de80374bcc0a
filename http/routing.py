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

    def close(self) -> None:
        self.http.clear()


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
