"""What crosses the wire, and the one place where httpx's and pydantic's exceptions are translated.

Rules that hold here:

- Every httpx exception raised while talking to the control plane goes through
  :func:`translating` and comes out as :class:`~sixpn.model.errors.Unavailable` (cannot connect,
  timed out, connection lost) or :class:`~sixpn.model.errors.SixpnError`, with ``raise ... from``.
- A non-2xx answer becomes the :class:`~sixpn.model.errors.SixpnError` subclass its error body
  names (``{"error": {"code", "message", "field"}}``, via ``ERRORS_BY_CODE``), with the server's
  message and field; an answer without such a body (a proxy's 502 page, an unknown route) is
  mapped by its status.
- An ``https://`` control plane is verified against the system's trust store, or only against
  the CA given with ``--ca``/``SIXPN_CA`` (:func:`tls_context`); a certificate that does not
  verify is an error naming the URL, OpenSSL's reason and the trust it was checked against.
- JSON is decoded into the entity dataclasses and the API's response models with pydantic
  TypeAdapters, built once per type; a body that does not fit is an error naming the server.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import httpx
from pydantic import TypeAdapter, ValidationError

from sixpn.model.errors import (
    ERRORS_BY_CODE,
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    NotFound,
    SixpnError,
    Unauthorized,
    Unavailable,
)

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

# For answers that carry no sixpn error body: the status is all there is to go on.
_BY_STATUS: dict[int, type[SixpnError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: InvalidInput,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


UNIX_SCHEMES = ("unix:", "https+unix:")
UNIX_TLS_NAME = "sixpn"  # the name an https+unix: server's certificate is checked against


def check_url(url: str) -> str:
    """The API base URL without a trailing slash; InvalidInput unless http(s)://..., unix:PATH
    or https+unix:PATH (HTTPS over a Unix socket, the certificate made out to ``sixpn``)."""
    for scheme in UNIX_SCHEMES:
        if url.startswith(scheme):
            if not url[len(scheme) :].startswith("/"):
                raise InvalidInput(
                    f"API URL {url!r}: expected {scheme}/absolute/path/to/socket",
                    field="SIXPN_API",
                )
            return url
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise InvalidInput(f"API URL {url!r}: {exc}", field="SIXPN_API") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInput(
            f"API URL {url!r}: expected http://HOST:PORT, https://HOST:PORT or unix:/PATH",
            field="SIXPN_API",
        )
    return url.rstrip("/")


def tls_context(ca: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """How an ``https://`` control plane is verified: with ``ca`` (a PEM file), that CA only;
    without, the system's trust store (OpenSSL's default paths, which ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` override). Hostname checking is on either way. InvalidInput names a CA
    file that cannot be read or holds no certificate."""
    if ca is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=os.fspath(ca))
    except OSError as exc:  # ssl.SSLError is an OSError too: a file with no PEM certificate
        reason = exc.strerror if not isinstance(exc, ssl.SSLError) else str(exc)
        raise InvalidInput(
            f"CA file {os.fspath(ca)} (--ca, SIXPN_CA): cannot use it as a CA certificate: "
            f"{reason or exc}",
            field="SIXPN_CA",
        ) from exc


def _in_chain(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in ``exc``'s chain (httpx wraps httpcore's error, which
    wraps the ssl module's)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _verification_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    return _in_chain(exc, ssl.SSLCertVerificationError)


@contextmanager
def translating(url: str, *, ca: str | None = None) -> Iterator[None]:
    """Run a block that talks to the control plane at ``url`` (verified against ``ca``, or the
    system's trust store); translate httpx's exceptions."""
    try:
        yield
    except httpx.ConnectError as exc:
        failure = _verification_failure(exc)
        if failure is None:
            hint = ""
            if _in_chain(exc, ssl.SSLError):  # e.g. WRONG_VERSION_NUMBER: no TLS over there
                hint = " (a TLS handshake failed: does it serve plain http:// instead?)"
            raise Unavailable(
                f"cannot reach the control plane at {url}: {_detail(exc)}{hint}"
            ) from exc
        reason = failure.verify_message or failure.reason or str(failure)
        raise Unavailable(
            f"the control plane at {url} did not prove who it is: its TLS certificate did not "
            f"verify ({reason}); checked against {_trust(ca)}"
        ) from exc
    except httpx.TimeoutException as exc:
        raise Unavailable(
            f"cannot reach the control plane at {url}: timed out ({type(exc).__name__})"
        ) from exc
    except httpx.TransportError as exc:  # ReadError, RemoteProtocolError, WriteError, ...
        hint = ""
        if isinstance(exc, httpx.RemoteProtocolError) and url.startswith("http:"):
            # What a TLS server does with a plain request: it hangs up without a word.
            hint = " (if it serves HTTPS, the URL is https://...)"
        raise Unavailable(
            f"lost the connection to the control plane at {url}: {_detail(exc)}{hint}"
        ) from exc
    except httpx.HTTPError as exc:  # a body that cannot be decoded, too many redirects, ...
        raise SixpnError(f"bad answer from the control plane at {url}: {_detail(exc)}") from exc


def _trust(ca: str | None) -> str:
    return f"the CA in {ca}" if ca else "the system's trust store (give its CA with --ca FILE)"


def _detail(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def error_from_answer(url: str, status: int, body: bytes) -> SixpnError:
    """The exception a non-2xx answer stands for (returned, for the caller to raise)."""
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
        field = error.get("field")
    except (ValueError, KeyError, TypeError):
        cls = _BY_STATUS.get(status, SixpnError)
        text = body.decode("utf-8", "replace").strip()[:200] or "no body"
        return cls(f"the control plane at {url} answered HTTP {status}: {text}")
    return ERRORS_BY_CODE.get(code, SixpnError)(
        message, field=None if field is None else str(field)
    )


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def adapter(tp: Any) -> TypeAdapter[Any]:
    """The TypeAdapter of ``tp`` (an entity, a response model, ``list[Machine]``), built once."""
    found = _ADAPTERS.get(tp)
    if found is None:
        found = _ADAPTERS[tp] = TypeAdapter(tp)
    return found


def decode(url: str, tp: type[T], raw: bytes | str) -> T:
    """Validate a JSON body as ``tp``; an answer that does not fit names the server."""
    try:
        return cast(T, adapter(tp).validate_json(raw))
    except ValidationError as exc:
        raise SixpnError(
            f"unexpected answer from the control plane at {url}: {_first_error(exc)}"
        ) from exc


def decode_python(url: str, tp: type[T], value: object) -> T:
    """Like :func:`decode` for an already parsed JSON value."""
    try:
        return cast(T, adapter(tp).validate_python(value))
    except ValidationError as exc:
        raise SixpnError(
            f"unexpected answer from the control plane at {url}: {_first_error(exc)}"
        ) from exc


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "body"
    return f"{where}: {first.get('msg', 'invalid')}"


def to_jsonable(value: object) -> Any:
    """The API's JSON form of an entity, a response model or a list of them."""
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return adapter(type(value)).dump_python(value, mode="json")
