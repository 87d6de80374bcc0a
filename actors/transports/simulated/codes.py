"""What the simulated WhatsApp hands out, shaped like the real thing: QR payloads, pairing
codes, message ids and LIDs.

- QR: whatsmeow (since 876de1e9, pair.go makeQRData) encodes
  `https://wa.me/settings/linked_devices#<ref>,<noise pub>,<identity pub>,<adv secret>,<client type>`;
  the ref comes from the server, the keys are 32 bytes in standard base64, client type "1"
  is Chrome. A real-length string matters: it decides the QR version (and the PNG and
  terminal sizes) the gateway draws.
- Pairing code: 5 random bytes in whatsmeow's base32 alphabet (pair-code.go
  linkingBase32), shown as XXXX-XXXX.
- LID: WhatsApp's opaque per-account id (`<digits>@lid`); here a stable function of the
  phone so that every run maps the same phone to the same LID.
"""
from __future__ import annotations

import base64
import hashlib
import secrets

QR_PREFIX = "https://wa.me/settings/linked_devices#"
PAIR_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"
_STANDARD_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_PAIR_ALPHABET = str.maketrans(_STANDARD_B32, PAIR_ALPHABET)
LID_SERVER = "lid"
CHROME = "1"


def qr_payload() -> str:
    """One QR code's content: a fresh ref and fresh keys, as whatsmeow prints them."""
    ref = "2@" + base64.b64encode(secrets.token_bytes(66)).decode()
    keys = [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(3)]
    return QR_PREFIX + ",".join([ref, *keys, CHROME])


def pairing_code() -> str:
    """8 characters of whatsmeow's alphabet (no 0, O, I, U), as XXXX-XXXX."""
    code = base64.b32encode(secrets.token_bytes(5)).decode().translate(_TO_PAIR_ALPHABET)
    return f"{code[:4]}-{code[4:]}"


def lid_for(phone: str) -> str:
    """The LID user part WhatsApp would give this phone's account (15 digits, stable)."""
    digest = int.from_bytes(hashlib.sha256(f"lid:{phone}".encode()).digest()[:8], "big")
    return str(100_000_000_000_000 + digest % 900_000_000_000_000)


def message_id(counter: int) -> str:
    """WhatsApp Web style: 3EB0 and upper-case hex."""
    return f"3EB0{counter:08X}{secrets.token_hex(4).upper()}"
