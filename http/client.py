"""A Python client for the gateway's HTTP API (what other processes, like the replaced
system's workers, use): `Client(url, key)`.

    from switchboard.http.client import Client
    client = Client("http://127.0.0.1:3000", key)
    client.create_session("962302")
    client.send("962302", "79001234567", "Hello")          # idempotency key added by itself
    for event in client.events("962302"):                  # resumes by itself (Last-Event-ID)
        print(event.kind, event.data)

Every call has a timeout. 429 and 503 are retried with exponential backoff, waiting at
least what the answer's `retryAfter` (ms) or `Retry-After` (s) asks; so are connection
errors, but only for requests that are safe to repeat (reads, and sends, which always
carry an Idempotency-Key: a retried send is answered with the first one's result and is
never sent twice). Any other error raises `ApiError` with the status and the server's words.

Built on urllib, not a third-party HTTP library: none is a dependency of the gateway
(requests only comes with the test extras), and this client needs only plain requests,
one streamed response and timeouts, which the standard library does well enough.
"""
from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Iterable, Iterator, TypedDict

RETRY_STATUSES = (429, 503)


class ApiError(Exception):
    """An error answer: `status`, the server's `error` text, and the whole JSON `body`."""

    def __init__(self, status: int, error: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error
        self.body = body or {}

    @property
    def retry_after_ms(self) -> int | None:
        value = self.body.get("retryAfter")
        return value if isinstance(value, int) else None


class Unreachable(ApiError):
    """No answer at all (connection refused, reset, timed out)."""

    def __init__(self, url: str, reason: object) -> None:
        super().__init__(0, f"cannot reach {url}: {reason}")


class Status(TypedDict, total=False):
    success: bool
    companyId: str
    status: str
    connected: bool
    phoneNumber: str | None
    connectedAt: str | None
    lastError: str | None
    reconnectAttempts: int
    nextRetryAt: str | None
    qrAvailable: bool
    queued: int
    messagesSent: int
    messagesReceived: int
    # with a QR code (create, initialize, qr)
    qr: str | None
    qrDataUrl: str | None
    qrCode: str | None
    qrExpiresAt: str | None
    pageUrl: str
    created: bool


class SessionList(TypedDict):
    success: bool
    count: int
    sessions: list[Status]
    metrics: dict[str, int]
    total: int


class SendResult(TypedDict, total=False):
    success: bool
    id: str
    to: str
    companyId: str
    queued: bool
    messageId: str | None
    status: str


@dataclasses.dataclass(frozen=True)
class Event:
    """One Server-Sent Event: `id` (resume after it), `kind` (state, message, ...), `data`."""
    id: str | None
    kind: str
    data: dict[str, Any]


class Client:
    def __init__(self, url: str, key: str | None, *, timeout: float = 10.0, retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    # ---- the one way a request is made ----------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                query: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
                safe: bool | None = None, raw: bool = False) -> Any:
        """Call the API; JSON answers are decoded (`raw`: the bytes). Retries 429/503 (and,
        when `safe`, lost connections) with backoff; raises ApiError otherwise."""
        safe = method in ("GET", "HEAD") if safe is None else safe
        url = self.url + path + (("?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}))
                                 if query else "")
        data = json.dumps(body).encode() if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(method, url, data, headers or {}, raw)
            except ApiError as exc:
                retryable = exc.status in RETRY_STATUSES or (isinstance(exc, Unreachable) and safe)
                if not retryable or attempt > self.retries:
                    raise
                self._sleep(self._delay(attempt, exc.retry_after_ms))

    def _delay(self, attempt: int, retry_after_ms: int | None) -> float:
        """Exponential backoff with jitter, never shorter than what the server asked for."""
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
        if retry_after_ms is not None:
            delay = max(delay, retry_after_ms / 1000)
        return min(delay, max(self.max_backoff, (retry_after_ms or 0) / 1000))

    def _once(self, method: str, url: str, data: bytes | None, headers: dict[str, str], raw: bool) -> Any:
        request = urllib.request.Request(url, data=data, method=method)
        if self.key:
            request.add_header("X-Api-Key", self.key)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                payload = answer.read()
                if raw:
                    return payload
                return json.loads(payload) if payload else {}
        except urllib.error.HTTPError as exc:
            raise _error(exc) from None
        except (urllib.error.URLError, OSError) as exc:       # refused, reset, timed out
            raise Unreachable(self.url, getattr(exc, "reason", exc)) from None

    @staticmethod
    def _id(company_id: str) -> str:
        return urllib.parse.quote(company_id, safe="")

    def _session(self, company_id: str, tail: str = "") -> str:
        return f"/api/whatsapp/sessions/{self._id(company_id)}{tail}"

    # ---- gateway --------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def metrics(self) -> dict[str, Any]:
        """Global figures (admin key)."""
        return self.request("GET", "/api/whatsapp/metrics")

    def prometheus(self) -> str:
        return self.request("GET", "/metrics", raw=True).decode()

    def openapi(self) -> dict[str, Any]:
        return self.request("GET", "/openapi.json")

    def supervisor_log(self, *, since: str | None = None, company: str | None = None,
                       limit: int | None = None) -> list[dict[str, Any]]:
        return self.request("GET", "/api/supervisor/log",
                            query={"since": since, "company": company, "limit": limit})["records"]

    def activity(self, company: str | None = None) -> dict[str, Any]:
        """Sends and receives per minute over the last hour."""
        return self.request("GET", "/api/dashboard/activity", query={"company": company})

    # ---- sessions -------------------------------------------------------------------------

    def sessions(self) -> SessionList:
        return self.request("GET", "/api/whatsapp/sessions")

    def create_session(self, company_id: str) -> Status:
        """Create and start; the answer carries the first QR code when there is one.
        Creating is idempotent (an existing session is started), so it is safe to retry."""
        return self.request("POST", "/api/whatsapp/sessions", {"companyId": company_id}, safe=True)

    def session(self, company_id: str) -> dict[str, Any]:
        """Status and diagnostics."""
        return self.request("GET", self._session(company_id))

    def status(self, company_id: str) -> Status:
        return self.request("GET", self._session(company_id, "/status"))

    def session_health(self, company_id: str) -> dict[str, Any]:
        return self.request("GET", self._session(company_id, "/health"))

    def initialize(self, company_id: str) -> Status:
        return self.request("POST", self._session(company_id, "/initialize"), safe=True)

    def start(self, company_id: str) -> Status:
        return self.request("POST", self._session(company_id, "/start"), safe=True)

    def stop(self, company_id: str) -> Status:
        return self.request("POST", self._session(company_id, "/stop"), safe=True)

    def reconnect(self, company_id: str) -> Status:
        return self.request("POST", self._session(company_id, "/reconnect"))

    def logout(self, company_id: str) -> Status:
        return self.request("POST", self._session(company_id, "/logout"))

    def delete(self, company_id: str, *, logout: bool = True) -> dict[str, Any]:
        return self.request("DELETE", self._session(company_id), query={"logout": "true" if logout else "false"})

    # ---- linking --------------------------------------------------------------------------

    def qr(self, company_id: str) -> Status:
        return self.request("GET", self._session(company_id, "/qr"))

    def qr_png(self, company_id: str, scale: int | None = None) -> bytes:
        return self.request("GET", self._session(company_id, "/qr.png"), query={"scale": scale}, raw=True)

    def qr_svg(self, company_id: str, scale: int | None = None) -> bytes:
        return self.request("GET", self._session(company_id, "/qr.svg"), query={"scale": scale}, raw=True)

    def pairing_code(self, company_id: str, phone: str) -> dict[str, Any]:
        return self.request("POST", self._session(company_id, "/pairing-code"), {"phone": phone})

    # ---- sending --------------------------------------------------------------------------

    def send(self, company_id: str, to: str, message: str, *, idempotency_key: str | None = None) -> SendResult:
        """Send a text. An Idempotency-Key is always sent (a new one unless given), so the
        retries of this call can never send the message twice. `queued: True` (HTTP 202)
        means it waits in the outbox and goes out once the session is connected."""
        key = idempotency_key or uuid.uuid4().hex
        return self.request("POST", self._session(company_id, "/messages"), {"to": to, "message": message},
                            headers={"Idempotency-Key": key}, safe=True)

    def webhook_send(self, company_id: str, phone: str, message: str, *,
                     idempotency_key: str | None = None) -> SendResult:
        """The same send through the replaced system's webhook endpoint."""
        return self.request("POST", "/webhook/whatsapp/baileys/send",
                            {"companyId": company_id, "phone": phone, "message": message},
                            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex}, safe=True)

    def old_health(self, company_id: str) -> dict[str, Any]:
        """The replaced system's diagnostic endpoint (`provider`, `history`, `recommendations`)."""
        return self.request("GET", f"/webhook/whatsapp/baileys/health/{self._id(company_id)}")

    # ---- keys (admin) ---------------------------------------------------------------------

    def create_key(self, company_id: str, name: str | None = None) -> dict[str, Any]:
        """A tenant key; the answer's `key` is shown only this once."""
        body: dict[str, Any] = {"companyId": company_id}
        if name is not None:
            body["name"] = name
        return self.request("POST", "/api/keys", body)

    def keys(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/keys")["keys"]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/api/keys/{self._id(key_id)}")

    # ---- webhooks (where the gateway has them) -------------------------------------------

    def webhook(self, company_id: str) -> dict[str, Any]:
        return self.request("GET", self._session(company_id, "/webhook"))

    def set_webhook(self, company_id: str, url: str, *, secret: str | None = None,
                    events: Iterable[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"url": url}
        if secret is not None:
            body["secret"] = secret
        if events is not None:
            body["events"] = list(events)
        return self.request("PUT", self._session(company_id, "/webhook"), body, safe=True)

    def delete_webhook(self, company_id: str) -> dict[str, Any]:
        return self.request("DELETE", self._session(company_id, "/webhook"), safe=True)

    def dead_letters(self, company: str | None = None, limit: int | None = None) -> dict[str, Any]:
        """Webhook deliveries that failed for good (admin)."""
        return self.request("GET", "/api/webhooks/dead", query={"company": company, "limit": limit})

    def replay_dead_letters(self, ids: Iterable[str] | None = None, company: str | None = None) -> dict[str, Any]:
        """Queue dead letters for delivery again (admin): these ids, or a company's, or all."""
        body: dict[str, Any] = {}
        if ids is not None:
            body["ids"] = list(ids)
        if company is not None:
            body["companyId"] = company
        return self.request("POST", "/api/webhooks/dead/replay", body)

    # ---- the simulator's control API (a gateway run with --transport simulated) -----------

    def simulate_scan(self, company_id: str, phone: str | None = None) -> dict[str, Any]:
        return self.request("POST", f"/api/simulator/companies/{self._id(company_id)}/scan",
                            {"phone": phone} if phone else {})

    def simulate_fault(self, company_id: str, fault: str, seconds: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"fault": fault}
        if seconds is not None:
            body["seconds"] = seconds
        return self.request("POST", f"/api/simulator/companies/{self._id(company_id)}/faults", body)

    def simulate_inbound(self, company_id: str, sender: str, text: str, message_id: str | None = None
                         ) -> dict[str, Any]:
        body = {"companyId": company_id, "from": sender, "text": text}
        if message_id is not None:
            body["id"] = message_id
        return self.request("POST", "/api/simulator/inbound", body)

    def simulated_phone_messages(self, phone: str) -> dict[str, Any]:
        return self.request("GET", f"/api/simulator/phones/{self._id(phone)}/messages")

    def simulated_connections(self) -> dict[str, Any]:
        return self.request("GET", "/api/simulator/connections")

    # ---- the event stream ----------------------------------------------------------------

    def events(self, company_id: str | None = None, *, kinds: Iterable[str] | None = None,
               last_event_id: str | None = None, stop: threading.Event | None = None,
               read_timeout: float = 60.0) -> Iterator[Event]:
        """Events as they happen, forever (until `stop` is set or the key is revoked). A
        dropped stream is reopened with Last-Event-ID after the server's `retry:` delay
        (with backoff while the server is unreachable), so no event is missed or repeated
        within the server's replay window. Heartbeats are not yielded."""
        path = self._session(company_id, "/events") if company_id else "/api/whatsapp/events"
        query = {"events": ",".join(kinds)} if kinds else None
        stop = stop or threading.Event()
        retry_ms = 3000
        failures = 0
        while not stop.is_set():
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
            request = urllib.request.Request(url, headers=headers)
            if self.key:
                request.add_header("X-Api-Key", self.key)
            try:
                with urllib.request.urlopen(request, timeout=read_timeout) as answer:
                    failures = 0
                    for item in _parse_stream(answer, stop):
                        if isinstance(item, int):
                            retry_ms = item
                            continue
                        if item.kind == "close" and item.data.get("reason") == "API key revoked":
                            raise ApiError(401, "API key revoked", item.data)
                        if item.kind in ("close", "overflow"):
                            break                               # reconnect and resume
                        if item.id is not None:
                            last_event_id = item.id
                        yield item
            except urllib.error.HTTPError as exc:
                error = _error(exc)
                if error.status not in RETRY_STATUSES:
                    raise error from None
                failures += 1
                stop.wait(self._delay(failures, error.retry_after_ms))
                continue
            except (urllib.error.URLError, OSError):
                failures += 1
                stop.wait(self._delay(failures, None))
                continue
            stop.wait(retry_ms / 1000)


def _error(exc: urllib.error.HTTPError) -> ApiError:
    raw = exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if "retryAfter" not in body:
        header = exc.headers.get("Retry-After") if exc.headers else None
        if header and header.isdigit():
            body["retryAfter"] = int(header) * 1000
    return ApiError(exc.code, str(body.get("error") or exc.reason), body)


def _parse_stream(answer: Any, stop: threading.Event) -> Iterator[Event | int]:
    """Server-Sent Events from a byte stream: Events, and ints for `retry:` fields."""
    event_id = kind = None
    data: list[str] = []
    for raw in answer:
        if stop.is_set():
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {"text": "\n".join(data)}
                yield Event(event_id, kind or "message", payload if isinstance(payload, dict) else {"value": payload})
            kind, data = None, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "retry" and value.isdigit():
            yield int(value)
