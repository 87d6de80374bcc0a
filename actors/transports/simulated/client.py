"""A small client for the control API of `switchboard simulator`, with the method names of
SimulatedNetwork (scan, fault, deliver_inbound, messages, connections, max_seen), so a
test or a chaos script drives a remote simulator as it drives the in-process one."""
from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ...phone import InvalidInput


class SimulatorClient:
    def __init__(self, url: str, key: str, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer); no exception for an HTTP error status."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"X-Api-Key": self.key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, answer = self.request(method, path, body)
        if status == 404:
            raise LookupError(answer.get("error", "not found"))
        if status == 400:
            raise InvalidInput(answer.get("error", "bad request"))
        if status != 200:
            raise RuntimeError(f"simulator answered HTTP {status}: {answer}")
        return answer

    def scan(self, company_id: str, phone: str | None = None) -> dict[str, Any]:
        body = {"phone": phone} if phone else None
        return self._call("POST", f"/api/simulator/companies/{_q(company_id)}/scan", body)

    def fault(self, company_id: str, fault: str, seconds: float = 30.0, **extra: Any) -> dict[str, Any]:
        body = {"fault": fault, "seconds": seconds, **{k: v for k, v in extra.items() if v is not None}}
        return self._call("POST", f"/api/simulator/companies/{_q(company_id)}/faults", body)

    def deliver_inbound(self, company_id: str, sender: str, text: str, message_id: str | None = None,
                        push_name: str = "", *, as_lid: bool = False) -> str:
        body: dict[str, Any] = {"companyId": company_id, "from": sender, "text": text, "asLid": as_lid}
        if message_id:
            body["id"] = message_id
        if push_name:
            body["pushName"] = push_name
        return self._call("POST", "/api/simulator/inbound", body)["id"]

    def messages(self, phone: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/simulator/phones/{_q(phone)}/messages")["messages"]

    def connections(self, history: int = 200) -> dict[str, Any]:
        return self._call("GET", f"/api/simulator/connections?history={int(history)}")

    def max_seen(self, company_id: str) -> int:
        return self.connections()["companies"].get(company_id, {}).get("maxSeen", 0)

    def live_count(self, company_id: str) -> int:
        return self.connections()["companies"].get(company_id, {}).get("live", 0)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
