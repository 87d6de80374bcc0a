"""API keys: one admin key, and tenant keys that see only their own company.

Keys travel as `X-Api-Key: KEY` or `Authorization: Bearer KEY`. Nothing stores a key in
the clear: the admin key is kept in memory as its SHA-256 digest, tenant keys are kept
in `<data>/api-keys.json` (mode 0600) as SHA-256 digests of random 32-byte tokens, and
every check compares digests with `hmac.compare_digest`. The digests are cached in memory,
so a request costs one SHA-256 and one dictionary lookup.

A tenant key looks like `sbk_<id>_<secret>`: the id (public, shown by `GET /api/keys`)
finds the record, the digest of the whole key must match it.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from switchboard.actors.clock import now_iso
from switchboard.actors.phone import validate_company_id

TENANT_PREFIX = "sbk_"
MIN_ADMIN_KEY_LENGTH = 16
_DUMMY_DIGEST = hashlib.sha256(b"no such key").digest()


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the admin (company_id None) or a tenant key bound to one company."""
    admin: bool
    company_id: str | None
    key_id: str

    def may_access(self, company_id: str) -> bool:
        return self.admin or self.company_id == company_id


ADMIN = Principal(admin=True, company_id=None, key_id="admin")


def key_digest(key: str) -> bytes:
    """A key's SHA-256, the only form in which keys are kept."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


_digest = key_digest


def presented_key(environ: dict[str, Any]) -> str | None:
    """The key from `X-Api-Key` or `Authorization: Bearer`, or None."""
    key = environ.get("HTTP_X_API_KEY")
    if key:
        return key.strip()
    auth = environ.get("HTTP_AUTHORIZATION")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class ApiKeys:
    def __init__(self, path: Path | str, admin_key: str) -> None:
        if not isinstance(admin_key, str) or len(admin_key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(f"the admin key must be at least {MIN_ADMIN_KEY_LENGTH} characters")
        self.path = Path(path)
        self._admin = _digest(admin_key)
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        self._digests: dict[str, tuple[bytes, Principal]] = {}
        self._revoke_listeners: list = []
        self._load()

    # ---- checking ---------------------------------------------------------------------

    def authenticate(self, key: str | None) -> Principal | None:
        if not key:
            return None
        digest = _digest(key)
        if key.startswith(TENANT_PREFIX):
            key_id = key[len(TENANT_PREFIX):].split("_", 1)[0]
            known = self._digests.get(key_id)
            if hmac.compare_digest(digest, known[0] if known is not None else _DUMMY_DIGEST) and known:
                return known[1]
        if hmac.compare_digest(digest, self._admin):
            return ADMIN
        return None

    def lookup(self, key_id: str) -> tuple[bytes, Principal] | None:
        """The digest and principal of a live key by its id ("admin" for the admin key): a
        dashboard cookie names its key by id, and a revoked key is no longer found."""
        if key_id == ADMIN.key_id:
            return self._admin, ADMIN
        return self._digests.get(key_id)

    def on_revoke(self, callback) -> None:
        """Call `callback(key_id)` after a key is revoked (to end what it holds open)."""
        self._revoke_listeners.append(callback)

    # ---- managing tenant keys (admin endpoints) ----------------------------------------

    def create(self, company_id: str, name: str | None = None) -> tuple[dict[str, Any], str]:
        """A new tenant key for `company_id`: (its public record, the key, shown only now)."""
        validate_company_id(company_id)
        key_id = secrets.token_hex(8)
        key = f"{TENANT_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = {"id": key_id, "companyId": company_id, "name": name,
                  "createdAt": now_iso(),
                  "sha256": _digest(key).hex()}
        with self._lock:
            records = {**self._records, key_id: record}
            self._write(records)
            self._set(records)
        return self._public(record), key

    def list(self, company_id: str | None = None) -> list[dict[str, Any]]:
        return [self._public(r) for r in self._records.values()
                if company_id is None or r["companyId"] == company_id]

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            if key_id not in self._records:
                return False
            records = {k: v for k, v in self._records.items() if k != key_id}
            self._write(records)
            self._set(records)
        for callback in list(self._revoke_listeners):
            callback(key_id)
        return True

    # ---- storage --------------------------------------------------------------------

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        return {"id": record["id"], "companyId": record["companyId"], "name": record.get("name"),
                "createdAt": record.get("createdAt")}

    def _set(self, records: dict[str, dict[str, Any]]) -> None:
        self._records = records
        self._digests = {k: (bytes.fromhex(r["sha256"]), Principal(False, r["companyId"], k))
                         for k, r in records.items()}

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        records = {}
        for record in data.get("keys", []) if isinstance(data, dict) else []:
            try:
                validate_company_id(record["companyId"])
                bytes.fromhex(record["sha256"])
                records[str(record["id"])] = record
            except (KeyError, TypeError, ValueError):
                continue
        self._set(records)

    def _write(self, records: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"keys": list(records.values())}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def load_or_create_admin_key(data_dir: Path | str, env_key: str | None = None) -> tuple[str, Path | None, bool]:
    """The admin key: from the environment, else from `<data>/admin.key`, else a new one
    written there with mode 0600. Returns (key, file or None, generated now)."""
    if env_key:
        if len(env_key) < MIN_ADMIN_KEY_LENGTH:
            raise ValueError(f"SWITCHBOARD_ADMIN_KEY must be at least {MIN_ADMIN_KEY_LENGTH} characters")
        return env_key, None, False
    path = Path(data_dir) / "admin.key"
    try:
        key = path.read_text().strip()
        if len(key) >= MIN_ADMIN_KEY_LENGTH:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
            return key, path, False
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    tmp = path.with_name("admin.key.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.replace(tmp, path)
    return key, path, True


def load_or_create_secret(path: Path) -> bytes:
    """A 32-byte signing secret kept in `path` (mode 0600), so that signed QR page links and
    dashboard cookies stay valid across a gateway restart."""
    try:
        secret = bytes.fromhex(path.read_text().strip())
        if len(secret) >= 32:
            return secret
    except (FileNotFoundError, ValueError):
        pass
    secret = secrets.token_bytes(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    os.replace(tmp, path)
    return secret


COOKIE_NAME = "sb_session"
CSRF_HEADER = "HTTP_X_CSRF_TOKEN"
_COOKIE_VERSION = "sbs1"


class WebSessions:
    """Dashboard sign-in without a key in any URL or script: the browser trades its key once
    (`POST /api/dashboard/session`) for a signed cookie (HttpOnly, SameSite=Strict) that
    names the key by id, binds to the key's digest and expires. Each request re-checks the
    key, so a revoked tenant key's cookie stops working at once. State-changing requests
    made with the cookie must also carry `X-CSRF-Token` (derived from the cookie): another
    site can make a browser send the cookie, never that header (no CORS is allowed)."""

    def __init__(self, secret: bytes, lifetime: float = 12 * 3600.0) -> None:
        self._secret = secret
        self.lifetime = lifetime

    def issue(self, principal: Principal, digest: bytes, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.lifetime)
        body = f"{_COOKIE_VERSION}.{principal.key_id}.{expires}.{self._mac('key', digest.hex(), 12)}"
        return f"{body}.{self._mac('cookie', body, 24)}"

    def principal(self, cookie: str | None, keys: ApiKeys, now: float | None = None) -> Principal | None:
        """The live principal of a valid, unexpired cookie whose key still exists."""
        if not cookie or len(cookie) > 300:
            return None
        parts = cookie.split(".")
        if len(parts) != 5 or parts[0] != _COOKIE_VERSION:
            return None
        _, key_id, expires, fingerprint, signature = parts
        body = ".".join(parts[:4])
        if not hmac.compare_digest(signature.encode(), self._mac("cookie", body, 24).encode()):
            return None
        if not (expires.isascii() and expires.isdigit()) or int(expires) < (now or time.time()):
            return None
        found = keys.lookup(key_id)
        if found is None or not hmac.compare_digest(fingerprint.encode(),
                                                    self._mac("key", found[0].hex(), 12).encode()):
            return None
        return found[1]

    def csrf_token(self, cookie: str) -> str:
        return self._mac("csrf", cookie, 24)

    def csrf_ok(self, cookie: str, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode("utf-8", "replace"),
                                                       self.csrf_token(cookie).encode())

    def _mac(self, purpose: str, payload: str, size: int) -> str:
        mac = hmac.new(self._secret, f"{purpose}:{payload}".encode("utf-8", "surrogatepass"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:size]).decode().rstrip("=")


def cookie_value(environ: dict[str, Any]) -> str | None:
    """The dashboard cookie from the Cookie header (parsed by hand: a malformed header of
    any alphabet must read as "no cookie", never raise)."""
    header = environ.get("HTTP_COOKIE")
    if not header or len(header) > 8192:
        return None
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE_NAME:
            return value.strip().strip('"') or None
    return None


class PageTokens:
    """Short-lived signed links for the browser QR page (`/qr/<id>?token=...`), so an API
    key never has to travel in a URL. A token is bound to one company and expires."""

    def __init__(self, secret: bytes | None = None, lifetime: float = 900.0) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime

    def issue(self, company_id: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + self.lifetime)
        payload = f"{company_id}.{expires}"
        return f"{expires}.{self._sign(payload)}"

    def check(self, company_id: str, token: str | None, now: float | None = None) -> bool:
        if not token or "." not in token:
            return False
        expires, _, signature = token.partition(".")
        if not (expires.isascii() and expires.isdigit()) or int(expires) < (now or time.time()):
            return False
        return hmac.compare_digest(signature, self._sign(f"{company_id}.{expires}"))

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")
