"""The base class of every dispatcher task (the app's task_cls): what a task's failure means for its message.

- Arguments that do not fit the task's signature: a dead letter, and the task returns (acked, worker goes on).
- Redis or the broker unreachable mid-task: the message is given back (Reject with requeue), never acked as
  done. With task_acks_late a plain exception acks the message, and a send that died on a lost Redis would be
  gone. If Redis is still down, the reject cannot reach it either: the message then stays in Redis's `unacked`
  hash and comes back after the visibility timeout (or when this worker restores it on reconnecting).
- This worker's strategy variants differ from the active set (dispatcher.state.active_set): the message is
  given back the same way, for a worker with the active set (or this one, restarted with it) to do.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import kombu.exceptions
import redis.exceptions
import structlog
from celery import Task
from celery.exceptions import Reject
from celery.utils.saferepr import saferepr
from celery.worker.request import Request

from dispatcher.core.privacy.personal_data import masked
from dispatcher.state.active_set import VariantSetMismatch
from workers.dead_lettering import refuse

log = structlog.get_logger("workers.task")

REDIS_OR_BROKER_DOWN = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError: a restarted Redis still loading its AOF
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
    # A Redis Cluster between a primary's loss and its replica's promotion: slots without a primary.
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.TryAgainError,
)
# A short pause before the message goes back, so a Redis that stays away is not hammered by a hot loop of
# redeliveries (each worker thread retries at most this often).
REQUEUE_PAUSE_SECONDS = 1.0


class DispatcherTask(Task):
    # On the class, not only in the app's configuration: Celery copies the configuration onto a task class
    # when the app is first finalized, so anything that touched the tasks before configure() ran would
    # otherwise leave them acking early, and a message given back by Reject would already be gone.
    acks_late = True
    reject_on_worker_lost = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        problem = signature_problem(self.run, args, kwargs)
        if problem is not None:
            refuse(self, problem, args, kwargs)
            return None
        try:
            return super().__call__(*args, **kwargs)
        except REDIS_OR_BROKER_DOWN as exc:
            log.warning("task.requeued", task=self.name, task_id=self.request.id, error=repr(exc))
            time.sleep(REQUEUE_PAUSE_SECONDS)
            raise Reject(exc, requeue=True) from exc
        except VariantSetMismatch as exc:  # this worker's strategies are not the active set: another takes it
            log.error("task.requeued_variant_set", task=self.name, task_id=self.request.id, error=str(exc))
            time.sleep(REQUEUE_PAUSE_SECONDS)
            raise Reject(exc, requeue=True) from exc


def signature_problem(function: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as exc:
        return f"arguments do not fit the task: {exc}"
    return None


class PrivateArgsRequest(Request):
    """A task whose arguments carry personal data (an account to upsert, an event's details): the
    task-received event, and so Flower, shows them with every personal field masked whatever it holds and
    phone numbers and emails masked in any other text, as the logs show them (dispatcher.core.privacy.personal_data)."""

    @property
    def argsrepr(self) -> str:
        return str(saferepr(masked(list(self.args)), maxlen=self.app.amqp.argsrepr_maxsize))

    @property
    def kwargsrepr(self) -> str:
        return str(saferepr(masked(dict(self.kwargs)), maxlen=self.app.amqp.kwargsrepr_maxsize))
