"""The HTTP API for other services: accounts, batch import, events, ad-hoc contacts, health."""

from dispatcher.api.app import create_app, serve
from dispatcher.api.auth import hash_key, new_api_key

__all__ = ["create_app", "hash_key", "new_api_key", "serve"]
