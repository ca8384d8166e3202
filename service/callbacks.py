"""What a job's callback must satisfy to be deliverable: checked at submit (a 422 names the
fault) and again by the sender (the allow-list may change in between)."""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from service.errors import CallbackRefused

#: Standard Webhooks secrets: ``whsec_`` + base64 of the key bytes.
WHSEC = "whsec_"
MIN_KEY_BYTES = 16


def allowed(url: str, allow_hosts: tuple[str, ...]) -> bool:
    """Whether ``url`` is http(s) to a host on the allow-list (``*`` allows any)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return "*" in allow_hosts or parts.hostname in allow_hosts


def secret_bytes(secret: str) -> bytes:
    """The HMAC key: a ``whsec_`` secret base64-decoded (the specification), else UTF-8."""
    if secret.startswith(WHSEC):
        return base64.b64decode(secret[len(WHSEC):], validate=True)
    return secret.encode()


def check(url: str, secret: str, allow_hosts: tuple[str, ...]) -> None:
    """Refuse (:class:`CallbackRefused`) a callback that would never be sent or verified."""
    if not allowed(url, allow_hosts):
        host = urllib.parse.urlsplit(url).hostname
        raise CallbackRefused(f"callback host {host!r} is not on the webhook allow-list "
                              "(VHDMEND_WEBHOOK_ALLOW_HOSTS)")
    if secret.startswith(WHSEC):
        try:
            key = secret_bytes(secret)
        except (binascii.Error, ValueError) as e:
            raise CallbackRefused("a 'whsec_' secret must be followed by base64 "
                                  f"(Standard Webhooks): {e}") from e
        if len(key) < MIN_KEY_BYTES:
            raise CallbackRefused(f"a 'whsec_' secret must hold at least {MIN_KEY_BYTES} "
                                  f"bytes of key (it holds {len(key)})")
