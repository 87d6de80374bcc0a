"""neonize's credentials in PostgreSQL, so that whichever instance takes a company over
finds its linked device there (distributed mode; `--store-url postgres://...`).

neonize opens a PostgreSQL store when its database name starts with `postgres` (the DSN
goes to whatsmeow's sqlstore through lib/pq), and then resumes `GetFirstDevice()`: the
first device *in the database*. With one database for many companies that would hand
one company another's account. So every company gets a database of its own on the
configured server (the URL names the server, the user and a database to manage the
others from); the only device its child can find is the company's own.

Not one *schema* per company: tried first (`search_path=<schema>` in the DSN), it fails
for the second company with neonize 0.5.2, because whatsmeow's upgrade looks for its
version table in every schema of the database and then reads it in its own ("relation
whatsmeow_version does not exist"). tests/test_neonize_pgstore.py shows both.

Database names are a hash of the company id (ids differ by case, folded names would
not), recorded in `switchboard_stores` in the managing database so an operator can tell
which is whose. The user needs CREATEDB. The gateway itself never imports neonize; it
only creates and drops databases (psycopg).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

log = logging.getLogger("switchboard.neonize")

_MAP_TABLE = "switchboard_stores"


def database_for(company_id: str) -> str:
    """The company's database: `sb_` and 24 hex digits of a hash of its id."""
    return "sb_" + hashlib.blake2b(company_id.encode(), digest_size=12).hexdigest()


def validate_store_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise ValueError("the credentials store must be a postgres://user:password@host:port/db URL")
    return url


def company_dsn(url: str, company_id: str) -> str:
    """The DSN a company's child opens: the store URL with the company's database."""
    parts = urlsplit(url)
    # neonize hands a name to lib/pq only when it starts with "postgres"
    return urlunsplit(("postgres", parts.netloc, "/" + database_for(company_id), urlencode(parse_qsl(parts.query)),
                       ""))


class PostgresStore:
    """Makes and drops the companies' databases. Thread-safe."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = validate_store_url(url)
        self.connect_timeout = connect_timeout
        self._ready: set[str] = set()
        self._lock = threading.Lock()

    def prepare(self, company_id: str) -> str:
        """Make sure the company's database exists; its DSN. Raises on an unreachable
        store (that connection attempt then fails, and is retried with backoff)."""
        with self._lock:
            known = company_id in self._ready
        if not known:
            import psycopg
            name = database_for(company_id)
            with self._connect() as db:
                db.execute(f"CREATE TABLE IF NOT EXISTS {_MAP_TABLE} "
                           "(company_id text PRIMARY KEY, database_name text NOT NULL UNIQUE)")
                db.execute(f"INSERT INTO {_MAP_TABLE} (company_id, database_name) VALUES (%s, %s) "
                           "ON CONFLICT (company_id) DO NOTHING", (company_id, name))
                if db.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    try:
                        db.execute(f'CREATE DATABASE "{name}"')
                    except psycopg.errors.DuplicateDatabase:
                        pass                     # another instance made it a moment ago
            with self._lock:
                self._ready.add(company_id)
        return company_dsn(self.url, company_id)

    def forget(self, company_id: str) -> None:
        """Delete the company's credentials: its whole database."""
        with self._connect() as db:
            db.execute(f'DROP DATABASE IF EXISTS "{database_for(company_id)}" WITH (FORCE)')
            if db.execute("SELECT to_regclass(%s)", (_MAP_TABLE,)).fetchone()[0] is not None:
                db.execute(f"DELETE FROM {_MAP_TABLE} WHERE company_id = %s", (company_id,))
        with self._lock:
            self._ready.discard(company_id)

    def _connect(self):
        import psycopg            # only where a store is configured
        return psycopg.connect(self.url, connect_timeout=max(1, int(self.connect_timeout)), autocommit=True)
