"""neonize credentials in PostgreSQL: a real neonize child against a throwaway PostgreSQL
(initdb + postgres on a free port, never the machine's own) keeps each company's store in
a database of its own, so no company can resume another's device ("the first device in
the database"); forget drops the company's database and nothing else. And why not one
schema per company: whatsmeow's upgrade in neonize 0.5.2 is not schema-aware."""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from switchboard.actors.connection import Disconnected
from switchboard.actors.transports.neonize import NeonizeConnection, NeonizeTransport
from switchboard.actors.transports.neonize.pgstore import company_dsn, database_for, validate_store_url

from .support.neonize import Recorder, refused_proxy_url
from .support.servers import PostgresServer

psycopg = pytest.importorskip("psycopg")


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


def in_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{database}").geturl()


def tables(url: str, schema: str = "public") -> set[str]:
    with psycopg.connect(url) as db:
        rows = db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                          (schema,)).fetchall()
    return {r[0] for r in rows}


def databases(url: str) -> set[str]:
    with psycopg.connect(url) as db:
        return {r[0] for r in db.execute("SELECT datname FROM pg_database").fetchall()}


def run_child(conn: NeonizeConnection, rec: Recorder) -> Disconnected:
    conn.open()
    event = rec.wait_for(lambda e: isinstance(e, Disconnected), timeout=60)   # offline: a retryable failure
    conn.close().result(timeout=15)
    return event


def test_each_company_gets_its_own_database_and_forget_drops_only_its_own(postgres, tmp_path):
    transport = NeonizeTransport(proxy=refused_proxy_url(), store_url=postgres.url)
    try:
        for company in ("Acme", "acme"):                  # ids that differ only by case
            rec = Recorder()
            conn = transport.connect(company, tmp_path / company, rec)
            assert conn.db_path == company_dsn(postgres.url, company)
            event = run_child(conn, rec)
            assert "dial" in event.reason and "database" not in event.reason, event.reason
        assert database_for("Acme") != database_for("acme")
        for company in ("Acme", "acme"):
            assert "whatsmeow_device" in tables(in_database(postgres.url, database_for(company)))
            assert not (tmp_path / company / "whatsapp.sqlite3").exists()      # nothing on local disk
        assert "whatsmeow_device" not in tables(postgres.url)
        transport.forget("Acme", tmp_path / "Acme")
        assert database_for("Acme") not in databases(postgres.url)
        assert database_for("acme") in databases(postgres.url)
        with psycopg.connect(postgres.url) as db:
            assert db.execute("SELECT company_id FROM switchboard_stores").fetchall() == [("acme",)]
    finally:
        transport.close()


def test_one_schema_per_company_in_one_database_breaks_the_second_company(postgres, tmp_path):
    """The layout not chosen, pinned: whatsmeow finds the first company's version table
    in another schema and then cannot read it in its own."""
    with psycopg.connect(postgres.url, autocommit=True) as db:
        db.execute("CREATE DATABASE shared_schemas")
        shared = in_database(postgres.url, "shared_schemas")
    with psycopg.connect(shared, autocommit=True) as db:
        db.execute("CREATE SCHEMA one")
        db.execute("CREATE SCHEMA two")
    reasons = []
    for schema in ("one", "two"):
        rec = Recorder()
        conn = NeonizeConnection(schema, tmp_path / schema, rec, proxy=refused_proxy_url())
        conn.db_path = f"{shared}&search_path={schema}"
        reasons.append(run_child(conn, rec).reason)
    assert "dial" in reasons[0]
    assert "whatsmeow_version" in reasons[1], reasons[1]


def test_an_unreachable_store_fails_the_attempt_not_the_gateway(tmp_path):
    transport = NeonizeTransport(store_url="postgres://sb@127.0.0.1:1/postgres?sslmode=disable")
    with pytest.raises(psycopg.OperationalError):
        transport.connect("acme", tmp_path / "acme", Recorder())      # the Connector retries with backoff
    transport.close()


def test_store_urls_are_checked():
    with pytest.raises(ValueError):
        validate_store_url("mysql://x@h/db")
    dsn = company_dsn("postgresql://u:p@h:5/db?sslmode=disable", "x")
    assert dsn.startswith("postgres://u:p@h:5/sb_") and dsn.endswith("?sslmode=disable")
