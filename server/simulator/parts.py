"""Pieces both wires' request parsers share once a request goes beyond plain text.

Tool names, image sniffing, token counts of tool definitions and the digest
that tells two feature requests apart. Pure; nothing here runs for a request
with only text messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

import orjson

from server.tokens import text_tokens

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def json_type(value: object) -> str:
    """How OpenAI names a JSON value's type in its errors: ``an object``, ``a string``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def json_tokens(value: object) -> int:
    """Input tokens of a JSON value the model reads (a tool definition, call arguments)."""
    return text_tokens(orjson.dumps(value).decode())


def digest(*values: object) -> bytes:
    """A digest of the JSON values that make a feature request what it is."""
    return hashlib.blake2b(orjson.dumps(values), digest_size=16).digest()


def sniff_image(data: str) -> str | None:
    """The media type base64 ``data`` starts like, or None; ValueError when it is not base64.

    Only the first 16 characters (12 bytes) are decoded: enough for every
    signature, and cheap whatever the image's size.
    """
    head = data[:16]
    try:
        raw = base64.b64decode(head + "=" * (-len(head) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("not base64") from exc
    for signature, media_type in _SIGNATURES:
        if raw.startswith(signature):
            return media_type
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "image/webp"
    return None
