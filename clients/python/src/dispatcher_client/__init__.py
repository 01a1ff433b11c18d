"""A typed client of the collections contact dispatcher's HTTP API, and the outcome callbacks' verifier."""

from dispatcher_client.client import ROUTES, ApiError, Change, ChangePage, DispatcherClient
from dispatcher_client.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "ROUTES",
    "ApiError",
    "Change",
    "ChangePage",
    "DispatcherClient",
    "WebhookVerificationError",
    "verify_webhook",
]
