"""The pipe's vocabulary between the gateway and a neonize child, defined once for both ends.

Everything on the pipe is picklable plain data:
  parent -> child: (req_id, op, args), op one of the commands below; req_id 0 for STOP
  child -> parent: dicts with a "type" key, one of the types below. A REPLY answers one
                   request: {"type": REPLY, "req_id", "ok": True, "result": {...}} or
                   {"type": REPLY, "req_id", "ok": False, "code": <error code>, "error": text}

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

# whatsmeow's QR channel results as neonize's login callback reports them.
LOGIN_SUCCESS = "success"
LOGIN_CLIENT_OUTDATED = "err-client-outdated"

# whatsmeow's ConnectFailureReason numbers (neonize's enum only has indices); "status".
FAILURE_STATUS = {"GENERIC": 400, "LOGGED_OUT": 401, "TEMP_BANNED": 402, "MAIN_DEVICE_GONE": 403,
                  "CLIENT_OUTDATED": 405, "UNKNOWN_LOGOUT": 406, "BAD_USER_AGENT": 409,
                  "INTERNAL_SERVER_ERROR": 500, "EXPERIMENTAL": 501, "SERVICE_UNAVAILABLE": 503}

# ---- error codes of failed replies ----------------------------------------------------------
NOT_CONNECTED = "not_connected"        # no live session (not ready, ended, socket down)
TIMEOUT = "timeout"                    # no answer in time (the parent's deadline, or whatsmeow's)
REJECTED = "rejected"                  # WhatsApp or the child refused this request as it is
INTERNAL = "internal"                  # a fault in the child's own code
RETRYABLE_CODES = frozenset({NOT_CONNECTED, TIMEOUT})

# ---- the child's exit status ---------------------------------------------------------------
EXIT_STOPPED = 0                       # asked to stop
EXIT_PARENT_GONE = 3                   # the pipe broke: nobody left to serve
EXIT_CONNECT_FAILED = 4                # the initial connect raised (CONNECT_FAILED was sent)
