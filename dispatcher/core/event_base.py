"""What every event shares, and the refusal of one that cannot apply: below the event modules
(dispatcher.core.events, dispatcher.core.arrangements.events), which both build on it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from config.errors import InputRejected


class EventRejected(InputRejected, ValueError):
    """The event is well-formed but cannot apply to this account; `field` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field: str = field


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str | None = Field(
        default=None, max_length=128, description="The sender's id for this event; a repeat is ignored."
    )

    @property
    def dedup_key(self) -> str | None:
        """What makes a repeat of this event a duplicate: its event_id (a payment: its bank reference)."""
        return self.event_id
