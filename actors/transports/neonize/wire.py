"""The pipe's vocabulary between the gateway and a neonize child, defined once for both ends.

Everything on the pipe is picklable plain data:
  parent -> child: (req_id, op, args), op one of the commands below; req_id 0 for STOP.
                   Every request's args carry "not_after" (Unix s): the child never starts
                   it later than that (the parent has given up on it by then).
  child -> parent: dicts with a "type" key, one of the types below. A REPLY answers one
                   request: {"type": REPLY, "req_id", "ok": True, "result": {...}} or
                   {"type": REPLY, "req_id", "ok": False, "code": <error code>, "error": text}.
                   STARTED {"type": STARTED, "req_id"} comes first when the child hands the
                   request to Go: from then on it may reach WhatsApp (a send is UNCONFIRMED
                   if no reply follows); a request that never STARTED provably did not.

The error code is what the gateway decides on (retry or not); the text is for people.
This module imports nothing, so either side may use it.
"""
from __future__ import annotations

# ---- commands (parent -> child) ----------------------------------------------------------
SEND = "send"                          # args: jid, payload (a Payload.as_record() dict)
PAIR_PHONE = "pair_phone"              # args: phone (digits)
LOGOUT = "logout"
STOP = "stop"                          # args: grace (seconds for a clean disconnect)

# ---- what the child says (child -> parent) -------------------------------------------------
CONNECTING = "connecting"              # the child is up: pid, uuid
QR = "qr"                              # a live QR code: code
QR_CODES = "qr_codes"                  # neonize's buffered QR list (ignored)
LOGIN_EVENT = "login_event"            # the QR phase ended: event, see LOGIN_* below
PAIRED = "paired"                      # phone, jid, platform, business_name
PAIR_ERROR = "pair_error"              # error
CONNECTED = "connected"                # phone (of this device, "" if unknown)
DISCONNECTED = "disconnected"          # the socket dropped; whatsmeow reconnects by itself
KEEPALIVE_TIMEOUT = "keepalive_timeout"    # error_count, last_success (Unix s)
KEEPALIVE_RESTORED = "keepalive_restored"
LOGGED_OUT = "logged_out"              # reason (a ConnectFailureReason name), on_connect
STREAM_REPLACED = "stream_replaced"
TEMPORARY_BAN = "temporary_ban"        # code (a TempBanReason name), expire_s
CONNECT_FAILURE = "connect_failure"    # WhatsApp refused: reason (name), status, message
CLIENT_OUTDATED = "client_outdated"
CONNECT_FAILED = "connect_failed"      # the initial connect raised (dial, DNS): error; exit 4
STREAM_ERROR = "stream_error"          # code
MESSAGE = "message"                    # see mapping.normalise_message
RECEIPT = "receipt"                    # ids, chat, sender, kind, timestamp, from_me
STOPPED = "stopped"                    # connect() returned after a stop
REPLY = "reply"
STARTED = "started"                    # req_id: the request went into Go (see above)

# whatsmeow's QR channel results (qrchan.go) as neonize's login callback reports them.
LOGIN_SUCCESS = "success"                          # PairSuccess: the channel closed
LOGIN_TIMEOUT = "timeout"                          # codes ran out, or the socket dropped
LOGIN_ERROR = "error"                              # PairError / PairPasskeyError
LOGIN_UNEXPECTED = "err-unexpected-state"          # Connected/LoggedOut/ban/failure during QR
LOGIN_CLIENT_OUTDATED = "err-client-outdated"
LOGIN_NO_MULTIDEVICE = "err-scanned-without-multidevice"   # the channel stays open
LOGIN_PASSKEY_REQUEST = "passkey-request"          # the phone wants a passkey; neonize
LOGIN_PASSKEY_CONFIRMATION = "passkey-confirmation"    # has no API to answer either

# whatsmeow's ConnectFailureReason numbers (types/events/events.go) by neonize's enum
# names (its enum only has indices, and lacks 413-418: those arrive as CODE_<n>); "status".
FAILURE_STATUS = {"GENERIC": 400, "LOGGED_OUT": 401, "TEMP_BANNED": 402, "MAIN_DEVICE_GONE": 403,
                  "CLIENT_OUTDATED": 405, "UNKNOWN_LOGOUT": 406, "BAD_USER_AGENT": 409,
                  "CAT_EXPIRED": 413, "CAT_INVALID": 414, "NOT_FOUND": 415, "CLIENT_UNKNOWN": 418,
                  "INTERNAL_SERVER_ERROR": 500, "EXPERIMENTAL": 501, "SERVICE_UNAVAILABLE": 503}
FAILURE_NAME = {status: name for name, status in FAILURE_STATUS.items()}

# ---- error codes of failed replies ----------------------------------------------------------
# Three outcomes (actors/connection.py SendError): nothing left (retryable), may have
# reached WhatsApp (unconfirmed), refused.
NOT_CONNECTED = "not_connected"        # no live session, or Go failed before the request left
TIMEOUT = "timeout"                    # no answer in time and the request never STARTED
UNCONFIRMED = "unconfirmed"            # STARTED, then no answer from WhatsApp (whatsmeow's
                                       # 75 s, the parent's deadline, the link died mid-request)
REJECTED = "rejected"                  # WhatsApp or the child refused this request as it is
NOT_ON_WHATSAPP = "not_on_whatsapp"    # WhatsApp knows no account for that number
INTERNAL = "internal"                  # a fault in the child's own code
RETRYABLE_CODES = frozenset({NOT_CONNECTED, TIMEOUT})

# ---- the child's exit status ---------------------------------------------------------------
EXIT_STOPPED = 0                       # asked to stop
EXIT_PARENT_GONE = 3                   # the pipe broke: nobody left to serve
EXIT_CONNECT_FAILED = 4                # the initial connect raised (CONNECT_FAILED was sent)
