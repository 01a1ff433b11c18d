"""Outcome callbacks to the bank's services, as the API serves them: the admin routes of the endpoints
(endpoints) and the change feed (changes). The relay and the sender run in the workers
(dispatcher/webhook_relay.py, dispatcher/webhook_sender.py, workers/callbacks.py)."""

from dispatcher.api.callbacks import changes, endpoints

ROUTERS = (endpoints.router, changes.router)

__all__ = ["ROUTERS"]
