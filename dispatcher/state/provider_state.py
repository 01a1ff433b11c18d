"""A provider's session shared by every worker and the API, in Redis: its access token with one refresher, and
the contact each of its message ids was sent for.

WeChat hands out one access token per official account (`cgi-bin/stable_token`, 7200 s); every worker uses
the same one, and only one of them refreshes it (`SET NX` on the refresh key) while the others keep the
token they have until it expires. Its push (TEMPLATESENDJOBFINISH) names only the message id WeChat gave
the send, so the send remembers which contact that id carries; the webhook reads it back.

The sending side (channels/wechat.py) asks for these methods by shape (`channels.wechat.TokenStore`): the
channels may not import the dispatcher, and the key names are spelled only in redis_keys.
"""

from __future__ import annotations

from typing import Any

from dispatcher.state.redis_keys import (
    breaker_key,
    provider_message_key,
    provider_refresh_key,
    provider_token_key,
)

MESSAGE_TTL_SECONDS = 7 * 86_400  # WeChat pushes a send's result within minutes; a week leaves room for retries


class ProviderState:
    """One provider's token and message ids in Redis (`redis`: a redis-py client with decoded answers or not)."""

    def __init__(self, redis: Any, provider: str) -> None:
        self.redis = redis
        self.provider = provider

    def read_token(self) -> tuple[str, float] | None:
        stored = self.redis.hmget(provider_token_key(self.provider), ["token", "expires_at"])
        if not stored or stored[0] is None or stored[1] is None:
            return None
        return _text(stored[0]), float(_text(stored[1]))

    def write_token(self, token: str, expires_at: float) -> None:
        key = provider_token_key(self.provider)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"token": token, "expires_at": f"{expires_at:.3f}"})
        pipe.expireat(key, int(expires_at) + 1)
        pipe.execute()

    def forget_token(self, token: str) -> None:
        """Drop the cached token if it is still `token` (another worker may have refreshed it already)."""
        stored = self.read_token()
        if stored is not None and stored[0] == token:
            self.redis.delete(provider_token_key(self.provider))

    def try_refresh(self, seconds: float) -> bool:
        """Become the one refresher for `seconds`; False while another worker is refreshing."""
        return bool(self.redis.set(provider_refresh_key(self.provider), "1", nx=True, px=max(1, int(seconds * 1000))))

    def refreshed(self) -> None:
        self.redis.delete(provider_refresh_key(self.provider))

    def remember_message(self, message_id: str, contact_id: str) -> None:
        self.redis.set(provider_message_key(self.provider, message_id), contact_id, ex=MESSAGE_TTL_SECONDS)

    def contact_of_message(self, message_id: str) -> str | None:
        value = self.redis.get(provider_message_key(self.provider, message_id))
        return None if value is None else _text(value)


def read_breaker(redis: Any, key: str) -> dict[str, str]:
    """A provider's circuit breaker as stored (until, seconds, setting, reason, trips); empty while it never
    opened. workers/circuit.py writes it; the breaker and the operations dashboard read it."""
    return {_text(name): _text(value) for name, value in redis.hgetall(breaker_key(key)).items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
