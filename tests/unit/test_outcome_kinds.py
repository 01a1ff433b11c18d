"""channels/ keeps its own copy of the outcome kinds (it may not import dispatcher/); the copy stays whole."""

from __future__ import annotations

from channels.base import OUTCOME_KINDS
from dispatcher.core.models import OutcomeKind


def test_the_channels_know_exactly_the_outcome_kinds_the_dispatcher_does() -> None:
    assert frozenset(kind.value for kind in OutcomeKind) == OUTCOME_KINDS
