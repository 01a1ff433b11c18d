"""The Twilio stand-in's list reads (GET Messages.json, Calls.json): Twilio's filters, its paging fields,
most recent first; what the reconciler asks when a claim is in doubt."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import JSONResponse

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


# Twilio's list filters: query name -> (resource field, comparison). `<` and `>` are inclusive, by date or
# by instant when the value carries a time.
DATE_FILTERS = {
    "Messages": {"DateSent": "date_sent"},
    "Calls": {"StartTime": "start_time", "EndTime": "end_time"},
}
EXACT_FILTERS = {"Messages": {"To": "to", "From": "from"}, "Calls": {"To": "to", "From": "from", "Status": "status"}}
LIST_KEY = {"Messages": "messages", "Calls": "calls"}
SID_PREFIX = {"Messages": "SM", "Calls": "CA"}


def _filter_value(raw: str) -> datetime | date:
    """A date filter's value: `YYYY-MM-DD`, or an ISO 8601 instant (the SDK sends `...T..Z`)."""
    if "T" in raw:
        instant = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return instant if instant.tzinfo else instant.replace(tzinfo=UTC)
    return date.fromisoformat(raw)


def _date_matches(stored: str | None, op: str, wanted: datetime | date) -> bool:
    if stored is None:
        return False  # a null date matches no date filter
    instant = parsedate_to_datetime(stored)
    if isinstance(wanted, datetime):
        return _compare(instant, op, wanted)
    return _compare(instant.date(), op, wanted)


def _compare(left: Any, op: str, right: Any) -> bool:
    return bool(left <= right if op == "<" else left >= right if op == ">" else left == right)


def list_resources(
    resources: Mapping[str, dict[str, Any]], account_sid: str, kind: str, query: Mapping[str, str]
) -> JSONResponse:
    """One page of Messages or Calls from a stand-in's `resources` (sid -> resource, in order of creation) under
    `account_sid`, filtered and paged as Twilio does (most recent first)."""
    try:
        page_size = int(query.get("PageSize") or DEFAULT_PAGE_SIZE)
        page = int(query.get("Page") or 0)
        dates = [
            (field, op, _filter_value(query[name + op]))
            for name, field in DATE_FILTERS[kind].items()
            for op in ("", "<", ">")
            if query.get(name + op)
        ]
    except ValueError:
        return JSONResponse(twilio_error(400, 20001, "Invalid filter or paging value"), 400)
    if not 1 <= page_size <= MAX_PAGE_SIZE or page < 0:
        return JSONResponse(twilio_error(400, 20001, f"PageSize must be 1..{MAX_PAGE_SIZE}, Page 0 or more"), 400)
    exact = {field: query[name] for name, field in EXACT_FILTERS[kind].items() if query.get(name)}
    records = [
        resource
        for sid, resource in reversed(list(resources.items()))
        if sid.startswith(SID_PREFIX[kind])
        and all(resource.get(field) == value for field, value in exact.items())
        and all(_date_matches(resource.get(field), op, wanted) for field, op, wanted in dates)
    ]
    start = page * page_size
    chunk = records[start : start + page_size]
    filters = {name: value for name, value in query.items() if name not in ("Page", "PageSize", "PageToken")}
    base = f"/2010-04-01/Accounts/{account_sid}/{kind}.json"

    def uri(number: int) -> str:
        paging: dict[str, object] = {"PageSize": page_size, "Page": number}
        if number > 0:
            paging["PageToken"] = f"PA{SID_PREFIX[kind]}{number * page_size}"
        return f"{base}?{urlencode({**filters, **paging})}"

    return JSONResponse(
        {
            LIST_KEY[kind]: chunk,
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if start + page_size < len(records) else None,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": start + max(len(chunk) - 1, 0),
            "uri": uri(page),
        }
    )
