"""Phone numbers, JIDs and company ids: validated, never silently rewritten."""
from __future__ import annotations

import re

_COMPANY_ID = re.compile(r"[A-Za-z0-9_-]{1,50}")
_PHONE_DECORATION = re.compile(r"[\s()+\-.]")
_USER_JID = re.compile(r"([1-9][0-9]{6,14})(?::[0-9]+)?@(s\.whatsapp\.net|c\.us)")

USER_SERVER = "s.whatsapp.net"


class InvalidInput(ValueError):
    """Input a caller must fix; the HTTP layer answers it with 400."""


def validate_company_id(company_id: object) -> str:
    if not isinstance(company_id, str) or not _COMPANY_ID.fullmatch(company_id):
        raise InvalidInput("companyId must be 1-50 characters of letters, digits, '_' and '-'")
    return company_id


def normalize_phone(value: object) -> str:
    """The digits of a phone number written with +, spaces, dashes, parentheses, or as a JID."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("phone number is required")
    text = value.strip()
    if "@" in text:
        match = _USER_JID.fullmatch(text)
        if not match:
            raise InvalidInput(f"not a user JID: {text!r} (expected digits@s.whatsapp.net)")
        return match.group(1)
    digits = _PHONE_DECORATION.sub("", text)
    if not (digits.isascii() and digits.isdigit()) or not 7 <= len(digits) <= 15:   # no "²" or "٧"
        raise InvalidInput(f"invalid phone number {text!r}: 7-15 digits expected")
    if digits.startswith("0"):
        # No country code starts with 0: this is a national number (0...) or a dialling
        # prefix (00...). WhatsApp refuses it (whatsmeow: ErrPhoneNumberIsNotInternational).
        raise InvalidInput(f"invalid phone number {text!r}: write it in international form, country code "
                           "first, without a leading 0 or 00 (e.g. 79001234567)")
    return digits


def phone_to_jid(value: object) -> str:
    return f"{normalize_phone(value)}@{USER_SERVER}"


def jid_to_phone(jid: str) -> str:
    """The user part of a JID without the device suffix: '7900:12@s.whatsapp.net' -> '7900'."""
    return jid.split("@", 1)[0].split(":", 1)[0]
