"""The WeChat official account's server URL: its pushes, accepted in safe mode only.

GET is WeChat's check of the URL when it is configured (`signature` over token, timestamp and nonce; the
answer is `echostr`). POST is a push: believed only when `msg_signature` covers its ciphertext and it
decrypts to our AppID (channels/wechat_crypto.py); the plain-mode `signature` covers no byte of the body, so
a push without encryption is refused (403) like a forged one, and changes nothing.

TEMPLATESENDJOBFINISH names the message id WeChat gave the send, not our contact: the worker remembered
which contact each id carries (dispatcher/state/provider_state.py), and an id it never sent is ignored.
`success` is `delivered`; `failed:user block` is `opted_out` (the debtor blocked the account's messages);
any other failure is `undelivered`. Other events are acknowledged and ignored.
"""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response

from channels import callbacks
from channels.base import ProviderOutcome, WebhookRejected
from channels.wechat_crypto import SafeModeCipher, open_push, sha1_signature
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.api.webhooks.recorder import AppSettings, Callbacks, verified
from dispatcher.core.models import Channel
from dispatcher.state.provider_state import ProviderState

router = APIRouter(tags=["webhooks"])
RESULT_RANK = 2  # every TEMPLATESENDJOBFINISH status is final
XML_BODY = {"requestBody": {"required": True, "content": {"text/xml": {"schema": {"type": "string"}}}}}
TEXT_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"description": "WeChat's expected answer", "content": {"text/plain": {"schema": {"type": "string"}}}}
}


def outcome_of(status: str) -> str:
    if status == "success":
        return "delivered"
    if status.replace(" ", "") == "failed:userblock":
        return "opted_out"
    return "undelivered"


@router.get(callbacks.WECHAT, summary="WeChat server URL check (signature, echostr)", operation_id="wechatVerify",
            response_class=Response, responses={**TEXT_ANSWER, **responses(403)})  # fmt: skip
async def wechat_verify(
    settings: AppSettings,
    signature: Annotated[str, Query()] = "",
    timestamp: Annotated[str, Query()] = "",
    nonce: Annotated[str, Query()] = "",
    echostr: Annotated[str, Query()] = "",
) -> PlainTextResponse:
    expected = sha1_signature(settings.wechat_token.get_secret_value(), timestamp, nonce)
    if not signature or not hmac.compare_digest(expected.encode(), signature.encode()):
        raise ApiError(403, "forbidden", "signature does not match", [FieldError(field="signature", message="bad")])
    return PlainTextResponse(echostr)


@router.post(callbacks.WECHAT, summary="WeChat pushes, safe mode only (msg_signature)", operation_id="wechatPush",
             response_class=Response, responses={**TEXT_ANSWER, **responses(403)}, openapi_extra=XML_BODY)  # fmt: skip
async def wechat_push(request: Request, settings: AppSettings, recorder: Callbacks) -> PlainTextResponse:
    body = await request.body()
    token = settings.wechat_token.get_secret_value()

    def opened() -> dict[str, str]:
        try:
            cipher = SafeModeCipher(settings.wechat_encoding_aes_key.get_secret_value(), settings.wechat_app_id)
        except ValueError as exc:
            raise WebhookRejected(str(exc)) from None
        return open_push(cipher, token, request.query_params, body, now=time.time())

    fields: dict[str, str] = verified(opened, "msg_signature")
    if fields.get("Event") != "TEMPLATESENDJOBFINISH" or not fields.get("MsgID"):
        return PlainTextResponse("success")
    msgid = fields["MsgID"]
    state = ProviderState(recorder.engine.store.redis, Channel.WECHAT.value)
    contact_id = await anyio.to_thread.run_sync(state.contact_of_message, msgid)
    if contact_id is None:  # signed by WeChat, but for a message we did not send (or forgot after a week)
        return PlainTextResponse("success")
    outcome = ProviderOutcome(contact_id, outcome_of(fields.get("Status", "")), msgid, {"status": fields.get("Status")})
    await recorder.outcomes([outcome], Channel.WECHAT, RESULT_RANK, "wechat")
    return PlainTextResponse("success")
