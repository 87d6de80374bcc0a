"""Every inbound message reaches the webhook across SIGKILLs of the gateway, once after dedupe by id,
in order per company; the receiver checks every signature.

This version runs `serve --transport simulated` with its in-process simulator: a killed gateway
takes its simulated WhatsApp with it, so after each restart the test plays WhatsApp redelivering
what it cannot know was taken (every message of the burst so far, in order), and re-links the
companies. The old design lost messages here for good: their ids were in the dedupe file before
their events were anywhere durable, so the redelivery was dropped.
"""
from __future__ import annotations

import collections
import random
import signal
import threading
import time

import pytest

from .support.http import Http, Served, clean_env, wait_until
from .support.receiver import Receiver

pytestmark = pytest.mark.timeout(300)
KEY = "kill-test-admin-key-0123456789abcdef"
SECRET = "kill-test-webhook-secret"
COMPANIES = {"acme": "79990000001", "globex": "79990000002", "initech": "79990000003", "umbrella": "79990000004"}
PER_COMPANY = 600          # 2400 messages


def start_gateway(data_dir, receiver) -> tuple[Served, Http]:
    gateway = Served(data_dir, "--transport", "simulated",
                     env=clean_env(SWITCHBOARD_ADMIN_KEY=KEY, WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET,
                                   WEBHOOK_EVENTS="message", WHATSAPP_RATE_LIMIT_MAX="100000"))
    return gateway, Http(gateway.url, KEY)


def relink(http: Http, company: str, phone: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        code, _, status = http.get(f"/api/whatsapp/sessions/{company}/status")
        state = status.get("status") if code == 200 else None
        if state == "connected":
            return
        if code == 404:
            http.post("/api/whatsapp/sessions", {"companyId": company})
        elif state == "qr":
            http.post(f"/api/simulator/companies/{company}/scan", {"phone": phone})
        elif state in ("stopped", "logged_out", "failed"):
            http.post(f"/api/whatsapp/sessions/{company}/initialize")
        time.sleep(0.1)
    raise AssertionError(f"{company} did not connect again: {status}")


class WhatsApp:
    """Pushes each company's messages in order; after a gateway restart it redelivers every
    message of that company it ever sent (it cannot know what the dead gateway had taken)."""

    def __init__(self) -> None:
        self.http: Http | None = None
        self.up = threading.Event()
        self.next = {c: 0 for c in COMPANIES}
        self.redeliver = {c: False for c in COMPANIES}
        self.pushed = 0
        self.lock = threading.Lock()
        self.rng = random.Random(9)

    def run(self, company: str) -> None:
        while self.next[company] < PER_COMPANY:
            self.up.wait()
            http = self.http
            if self.redeliver[company]:
                for n in range(self.next[company]):
                    if not self._push(http, company, n):
                        break
                else:
                    self.redeliver[company] = False
                continue
            n = self.next[company]
            if self._push(http, company, n):
                self.next[company] = n + 1
                if n and self.rng.random() < 0.05:        # WhatsApp sends one again, now and then
                    self._push(http, company, self.rng.randrange(n))

    def _push(self, http: Http, company: str, n: int) -> bool:
        try:
            code, _, _ = http.post("/api/simulator/inbound", {"companyId": company, "from": "79001234567",
                                                              "text": f"{company} {n}", "id": f"{company}-{n:05d}"},
                                   timeout=5)
        except Exception:          # refused, reset, cut short: the gateway is down
            code = 0
        if code != 200:
            self.up.wait(0.2) if self.up.is_set() else None
            return False
        with self.lock:
            self.pushed += 1
        return True

    def gateway_down(self) -> None:
        self.up.clear()
        for c in COMPANIES:
            self.redeliver[c] = True

    def gateway_up(self, http: Http) -> None:
        self.http = http
        self.up.set()


def test_sigkill_mid_burst_twice_loses_no_inbound_message(tmp_path):
    receiver = Receiver(secret=SECRET)
    data_dir = tmp_path / "gw"
    gateway, http = start_gateway(data_dir, receiver)
    whatsapp = WhatsApp()
    pushers = []
    try:
        for company, phone in COMPANIES.items():
            relink(http, company, phone)
        whatsapp.gateway_up(http)
        pushers = [threading.Thread(target=whatsapp.run, args=(c,), daemon=True) for c in COMPANIES]
        for p in pushers:
            p.start()
        for kill_at in (700, 1500):
            assert wait_until(lambda: whatsapp.pushed >= kill_at, timeout=120)
            gateway.proc.send_signal(signal.SIGKILL)
            whatsapp.gateway_down()
            gateway.kill()
            gateway, http = start_gateway(data_dir, receiver)
            for company, phone in COMPANIES.items():
                relink(http, company, phone)
            whatsapp.gateway_up(http)
        for p in pushers:
            p.join(180)
        assert not any(p.is_alive() for p in pushers)
        expected = {f"{c}-{n:05d}" for c in COMPANIES for n in range(PER_COMPANY)}

        def got_all(_requests) -> bool:
            return {p["data"]["id"] for p in receiver.delivered()} >= expected
        receiver.wait(got_all, timeout=120)
        delivered = receiver.delivered()
        assert receiver.bad_signatures == 0
        assert all(p["event"] == "message" for p in delivered)
        ids = [p["data"]["id"] for p in delivered]
        assert set(ids) == expected                                          # every id at least once
        first_seen = list(dict.fromkeys(ids))                                 # exactly once after dedupe by id
        assert len(first_seen) == len(expected)
        for company in COMPANIES:                                            # in order per company
            mine = [i for i in first_seen if i.startswith(company + "-")]
            assert mine == sorted(mine), company
        # a repeat can only be a delivery the receiver got but whose cursor a kill lost: same event id
        by_id = collections.defaultdict(set)
        for p in delivered:
            by_id[p["data"]["id"]].add(p["id"])
        assert all(len(seqs) == 1 for seqs in by_id.values()), "a message was logged twice"
        print(f"\n{whatsapp.pushed} pushes, {len(delivered)} deliveries, {len(delivered) - len(expected)} repeats")
    finally:
        whatsapp.up.set()
        whatsapp.next = {c: PER_COMPANY for c in COMPANIES}
        gateway.kill()
        receiver.close()
