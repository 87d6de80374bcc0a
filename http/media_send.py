"""Media sends from a URL (issue 13): `{"to", "type", "url", "caption", "fileName"}` on
POST .../messages. The gateway fetches the URL itself (media_fetch.py: limits, public
addresses only, no redirects), stores the file in `<data>/<companyId>/media/<sha256>`
(content-addressed, so a retry stores nothing twice) and sends a Media payload that names
that local file: the outbox carries it like text, durable and idempotent, and the
transport is only ever given the local file.

Uploads (`upload_payload`): multipart/form-data, up to HttpSettings.upload_limit (the
plugin allows that only on a route declared with `uploads=True`, and only for multipart).
Not done yet: downloads of inbound media, and a retention limit for stored files.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from switchboard.actors.payload import MAX_TEXT, MEDIA_LIMITS, Media
from switchboard.actors.recipients import parse_recipient

from bottle import request

from .media_fetch import FetchRefused, MediaFetcher
from .plumbing import ApiError, field
from .state import AppState

_MIME = {"image": ("image/jpeg", "image/png", "image/webp"),
         "video": ("video/mp4", "video/3gpp"),
         "audio": ("audio/ogg", "audio/mpeg", "audio/mp4", "audio/aac", "audio/amr", "audio/opus")}


def mime_ok(media_type: str):
    allowed = _MIME.get(media_type)
    return lambda mime: bool(mime) and (allowed is None or mime in allowed)     # documents: any type


def fetcher(ctx: AppState) -> MediaFetcher:
    """The app's fetcher (a test may set `ctx.media_fetcher` to one that allows loopback)."""
    existing = getattr(ctx, "media_fetcher", None)
    if existing is None:
        existing = ctx.media_fetcher = MediaFetcher()
    return existing


def media_payload(ctx: AppState, company_id: str, payload: dict[str, Any], to: str) -> Media:
    media_type = payload.get("type")
    if media_type not in MEDIA_LIMITS:
        raise ApiError(400, f"'type' must be one of {', '.join(MEDIA_LIMITS)} (or text, with 'message')")
    if payload.get("message") is not None or payload.get("template") is not None:
        raise ApiError(400, "a media send takes 'url' (and 'caption'), not 'message' or 'template'")
    caption = field(payload, "caption", required=False, max_len=MAX_TEXT) or ""
    file_name = field(payload, "fileName", required=False, max_len=255) or ""
    if "/" in file_name or "\\" in file_name or file_name in (".", ".."):
        raise ApiError(400, "'fileName' must be a plain file name")
    ctx.handle(company_id)                    # 404 for an unknown session, before fetching anything
    parse_recipient(to)                       # a bad recipient fetches and stores nothing
    try:
        got = fetcher(ctx).fetch(payload.get("url"), max_bytes=MEDIA_LIMITS[media_type], mime_ok=mime_ok(media_type))
    except FetchRefused as exc:
        raise ApiError(exc.status, str(exc)) from None
    if not got.data:
        raise ApiError(422, "the URL answered an empty file")
    digest = hashlib.sha256(got.data).hexdigest()
    try:
        path = _store(ctx.board.data_dir / company_id / "media", digest, got.data)
    except OSError as exc:
        raise ApiError(503, f"could not store the file: {exc.strerror or exc}", {"Retry-After": "5"}) from None
    return Media(media_type, str(path), digest, got.mime, len(got.data), caption,
                 file_name or (got.file_name if media_type == "document" else ""))


def upload_payload(ctx: AppState, company_id: str) -> tuple[str, Media]:
    """A multipart upload: `to`, an optional `caption`, a `file` part (its kind from its
    content type, or a `type` field) and, for documents, its file name. (recipient, payload)."""
    forms, files = request.forms, request.files
    upload = files.get("file")
    to = forms.getunicode("to")
    if not to:
        raise ApiError(400, "'to' is required (a form field)")
    if upload is None:
        raise ApiError(400, "a 'file' part is required")
    mime = (upload.content_type or "").split(";", 1)[0].strip().lower()
    media_type = forms.getunicode("type") or _kind_of(mime)
    if media_type not in MEDIA_LIMITS:
        raise ApiError(400, f"'type' must be one of {', '.join(MEDIA_LIMITS)}")
    if not mime_ok(media_type)(mime):
        raise ApiError(415, f"content type {mime or 'missing'!r} is not allowed for {media_type}")
    caption = forms.getunicode("caption") or ""
    if len(caption) > MAX_TEXT:
        raise ApiError(400, f"'caption' is longer than {MAX_TEXT} characters")
    raw_name = forms.getunicode("fileName") or upload.raw_filename or ""
    file_name = raw_name.replace("\\", "/").rsplit("/", 1)[-1][:255]       # the name only, never a path
    ctx.handle(company_id)
    parse_recipient(to)                       # a bad recipient stores nothing (the actor checks it again)
    data = upload.file.read(MEDIA_LIMITS[media_type] + 1)
    if len(data) > MEDIA_LIMITS[media_type]:
        raise ApiError(413, f"the file is more than {MEDIA_LIMITS[media_type]} bytes, the limit for {media_type}")
    if not data:
        raise ApiError(400, "the 'file' part is empty")
    digest = hashlib.sha256(data).hexdigest()
    try:
        path = _store(ctx.board.data_dir / company_id / "media", digest, data)
    except OSError as exc:
        raise ApiError(503, f"could not store the file: {exc.strerror or exc}", {"Retry-After": "5"}) from None
    return to, Media(media_type, str(path), digest, mime, len(data), caption,
                     file_name if media_type == "document" else "")


def _kind_of(mime: str) -> str:
    for media_type, allowed in _MIME.items():
        if mime in allowed:
            return media_type
    return "document"


def _store(directory: Path, digest: str, data: bytes) -> Path:
    """Write the file whole (temp file, fsync, rename), once per content."""
    path = directory / digest
    if path.exists():
        return path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{digest}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
