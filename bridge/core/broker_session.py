"""Requests to the broker, shared by the bridge's broker client and the site's agent.

- TLS certificates are always verified (the system CAs, or the CA bundle the config names);
  which URLs are acceptable at all (https, or http on this machine only) is decided by
  ``bridge.core.broker_endpoint`` before a session exists.
- The token is sent only in the ``Authorization: Bearer`` header of requests to the configured
  broker: never in a URL, never logged, and redirects are not followed (they could carry it
  elsewhere).
- Transient failures (connection errors, timeouts, 5xx, 429) are retried, bounded, with
  exponential backoff and full jitter, honouring ``Retry-After``.
- A broker may run as several instances on one database (``urls = [...]``): a connection
  error, a timeout, a 502 or a 503 moves the session to the next instance at once, and it
  stays there while that one answers. Nothing else fails over: a 4xx is the caller's mistake
  on every instance alike, and a 429 is this token's limit. Other 4xx answers fail at once
  with the broker's own message. ``requests`` exceptions and HTTP statuses are converted to our
  errors here; above this module nothing sees a ``requests`` type, and no value the broker sent
  is used before the ``answer_*`` helpers have checked it.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
import tenacity
from requests.exceptions import ChunkedEncodingError

from bridge import __version__
from bridge.core import defaults, strict_json
from bridge.core.broker_endpoint import BrokerEndpoint, check_broker_url, is_loopback, read_token
from bridge.core.errors import (
    AuthenticationFailed,
    BridgeError,
    BrokerUnavailable,
    ConfigError,
    Conflict,
    HostKeyRejected,
    InputRejected,
    JobUnknown,
    LeaseLost,
    ProtocolError,
    SiteUnreachable,
    StagingError,
    TransferCorrupted,
)
from bridge.core.streams import FileSlice

log = logging.getLogger(__name__)

_JOB_IN_PATH = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

# A callable makes a fresh body for every attempt; a FileSlice can be sent once (retry=False).
Body = bytes | FileSlice | Callable[[], Any] | None


class _BearerAuth(requests.auth.AuthBase):
    """Sets the header on each request; explicit auth also keeps ~/.netrc from replacing it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "<bearer token>"


class BrokerSession:
    """Requests to one broker with our token, retries and error conversion.

    Not shared between threads: the agent gives each thread its own session.
    """

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        attempts: int = defaults.HTTP_ATTEMPTS,
        initial_wait: float = defaults.HTTP_INITIAL_WAIT,
        max_wait: float = defaults.HTTP_MAX_WAIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        urls = endpoint.all_urls()
        keys = ["url"] if len(urls) == 1 else [f"urls[{i}]" for i in range(len(urls))]
        self.bases = [check_broker_url(u, endpoint.allow_http, endpoint.where, k)
                      for u, k in zip(urls, keys, strict=True)]  # fmt: skip
        self._current = 0  # the instance that answered last: sticky until it fails
        if endpoint.ca_bundle is not None and not os.path.isfile(endpoint.ca_bundle):
            raise ConfigError(
                f"{endpoint.key('ca_bundle')}: {endpoint.ca_bundle} is not a file; name the "
                "PEM file of the CA that signed the broker's certificate",
                field="ca_bundle",
            )
        self.attempts = max(1, attempts)
        self.max_wait = max_wait
        self._jitter = tenacity.wait_random_exponential(multiplier=initial_wait, max=max_wait)
        self._sleep = sleep
        self._http = requests.Session()
        self._http.auth = _BearerAuth(read_token(endpoint.token_file, endpoint.where))
        # Passed with every request: requests would let $REQUESTS_CA_BUNDLE override a
        # session-level setting, and the site's own CA must win.
        self._verify: str | bool = endpoint.ca_bundle or True
        self._http.headers["User-Agent"] = f"mint-bridge/{__version__}"
        if any(is_loopback(urlsplit(base).hostname or "") for base in self.bases):
            # A broker on this machine is reached directly, never through $HTTP_PROXY: over
            # plain http the proxy would see the token.
            self._http.trust_env = False

    def long_poll_timeout(self, wait: float) -> float:
        """The read timeout of a long poll of ``wait`` seconds: the wait plus a margin for the
        broker's answer, never more than the endpoint's read timeout (a black-holed poll is
        found that much after its wait ends)."""
        return wait + min(defaults.LONG_POLL_MARGIN, self.endpoint.read_timeout)

    @property
    def base(self) -> str:
        """The instance this session talks to now."""
        return self.bases[self._current]

    def close(self) -> None:
        self._http.close()

    # --- requests ------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        json: Any = None,
        body: Body = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        stream: bool = False,
        timeout: float | None = None,
        retry: bool = True,
    ) -> requests.Response:
        """One API call; retried while the failure is transient. Raises our errors only.
        ``timeout``: seconds without a byte before the call counts as lost (None: the
        endpoint's ``read_timeout``)."""
        read_timeout = self.endpoint.read_timeout if timeout is None else timeout

        def attempt(base: str) -> requests.Response:
            data = body() if callable(body) else body
            return self._once(base, method, path, params, json, data, headers, ok, stream,
                              read_timeout)  # fmt: skip

        # A stream already (partly) sent cannot go again: the caller resumes from the offset.
        replayable = not isinstance(body, FileSlice)

        def across() -> requests.Response:
            return self._each_instance(attempt, about(path, f"{method} {path}"), replayable)

        if not retry:
            return across()
        return self.retrying(about(path, f"{method} {path}"))(across)

    def _each_instance(
        self, call: Callable[[str], requests.Response], what: str, replayable: bool
    ) -> requests.Response:
        """``call`` on the current instance, then on each other one while instances are down."""
        tries = len(self.bases) if replayable else 1
        for n in range(tries):
            base = self.base
            try:
                return call(base)
            except BridgeError as exc:
                if len(self.bases) == 1 or not _instance_down(exc):
                    raise
                self._current = (self._current + 1) % len(self.bases)
                log.warning("%s: %s; failing over to %s", what, exc, self.base)
                if n == tries - 1:
                    raise
        raise AssertionError("unreachable: the loop returns or raises")


    def retrying(self, what: str) -> tenacity.Retrying:
        """This session's retry policy, for a step of several calls (e.g. a resumed download)."""
        return tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, BridgeError) and e.transient),
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=self._backoff,
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(what, state),
            reraise=True,
        )

    def json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """An API call whose answer is a JSON object (``{}`` for 204 and other empty bodies)."""
        return answer_json(self.request(method, path, **kwargs), path)

    def _once(
        self,
        base: str,
        method: str,
        path: str,
        params: Mapping[str, str | int | float] | None,
        json: Any,
        data: Any,
        headers: Mapping[str, str] | None,
        ok: tuple[int, ...],
        stream: bool,
        timeout: float,
    ) -> requests.Response:
        url = base + path
        try:
            response = self._http.request(
                method,
                url,
                params=params,
                json=json,
                data=data,
                headers=dict(headers or {}),
                stream=stream,
                verify=self._verify,
                timeout=(defaults.HTTP_CONNECT_TIMEOUT, timeout),
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            if not _certificate_refused(exc):  # e.g. the connection was cut mid-handshake
                raise SiteUnreachable(f"broker {base} unreachable: {_short(exc)}") from exc
            raise HostKeyRejected(_certificate_problem(base, exc, self.endpoint)) from exc
        except (requests.ConnectionError, requests.Timeout, ChunkedEncodingError) as exc:
            # ChunkedEncodingError is also what a body cut short by a dropped connection gives
            raise SiteUnreachable(f"broker {base} unreachable: {_short(exc)}") from exc
        except requests.RequestException as exc:
            raise ProtocolError(f"request to the broker failed: {_short(exc)}") from exc
        log.debug("%s %s -> %d", method, path, response.status_code)  # never headers
        if response.status_code in ok:
            return response
        try:
            raise error_for(response, self.endpoint)
        finally:
            response.close()

    def _backoff(self, state: tenacity.RetryCallState) -> float:
        delay: float = self._jitter(state)  # full jitter: uniform in [0, exponential ceiling]
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, BrokerUnavailable) and exc.retry_after is not None:
            delay = max(delay, min(exc.retry_after, self.max_wait))
        return delay

    def _log_retry(self, what: str, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s: %s; retrying in %.1f s (attempt %d of %d)",
            what, exc, wait, state.attempt_number + 1, self.attempts,
        )  # fmt: skip


def iter_body(
    response: requests.Response, chunk_size: int = defaults.CHUNK_SIZE
) -> Iterator[bytes]:
    """The body of a streamed answer; a cut connection is a transient SiteUnreachable."""
    try:
        yield from response.iter_content(chunk_size)
    except requests.RequestException as exc:
        raise SiteUnreachable(f"the broker's answer was cut: {_short(exc)}") from exc
    finally:
        response.close()


def about(path: str, what: str) -> str:
    """``what``, led by the job id in ``path`` if there is one: log lines about a job start
    with its id."""
    job = _JOB_IN_PATH.search(path)
    return f"{job.group(0)}: {what}" if job else what


def answer_json(response: requests.Response, path: str) -> dict[str, Any]:
    """The JSON object a broker answer holds (``{}`` for 204 and other empty bodies)."""
    if response.status_code == 204 or not response.content:
        return {}
    return strict_json.loads_object(response.content, what=f"the broker's answer to {path}")


def answer_count(value: object, what: str) -> int:
    """A count the broker sent (offset, size, version, epoch): a non-negative integer, as JSON
    number or header digits. Anything else is a ProtocolError, never a guess."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ProtocolError(f"broker sent an invalid {what}: {value!r:.40}")


def answer_seconds(value: object, what: str) -> float:
    """A duration the broker sent (a lease's time to live): a finite non-negative number."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return float(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    raise ProtocolError(f"broker sent an invalid {what}: {value!r:.40}")


def error_for(response: requests.Response, endpoint: BrokerEndpoint) -> BridgeError:
    """Our error for a broker answer that is not a success, with the broker's message."""
    status = response.status_code
    code, message, field = _error_fields(response)
    said = f"broker: {message}" if message else f"broker answered HTTP {status}"
    if status == 507:  # the broker's disk is full: no retry can help until it is freed
        return StagingError(said)
    if status == 429 or status >= 500:
        return BrokerUnavailable(said, retry_after=_retry_after(response),
                                 instance_down=status in (502, 503))  # fmt: skip
    if status == 401:
        return AuthenticationFailed(
            f"{said} (the token in {endpoint.token_file} was refused; ask the broker admin "
            "for a valid token)"
        )
    if status == 403:
        return AuthenticationFailed(f"{said} (the token is not allowed to do this)")
    if status == 404:
        return JobUnknown(said)
    if status == 409:
        offset = _int_header(response, "Upload-Offset")
        if code == "stale_epoch":
            return LeaseLost(said, code=code, offset=offset)
        if offset is None:
            offset = _int_header(response, "Log-Size")
        return Conflict(said, code=code or "conflict", offset=offset)
    if status == 400 and code == "checksum_mismatch":
        return TransferCorrupted(said)
    if status == 413 or (status == 400 and code == "unsafe_name"):
        return InputRejected(said, field=field)
    if 300 <= status < 400:
        return ProtocolError(
            f"broker answered with a redirect to {response.headers.get('Location', '?')!r:.120}; "
            f"set {endpoint.key('url')} to the broker's own address"
        )
    return ProtocolError(said, field=field)


def _error_fields(response: requests.Response) -> tuple[str | None, str, str | None]:
    try:
        error = strict_json.loads_object(response.content).get("error")
    except ProtocolError:
        error = None
    if not isinstance(error, dict):
        return None, "", None
    code, message, field = error.get("code"), error.get("message"), error.get("field")
    return (
        str(code)[:64] if code is not None else None,
        str(message)[:2000] if message is not None else str(code or ""),
        str(field)[:200] if field is not None else None,
    )


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _int_header(response: requests.Response, name: str) -> int | None:
    value = response.headers.get(name, "")
    return int(value) if value.isascii() and value.isdigit() else None


def _certificate_problem(base: str, exc: BaseException, endpoint: BrokerEndpoint) -> str:
    """The refusal in words, with the fix that matches its cause."""
    text = f"TLS with the broker {base} failed: {_short(exc)}"
    host = urlsplit(base).hostname or base
    if "mismatch" in str(exc).lower() or "doesn't match" in str(exc).lower():
        return (
            f"{text}; the broker's certificate does not name {host} in its subjectAltName: "
            f"make one that does (README, 'A certificate for the broker') or use the name "
            "the certificate holds in the URL"
        )
    return (
        f"{text}; if the broker uses its own CA, set {endpoint.key('ca_bundle')} to that CA's "
        "PEM file (requests does not read the system's CA store: it uses certifi's bundle "
        "unless told otherwise)"
    )


def _instance_down(exc: BridgeError) -> bool:
    """Whether another instance of the broker may succeed where this one failed."""
    if isinstance(exc, SiteUnreachable):
        return True
    return isinstance(exc, BrokerUnavailable) and exc.instance_down


def _certificate_refused(exc: BaseException) -> bool:
    """Whether a TLS failure is the broker's certificate failing verification (never retried)
    rather than a cut connection; requests nests the ssl error in its arguments."""
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return True
        pending.extend(
            [*item.args, getattr(item, "reason", None), item.__cause__, item.__context__]
        )
    return False


def _short(exc: BaseException) -> str:
    return str(exc)[:300]


__all__ = [
    "Body",
    "BrokerSession",
    "about",
    "answer_count",
    "answer_json",
    "answer_seconds",
    "error_for",
    "iter_body",
]
