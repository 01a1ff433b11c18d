"""Provider webhooks: Twilio message and call status, answering-machine results, a call's TwiML and inbound
SMS (twilio), print-vendor tracking (print_vendor), email bounces and DSNs (email), the WeChat official
account's pushes in safe mode (wechat), Aliyun SMS's reports and replies on a secret path, each report
confirmed by QuerySendDetails (aliyun). Each is verified before
anything is read or written; a bad signature is a 403 and changes nothing. Outcomes enter the engine as
`Outcome` events and re-plan the account at once (recorder: the recorder, the rank gate, the spool).

The API's edge, so it parses with channels/ (the only part of dispatcher that may); the paths are
channels.callbacks', the same the adapters give the providers. No API key: the signature is the
authentication; the idempotency middleware leaves these paths alone (providers send no Idempotency-Key,
and event ids derived from the provider's ids make a repeated callback a no-op).
"""

from dispatcher.api.webhooks import aliyun, email, print_vendor, twilio, wechat
from dispatcher.api.webhooks.recorder import CallbackRecorder

ROUTERS = (twilio.router, print_vendor.router, email.router, wechat.router, aliyun.router)

__all__ = ["ROUTERS", "CallbackRecorder"]
