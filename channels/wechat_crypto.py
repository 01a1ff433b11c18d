"""WeChat's safe mode: the message crypto and signatures of an official account's pushes.

A push in safe mode carries its event encrypted in `<Encrypt>` and signs that ciphertext:

    AESKey         = base64(EncodingAESKey + "=")                     32 bytes
    plaintext      = 16 random bytes + len(xml) as 4 bytes, big-endian + xml + AppID
    Encrypt        = base64(AES-256-CBC(AESKey, iv=AESKey[:16], PKCS#7 padded to a multiple of 32))
    msg_signature  = sha1 of token, timestamp, nonce and Encrypt, sorted and joined

The plain-mode `signature` (sha1 of token, timestamp and nonce) covers no byte of the body, so a push is
believed only through `msg_signature`; a push without it is refused. The AppID at the end of the plaintext
must be ours: a push for another account, even one signed with our token, is refused too.

Used by the webhook (dispatcher/api/webhooks/wechat.py), by the sandbox to push, and by the tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from channels.base import WebhookRejected

BLOCK = 32  # WeChat pads to 32 bytes, not AES's 16
MAX_SKEW_SECONDS = 300  # a push older (or newer) than this is a replay, not WeChat's retry (it retries within 15 s)


def sha1_signature(*parts: str) -> str:
    """WeChat's signature: SHA-1 of the parts sorted and joined, in hex."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


class SafeModeCipher:
    """Encrypts and decrypts safe-mode messages for one official account (its EncodingAESKey and AppID)."""

    def __init__(self, encoding_aes_key: str, app_id: str) -> None:
        try:
            key = base64.b64decode(encoding_aes_key + "=", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(encoding_aes_key) != 43 or len(key) != 32:
            raise ValueError("an EncodingAESKey is 43 characters of base64 (32 bytes once '=' is added)")
        self._key = key
        self.app_id = app_id

    def encrypt(self, xml: str, random_prefix: bytes | None = None) -> str:
        body = xml.encode()
        plain = (random_prefix or os.urandom(16)) + struct.pack(">I", len(body)) + body + self.app_id.encode()
        pad = BLOCK - len(plain) % BLOCK
        encryptor = self._cipher().encryptor()
        return base64.b64encode(encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        """The XML inside; WebhookRejected when it does not decrypt to a message for our AppID."""
        try:
            data = base64.b64decode(encrypted, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookRejected("Encrypt is not base64") from None
        if not data or len(data) % BLOCK:
            raise WebhookRejected("Encrypt is not whole AES blocks")
        decryptor = self._cipher().decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= BLOCK or plain[-pad:] != bytes([pad]) * pad:
            raise WebhookRejected("Encrypt has a bad padding")
        plain = plain[:-pad]
        if len(plain) < 20:
            raise WebhookRejected("Encrypt is too short")
        (size,) = struct.unpack(">I", plain[16:20])
        xml, app_id = plain[20 : 20 + size], plain[20 + size :]
        if len(xml) != size or app_id.decode(errors="replace") != self.app_id:
            raise WebhookRejected("the push is not for this official account (AppID)")
        return xml.decode()

    def _cipher(self) -> Cipher[modes.CBC]:
        return Cipher(algorithms.AES(self._key), modes.CBC(self._key[:16]))


def encrypted_envelope(
    cipher: SafeModeCipher, token: str, xml: str, timestamp: str, nonce: str
) -> tuple[dict[str, str], str]:
    """What WeChat sends in safe mode: the query parameters and the body (the sandbox pushes with it)."""
    encrypted = cipher.encrypt(xml)
    query = {
        "signature": sha1_signature(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": sha1_signature(token, timestamp, nonce, encrypted),
    }
    body = f"<xml><ToUserName><![CDATA[{cipher.app_id}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    return query, body


def open_push(cipher: SafeModeCipher, token: str, query: Mapping[str, str], body: bytes, now: float) -> dict[str, str]:
    """The fields of a safe-mode push, once its msg_signature, freshness and AppID hold; else WebhookRejected.

    The signature is checked over the ciphertext before anything is decrypted or parsed beyond the envelope."""
    if query.get("encrypt_type") != "aes" or not query.get("msg_signature"):
        raise WebhookRejected("only safe-mode pushes are accepted (encrypt_type=aes with msg_signature)")
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not (timestamp.isascii() and timestamp.isdigit()) or abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise WebhookRejected("timestamp missing or too far from now")
    encrypted = _element_text(_xml(body), "Encrypt")
    expected = sha1_signature(token, timestamp, nonce, encrypted)
    if not hmac.compare_digest(expected.encode(), query["msg_signature"].encode()):
        raise WebhookRejected("msg_signature does not match")
    return {child.tag: (child.text or "") for child in _xml(cipher.decrypt(encrypted).encode())}


def _xml(body: bytes) -> ElementTree.Element:
    # WeChat's XML has no DTD; one that declares entities is refused before expat expands anything.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise WebhookRejected("the body declares a DTD")
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise WebhookRejected("the body is not XML") from None


def _element_text(root: ElementTree.Element, tag: str) -> str:
    text = root.findtext(tag)
    if not text:
        raise WebhookRejected(f"the body has no {tag}")
    return text
