"""The one error shape of the API, and the handlers that turn every failure into it.

    {"error": "validation", "message": "...", "fields": [{"field": "balance", "message": "..."}]}

`error` says what to do next: validation (fix the named fields), unauthorized (send a key), forbidden
(use a key with the scope), not_found, conflict (wait and retry), too_large (send less: the message names
the route's limit), timeout (send the body faster), unavailable (retry after Retry-After).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from config.errors import DispatcherError, InputRejected, NotFound
from dispatcher.core.events import Event
from dispatcher.state.active_set import VariantSetMismatch


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    fields: list[FieldError] = []


class ApiError(DispatcherError):
    """Raised anywhere under a route; rendered as ErrorBody with `status`."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        fields: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.fields = list(fields)
        self.headers = headers


def error_response(
    status: int, error: str, message: str, fields: Iterable[FieldError] = (), headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=error, message=message, fields=list(fields))
    return JSONResponse(body.model_dump(), status_code=status, headers=dict(headers) if headers else None)


def field_path(loc: Sequence[Any]) -> str:
    """`('body', 'address', 'city')` → `address.city`; a discriminated union's tag is left out."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] in _UNION_TAGS:
        parts = parts[1:]
    return ".".join(parts) or "body"


# Pydantic puts a discriminated union's tag in the error's path; the caller's field is `amount`, not
# `payment.amount`.
_UNION_TAGS = frozenset(model.model_fields["kind"].default for model in get_args(get_args(Event)[0]))


def validation_fields(errors: Iterable[Any]) -> list[FieldError]:
    fields = []
    for error in errors:
        loc = list(error.get("loc", ()))
        if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str((error.get("ctx") or {}).get("discriminator", "kind")).strip("'"))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        fields.append(FieldError(field=field_path(loc), message=message))
    return fields


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    fields = validation_fields(exc.errors())
    names = ", ".join(dict.fromkeys(field.field for field in fields))
    return error_response(422, "validation", f"invalid request: {names}", fields)


def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.message, exc.fields, exc.headers)


def _not_found(request: Request, exc: Exception) -> JSONResponse:
    """Any NotFound: 404 naming the field that named the missing thing."""
    assert isinstance(exc, NotFound)
    field = exc.field or "path"
    message = str(exc).removeprefix(f"{field}: ")
    return error_response(404, "not_found", message, [FieldError(field=field, message=message)])


def _rejected(request: Request, exc: Exception) -> JSONResponse:
    """Any InputRejected that reaches the app: 422 naming its field (the body when it names none)."""
    assert isinstance(exc, InputRejected)
    field = exc.field or "body"
    message = str(exc).removeprefix(f"{field}: ")
    return error_response(422, "validation", str(exc), [FieldError(field=field, message=message)])


_NAMES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media"}


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI's "error parsing the body": the body is the bad field
        return error_response(422, "validation", str(exc.detail), [FieldError(field="body", message=str(exc.detail))])
    if exc.status_code == 404 and "route" not in request.scope:
        unrouted = _unrouted_account(request)
        if unrouted is not None:
            return unrouted
    return error_response(exc.status_code, _NAMES.get(exc.status_code, "error"), str(exc.detail), (), exc.headers)


_ACCOUNT_PATHS = "/v1/accounts/"
ACCOUNT_ID_RULE = (
    "an account_id is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit, and it is one "
    "path segment: no '/', not even encoded as %2F"
)


def _unrouted_account(request: Request) -> JSONResponse | None:
    """No route took a path under /v1/accounts/: its account id is not one path segment (it holds a slash,
    encoded or not, or it is empty). A 422 naming account_id says what an id may hold, where the router's
    own 404 said only "Not Found"."""
    path = request.url.path  # decoded: %2F is a '/' here
    if not path.startswith(_ACCOUNT_PATHS):
        return None
    rest = path.removeprefix(_ACCOUNT_PATHS)
    account_id = rest.removesuffix("/events") if request.method == "POST" else rest
    message = f"{account_id!r} is not an account id: {ACCOUNT_ID_RULE}"
    fields = [FieldError(field="account_id", message=message)]
    return error_response(422, "validation", f"account_id: {message}", fields)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ValidationError, _validation)
    app.add_exception_handler(ApiError, _api_error)
    # By kind, not by leaf: a new NotFound or InputRejected is answered rightly without touching this list.
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(InputRejected, _rejected)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(VariantSetMismatch, _variant_set)


def _variant_set(request: Request, exc: Exception) -> JSONResponse:
    """This process's strategy variants are not the active set: it refuses to plan (a rolling restart half
    done, or a set published since). 503: another process, or this one restarted, takes the request."""
    return error_response(503, "variant_set_mismatch", str(exc), (), {"Retry-After": "5"})


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` declaring ErrorBody for each status (422 replaces FastAPI's own shape)."""
    text = {400: "Bad request", 401: "No or unknown API key", 403: "The key lacks the scope", 404: "Not found",
            408: "The body did not arrive in time", 409: "A request with this Idempotency-Key is in progress",
            410: "Gone: the cursor expired (`fields` name the oldest valid one), or the thing was removed",
            413: "The body is over the route's limit", 422: "Validation failed; `fields` names each field",
            503: "The store is unavailable; retry after Retry-After"}  # fmt: skip
    return {status: {"model": ErrorBody, "description": text.get(status, "Error")} for status in statuses}
