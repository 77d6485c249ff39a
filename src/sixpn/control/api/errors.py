"""One map from the error tree to HTTP answers: ``{"error": {"code", "message", "field"}}``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from sixpn.control.api.auth import principal
from sixpn.model.errors import InvalidInput, NotFound, SixpnError


def error_response(exc: SixpnError) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)


def _field_of(loc: tuple[int | str, ...]) -> str:
    # ("body", "metadata", "k") -> "metadata.k"; ("query", "since") -> "since"
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path") else []
    return ".".join(parts) or "body"


_HTTP_CODES = {404: NotFound.code, 405: "method_not_allowed", 413: "too_large"}


def install(app: FastAPI) -> None:
    async def on_sixpn_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, SixpnError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # FastAPI reads the body before the dependencies run: a caller without a valid token
        # must hear 401 first, not learn anything about the body's shape.
        try:
            await principal(request)
        except SixpnError as auth_error:
            return error_response(auth_error)
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error_response(InvalidInput("body: not valid JSON", field="body"))
        field = _field_of(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid value"))
        if first.get("type") == "extra_forbidden":
            msg = "unknown field"
        return error_response(InvalidInput(f"{field}: {msg}", field=field))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's own errors (unknown route, wrong method), FastAPI's "error parsing the
        # body" and the body cap (limits.py) get the same body as ours.
        assert isinstance(exc, HTTPException)
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = exc.detail
        if isinstance(exc.__cause__, RecursionError):
            # json.loads gave up on "[[[[...": say so, not "error parsing the body".
            code, detail = InvalidInput.code, "body: JSON nested too deeply"
        message = f"{request.method} {request.url.path}: {detail}"
        return JSONResponse(
            {"error": {"code": code, "message": message}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(SixpnError, on_sixpn_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
