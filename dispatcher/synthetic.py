"""Synthetic delinquent accounts for simulations and the demo: realistic names, numbers and zones."""

from __future__ import annotations

import random
from datetime import date, timedelta
from decimal import Decimal

from dispatcher.core.models import Account, Channel, PostalAddress

_CN_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
_CN_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国志红玉兰宇浩然子涵欣怡梓轩思远雨桐嘉怡"
_CN_CITIES = [
    ("上海", "Asia/Shanghai", "200000"),
    ("北京", "Asia/Shanghai", "100000"),
    ("广州", "Asia/Shanghai", "510000"),
    ("成都", "Asia/Shanghai", "610000"),
    ("乌鲁木齐", "Asia/Urumqi", "830000"),
]
_EN_FIRST = "James Mary Robert Patricia John Jennifer Michael Linda David Susan Emily Oliver Amelia Jack Isla".split()
_EN_LAST = "Smith Johnson Williams Brown Jones Taylor Wilson Davies Evans Thomas Walker Wright Robinson Hall".split()
# (country, phone prefix, subscriber digits, zone, extra zone when the area code disagrees, city, currency)
_EN_PLACES = [
    ("US", "+1212555", 4, "America/New_York", "America/Los_Angeles", "New York", "USD"),
    ("US", "+1312555", 4, "America/Chicago", None, "Chicago", "USD"),
    ("GB", "+447700900", 3, "Europe/London", None, "London", "GBP"),
    ("AU", "+61491570", 3, "Australia/Sydney", None, "Sydney", "AUD"),
    ("SG", "+659", 7, "Asia/Singapore", None, "Singapore", "SGD"),
]
_CN_MOBILE_PREFIXES = ["130", "131", "135", "136", "138", "139", "150", "151", "186", "188"]


def synthetic_accounts(count: int, seed: int, today: date, max_days_past_due: int = 30) -> list[Account]:
    """`count` accounts, two thirds Chinese, one to `max_days_past_due` days past due on `today`."""
    rng = random.Random(seed)
    accounts = [_account(rng, index, today, max_days_past_due) for index in range(count)]
    # WeChat from a draw of its own, so the rest of each account is what the seed always made.
    return [_with_wechat(account, random.Random(f"{seed}:wechat:{account.id}")) for account in accounts]


_OPENID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_WECHAT_SHARE = {"CN": 0.6}  # followers of the bank's official account who consented; elsewhere 0.1


def _with_wechat(account: Account, rng: random.Random) -> Account:
    """A share of the accounts follow the bank's official account and consented to its messages."""
    if rng.random() >= _WECHAT_SHARE.get(account.country, 0.1):
        return account
    openid = "o" + "".join(rng.choice(_OPENID_CHARS) for _ in range(27))
    return account.model_copy(update={"wechat_openid": openid, "consent": account.consent | {Channel.WECHAT}})


def _account(rng: random.Random, index: int, today: date, max_days_past_due: int) -> Account:
    account_id = f"ACC{index:07d}"
    due = today - timedelta(days=rng.randint(1, max_days_past_due))
    balance = Decimal(rng.randrange(50_00, 5_000_000)) / 100
    minimum = (balance * Decimal("0.1")).quantize(Decimal("0.01"))
    consent = {Channel.EMAIL, Channel.LETTER, Channel.AGENCY}
    if rng.random() < 0.95:
        consent |= {Channel.SMS, Channel.VOICE}
    common = {
        "id": account_id,
        "balance": balance,
        "minimum_payment": minimum,
        "due_date": due,
        "consent": consent,
    }
    if rng.random() < 2 / 3:
        return _chinese(rng, index, common)
    return _english(rng, index, common)


def _chinese(rng: random.Random, index: int, common: dict[str, object]) -> Account:
    city, zone, postcode = rng.choice(_CN_CITIES)
    name = rng.choice(_CN_SURNAMES) + "".join(rng.choice(_CN_GIVEN) for _ in range(rng.choice((1, 2))))
    phone = "+86" + rng.choice(_CN_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
    address = PostalAddress(line1=f"{rng.randint(1, 999)}号 人民路", city=city, postal_code=postcode, country="CN")
    return Account.model_validate(
        {
            **common,
            "name": name,
            "locale": "zh-CN",
            "timezone": zone,
            "country": "CN",
            "currency": "CNY",
            "phone": phone,
            "email": f"user{index}@example.cn" if rng.random() < 0.8 else None,
            "address": address,
        }
    )


def _english(rng: random.Random, index: int, common: dict[str, object]) -> Account:
    country, prefix, digits, zone, extra, city, currency = rng.choice(_EN_PLACES)
    first, last = rng.choice(_EN_FIRST), rng.choice(_EN_LAST)
    phone = prefix + f"{rng.randrange(10**digits):0{digits}d}"
    address = PostalAddress(line1=f"{rng.randint(1, 999)} High Street", city=city, postal_code="10001", country=country)
    return Account.model_validate(
        {
            **common,
            "name": f"{first} {last}",
            "locale": "en",
            "timezone": zone,
            "extra_timezones": [extra] if extra and rng.random() < 0.3 else [],
            "country": country,
            "currency": currency,
            "phone": phone,
            "email": f"{first}.{last}{index}@example.com".lower(),
            "address": address,
        }
    )
