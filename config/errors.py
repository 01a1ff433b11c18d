"""The root of every exception the dispatcher raises on purpose, and the kinds a caller acts on.

It lives in config/, the bottom of the import direction, so channels/ and dispatcher/ can both derive from
it. A caller catches the kind that says what to do next, not the leaf:

    DispatcherError
    ├── ConfigurationError            an operator fixes a setting or file; an entry point exits 1 with the message
    │   ├── SettingsError             config.settings: a DISPATCHER_* variable
    │   ├── StrategyError             dispatcher.core.strategy: the strategy file
    │   ├── ExperimentError           dispatcher.core.experiments.loading: the experiment file or a strategy in it
    │   ├── VariantSetMismatch        dispatcher.state.active_set: this process's variants are not the active set
    │   ├── TemplateContextError      channels.render: a template is missing or needs what the context lacks
    │   └── UpError                   workers.up: `dispatcher up` cannot start as asked
    ├── InputRejected                 the caller's input cannot apply: refuse it naming `field`; never retry as is
    │   ├── EventRejected             dispatcher.core.event_base (re-exported by dispatcher.core.events)
    │   │   └── ArrangementConflict   dispatcher.core.arrangements.events: the account cannot take it (API: 409)
    │   ├── AlreadyMade               dispatcher.adhoc: the key is spent: contact made, or request lapsed (new key)
    │   ├── WebhookRejected           channels.base: a callback's signature or freshness failed (record nothing)
    │   └── MissingGlyphs             channels.pdf: the letter holds characters the font cannot draw
    ├── NotFound                      the named thing does not exist: create it first, or drop the request
    │   ├── UnknownAccount            dispatcher.engine
    │   └── UnknownArrangement        dispatcher.core.arrangements.events
    ├── ApiError                      dispatcher.api.errors: an HTTP answer decided under a route, rendered as is
    ├── RecordUnavailable             dispatcher.record.db: PostgreSQL cannot be reached now; retry later (API: 503)
    └── DeliveryError                 channels.base: the provider did not take the contact
        ├── TransientDeliveryError    try again later (`retry_after` says when, if known)
        │   ├── RateLimited           our own rate limit: the request never left
        │   └── ProviderMisconfigured give the claim back and open the provider's circuit
        ├── PermanentDeliveryError    record `outcome_kind`; the strategy answers it
        │   └── ProviderRefused       the provider's own refusal, not the debtor's: another provider may take it
        │       └── NotMainlandMobile channels.aliyun_sms: not a +86 number; nothing left
        ├── ContactDeferred           the provider refused this recipient for now: wait, no failover
        │   └── RecipientLimited      channels.aliyun_sms: this number's daily limit; this contact waits
        └── LookupUnavailable         the provider cannot tell: the claim stays `unknown`

A leaf keeps the built-in base it had before the tree (ValueError, LookupError, RuntimeError), so a caller
that catches the built-in, or a pydantic validator that turns a ValueError into a field error, is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class DispatcherError(Exception):
    """Something the dispatcher names on purpose; see the kinds below for what to do next."""


class ConfigurationError(DispatcherError):
    """A setting or a configuration file is wrong; nothing runs right until an operator fixes it."""


class InputRejected(DispatcherError):
    """The caller's input cannot apply; `field` names the culprit when one field is."""

    field: str | None = None


class NotFound(DispatcherError):
    """The request names something that does not exist (yet); `field` names where it was named."""

    field: str | None = None


@contextmanager
def exit_on_configuration_error() -> Iterator[None]:
    """Around a process's start (a command, a worker's start-up): a ConfigurationError ends the process with
    its message on stderr and exit status 1, as a SystemExit with a message does, instead of a traceback."""
    try:
        yield
    except ConfigurationError as exc:
        raise SystemExit(str(exc)) from None
