"""Every inbound message reaches the webhook across SIGKILLs of the gateway, once after dedupe by id,
in order per company, and no accepted outbound message is lost; the receiver checks every signature.

`switchboard simulator` runs as its own process (the WhatsApp that holds a message until the
client acknowledges it) and `serve --transport simulated --simulator-url ...` is killed with
SIGKILL twice in the middle of a burst of a few thousand inbound messages over four companies,
while WhatsApp redelivers some of them and a client sends with idempotency keys. The old design
lost inbound messages here for good: their ids were in the dedupe file before their events were
anywhere durable, so the redelivery was dropped.
"""
from __future__ import annotations

import collections
import random
import signal
import threading
import time

import pytest

from .support.http import Http, wait_until
from .support.receiver import Receiver
from .support.simulator import GATEWAY_KEY, SimulatorProcess, serve_linked

pytestmark = pytest.mark.timeout(300)
SECRET = "kill-test-webhook-secret"
COMPANIES = {"acme": "79990000001", "globex": "79990000002", "initech": "79990000003", "umbrella": "79990000004"}
PER_COMPANY = 600          # 2,400 inbound messages
SENDS_PER_COMPANY = 40     # outbound, with idempotency keys
RECIPIENT = "79005550000"


def start_gateway(data_dir, simulator, receiver):
    gateway = serve_linked(data_dir, simulator, WEBHOOK_URL=receiver.url, WEBHOOK_SECRET=SECRET,
                           WEBHOOK_EVENTS="message", WHATSAPP_RATE_LIMIT_MAX="100000",
                           WHATSAPP_RATE_LIMIT_PER_RECIPIENT_MAX="100000")
    return gateway, Http(gateway.url, GATEWAY_KEY)


def status(http: Http, company: str) -> dict:
    try:
        return http.get(f"/api/whatsapp/sessions/{company}/status")[2]
    except Exception:
        return {}


class Client:
    """Sends with an Idempotency-Key and retries a send until it has a definite answer (2xx),
    as a careful client does; the gateway's URL changes when it is restarted."""

    def __init__(self) -> None:
        self.http: Http | None = None
        self.accepted: dict[str, str] = {}         # key -> text
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self, company: str) -> None:
        for n in range(SENDS_PER_COMPANY):
            key, text = f"out-{company}-{n}", f"out {company} {n}"
            while not self.stop.is_set():
                try:
                    code, _, _ = self.http.post(f"/api/whatsapp/sessions/{company}/messages",
                                                {"to": RECIPIENT, "message": text},
                                                headers={"Idempotency-Key": key}, timeout=10)
                except Exception:
                    code = 0
                if code in (200, 202):
                    with self.lock:
                        self.accepted[key] = text
                    break
                self.stop.wait(0.1)
            self.stop.wait(0.05)


def test_sigkill_mid_burst_twice_loses_no_inbound_message_and_no_accepted_send(tmp_path):
    receiver = Receiver(secret=SECRET)
    simulator = SimulatorProcess(tmp_path / "sim")
    data_dir = tmp_path / "gw"
    gateway, http = start_gateway(data_dir, simulator, receiver)
    client = Client()
    threads: list[threading.Thread] = []
    rng = random.Random(9)
    pushed = collections.Counter()
    try:
        for company, phone in COMPANIES.items():
            assert http.post("/api/whatsapp/sessions", {"companyId": company})[0] in (200, 201)
            assert wait_until(lambda: status(http, company).get("status") == "qr", timeout=15)
            simulator.client.scan(company, phone)
            assert wait_until(lambda: status(http, company).get("status") == "connected", timeout=15)
        client.http = http
        threads = [threading.Thread(target=client.run, args=(c,), daemon=True) for c in COMPANIES]
        for t in threads:
            t.start()
        kills = {700, 1500}
        for n in range(PER_COMPANY):
            for company in COMPANIES:
                simulator.client.deliver_inbound(company, "79001234567", f"{company} {n}", f"{company}-{n:05d}")
                pushed[company] += 1
                if n and rng.random() < 0.05:            # WhatsApp sends one again, now and then
                    again = rng.randrange(n)
                    simulator.client.deliver_inbound(company, "79001234567", f"{company} {again}",
                                                     f"{company}-{again:05d}")
            if (n + 1) * len(COMPANIES) in kills:
                gateway.proc.send_signal(signal.SIGKILL)          # mid-burst: the service keeps taking pushes
                gateway.kill()
                gateway, http = start_gateway(data_dir, simulator, receiver)
                client.http = http
        for company in COMPANIES:          # the restarted gateway came back by itself, without a QR
            assert wait_until(lambda: status(http, company).get("status") == "connected", timeout=30), company
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        expected = {f"{c}-{n:05d}" for c in COMPANIES for n in range(PER_COMPANY)}
        receiver.wait(lambda _r: {p["data"]["id"] for p in receiver.delivered()} >= expected, timeout=120)
        delivered = receiver.delivered()
        assert receiver.bad_signatures == 0 and all(p["event"] == "message" for p in delivered)
        ids = [p["data"]["id"] for p in delivered]
        assert set(ids) == expected                                          # every id at least once
        first_seen = list(dict.fromkeys(ids))                                 # exactly once after dedupe by id
        assert len(first_seen) == len(expected)
        for company in COMPANIES:                                            # in order per company
            mine = [i for i in first_seen if i.startswith(company + "-")]
            assert mine == sorted(mine), company
        seqs = collections.defaultdict(set)
        for p in delivered:
            seqs[p["data"]["id"]].add(p["id"])
        assert all(len(s) == 1 for s in seqs.values()), "a message was logged twice"
        # outbound: every accepted send reached the phone; none twice
        assert len(client.accepted) == len(COMPANIES) * SENDS_PER_COMPANY
        arrived = wait_until(lambda: {m["text"] for m in simulator.client.messages(RECIPIENT)}
                             >= set(client.accepted.values()), timeout=60)
        missing = set(client.accepted.values()) - {m["text"] for m in simulator.client.messages(RECIPIENT)}
        assert arrived, f"accepted sends that never arrived: {sorted(missing)}; statuses: " + \
            str({c: status(http, c) for c in COMPANIES})
        got = collections.Counter(m["text"] for m in simulator.client.messages(RECIPIENT))
        twice = {text: n for text, n in got.items() if n > 1}
        assert not twice, f"sent more than once: {twice}"
        print(f"\n{sum(pushed.values())} inbound pushes, {len(delivered)} webhook deliveries "
              f"({len(delivered) - len(expected)} repeats after the kills), {len(client.accepted)} sends")
    finally:
        client.stop.set()
        for t in threads:
            t.join(10)
        gateway.kill()
        simulator.stop()
        receiver.close()
