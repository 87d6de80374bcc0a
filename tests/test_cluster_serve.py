"""`serve --redis-url` end to end: two gateway processes form a cluster, either answers
for every company, and `switchboard cluster drain` moves one's companies to the other;
`serve` without Redis stays embedded."""
from __future__ import annotations

import subprocess

import pytest

from .support.http import ADMIN_KEY, COMMAND, Http, Served, clean_env, wait_until
from .support.servers import RedisServer


@pytest.fixture
def server(tmp_path):
    s = RedisServer(tmp_path)
    yield s
    s.stop()


def test_two_serve_processes_share_the_companies_and_drain_moves_them(server, tmp_path):
    env = clean_env(SWITCHBOARD_ADMIN_KEY=ADMIN_KEY, REDIS_URL=server.url)
    a = Served(tmp_path / "a" / "data", "--transport", "simulated", "--instance-id", "a", "--lease-ttl", "3",
               env=env)
    b = None
    try:
        b = Served(tmp_path / "b" / "data", "--transport", "simulated", "--instance-id", "b", "--lease-ttl", "3",
                   env=env)
        assert "cluster instance a" in a.banner
        http_a, http_b = Http(a.url), Http(b.url)
        assert wait_until(lambda: {m["id"] for m in http_a.get("/api/cluster")[2]["members"]} == {"a", "b"}
                          and all(m["url"] for m in http_a.get("/api/cluster")[2]["members"]), 10)
        companies = [f"s{i}" for i in range(8)]
        for company in companies:
            status, _, body = http_a.post("/api/whatsapp/sessions", {"companyId": company})
            assert status == 201, body
        holders = lambda: (http_a.get("/api/cluster")[2]["sessions"], http_b.get("/api/cluster")[2]["sessions"])  # noqa: E731
        assert wait_until(lambda: sum(holders()) == len(companies), 10), holders()
        assert all(n > 0 for n in holders()), holders()                # spread over both
        for company in companies:                                      # either answers for any company
            assert http_b.get(f"/api/whatsapp/sessions/{company}/status")[0] == 200
        result = subprocess.run([*COMMAND, "cluster", "drain", "--url", a.url, "--api-key", ADMIN_KEY],
                                env=clean_env(), capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        assert "instance a is draining" in result.stdout
        assert wait_until(lambda: holders() == (0, len(companies)), 15), holders()
        for company in companies:
            assert http_a.get(f"/api/whatsapp/sessions/{company}/status")[0] == 200
    finally:
        for served in (a, b):
            if served is not None:
                code, err = served.stop()
                assert code == 0, err


def test_serve_without_redis_is_embedded_and_has_no_cluster_routes(tmp_path):
    served = Served(tmp_path / "data", "--transport", "simulated", env=clean_env(SWITCHBOARD_ADMIN_KEY=ADMIN_KEY))
    try:
        assert "embedded" in served.banner
        assert Http(served.url).get("/api/cluster")[0] == 404
    finally:
        served.stop()
