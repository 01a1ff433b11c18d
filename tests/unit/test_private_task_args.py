"""Tasks whose arguments carry personal data show Flower (through the task-received event) their ids and amounts
with every personal field masked (dispatcher.core.privacy.personal_data)."""

from __future__ import annotations

import json

from kombu.message import Message

from workers.app import app
from workers.task_base import PrivateArgsRequest
from workers.tasks import send, upsert_account


def _request(task: object, args: list[object]) -> PrivateArgsRequest:
    message = app.amqp.as_task_v2("t-1", task.name, args=args)  # type: ignore[attr-defined]
    raw = Message(
        body=json.dumps(message.body), headers=message.headers, content_type="application/json",
        content_encoding="utf-8", properties=message.properties, delivery_info={"routing_key": "plan"},
    )  # fmt: skip
    request_class = task.Request  # type: ignore[attr-defined]
    if isinstance(request_class, str):
        module, _, name = request_class.partition(":")
        request_class = getattr(__import__(module, fromlist=[name]), name)
    return request_class(raw, app=app, task=task)  # type: ignore[no-any-return]


def test_an_upserted_account_shows_no_personal_data_in_task_events() -> None:
    account = {"id": "A1", "name": "Zhang San", "phone": "+8613800138000", "email": "zhang@example.test"}
    request = _request(upsert_account, [account])
    shown = request.argsrepr + request.kwargsrepr
    assert "Zhang" not in shown and "13800138000" not in shown and "zhang@" not in shown
    assert "'id': 'A1'" in shown and "'name': '***'" in shown
    assert request.args == [account]  # the task itself still gets them


def test_a_send_task_keeps_showing_its_contact_ids() -> None:
    payload = {"id": "A1/reminder/sms/0", "account_id": "A1"}
    assert "A1/reminder/sms/0" in _request(send, [[payload]]).argsrepr
