"""Postal addresses: the lines of an address block in the order its country's post reads them, and the
checks a Lob-shaped vendor applies to the `to` and `from` objects of a letter.

Addresses are Lob's flat fields: name, company, address_line1, address_line2, address_city,
address_state, address_zip, address_country (ISO 3166 alpha-2; Lob's default US).

China (and Japan, Korea, Taiwan, Hong Kong) write from the largest unit down: postcode, province, city,
district and street, and the name last ("张三 收"). Elsewhere the name comes first and the
city/region/postcode line last (the US: "CITY ST 12345"). An address going abroad ends with its country.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LARGEST_FIRST = frozenset({"CN", "TW", "HK", "MO", "JP", "KR"})
COUNTRY_NAMES = {"CN": "CHINA", "US": "UNITED STATES", "HK": "HONG KONG", "TW": "TAIWAN", "JP": "JAPAN"}
US_STATE = re.compile(r"^[A-Za-z]{2}$")
US_ZIP = re.compile(r"^[0-9]{5}(-[0-9]{4})?$")
# Lob's documented lengths (lob-openapi shared/models/address): US lines 64, international lines 200.
NAME_MAX = 40
US_LINE_MAX = 64
INTL_LINE_MAX = 200


def country_of(address: Mapping[str, str]) -> str:
    return (address.get("address_country") or "US").upper()


def address_lines(address: Mapping[str, str], sender_country: str = "US") -> list[str]:
    """The address block's lines in the country's order; the country last when it is not the sender's."""
    country = country_of(address)
    get = lambda field: (address.get(field) or "").strip()  # noqa: E731 - one-line accessor
    if country in LARGEST_FIRST:
        region, city = get("address_state"), get("address_city")
        area = city if city.startswith(region) else region + city  # 上海 + 上海市 is 上海市
        lines = [get("address_zip"), area, get("address_line1")]
        lines += [get("address_line2"), get("company"), f"{get('name')} 收" if get("name") else ""]
    else:
        last = " ".join(part for part in (get("address_city"), get("address_state"), get("address_zip")) if part)
        lines = [get("name"), get("company"), get("address_line1"), get("address_line2"), last]
    if country != sender_country.upper():
        lines.append(COUNTRY_NAMES.get(country, country))
    return [line for line in lines if line]


def address_problems(address: Mapping[str, str], role: str) -> list[str]:
    """What Lob would refuse in an inline address (`role` is 'to' or 'from'), as `role.field: problem`."""
    problems = []
    if not (address.get("name") or address.get("company")):
        problems.append(f"{role}.name: name or company is required")
    if len(address.get("name") or "") > NAME_MAX:
        problems.append(f"{role}.name: at most {NAME_MAX} characters")
    if not address.get("address_line1"):
        problems.append(f"{role}.address_line1: required")
    country = country_of(address)
    if not re.fullmatch(r"[A-Z]{2}", country):
        problems.append(f"{role}.address_country: a 2-letter ISO 3166 code")
    if country == "US":
        problems += _us_problems(address, role)
    elif any(len(address.get(f) or "") > INTL_LINE_MAX for f in ("address_line1", "address_line2")):
        problems.append(f"{role}.address_line1: at most {INTL_LINE_MAX} characters")
    return problems


def _us_problems(address: Mapping[str, str], role: str) -> list[str]:
    problems = []
    if not address.get("address_city"):
        problems.append(f"{role}.address_city: required for a US address")
    if not US_STATE.fullmatch(address.get("address_state") or ""):
        problems.append(f"{role}.address_state: the 2-letter state code is required for a US address")
    if not US_ZIP.fullmatch(address.get("address_zip") or ""):
        problems.append(f"{role}.address_zip: 12345 or 12345-1234 is required for a US address")
    if any(len(address.get(f) or "") > US_LINE_MAX for f in ("address_line1", "address_line2")):
        problems.append(f"{role}.address_line1: at most {US_LINE_MAX} characters")
    return problems
