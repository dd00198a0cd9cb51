"""Polite HTTP: a global rate limit, byte budgets, retries with backoff + jitter, size caps,
and an allow-list of hosts.

Every request of a scrape goes through one :class:`HttpClient`, so its limits hold globally,
across threads, retries included. Every way a request can fail ends as one of two outcomes,
never as an exception escaping to the caller's caller: :class:`HttpError` with
``transient=True`` (connection reset or dropped mid-body, timeouts, 429, 5xx — retried, and a
later run tries again) or ``transient=False`` (invalid URL or scheme, a host not allowed, 4xx,
a body that is not what was asked for — a later run skips it unless asked).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

log = logging.getLogger(__name__)


class RateLimiter:
    """At most ``rate`` acquisitions per second, evenly spaced, shared by all threads."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate={rate}: must be > 0 requests per second")
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


def budget_delay(
    fetched: Sequence[tuple[float, int]], limits: Sequence[tuple[float, float]], now: float
) -> float:
    """Seconds until every window is under its cap again (0: now), given ``fetched`` bodies
    ``(time, bytes)`` in time order and ``limits`` ``(window s, cap bytes)``: the oldest bodies
    leave a window first."""
    delay = 0.0
    for window, cap in limits:
        recent = [(t, n) for t, n in fetched if t > now - window]
        used = sum(n for _, n in recent)
        for t, n in recent:
            if used < cap:
                break
            used -= n
            delay = max(delay, t + window - now)
    return delay


class ByteBudget:
    """Caps bytes per sliding window, e.g. ``[(3600, 5e9), (86400, 24e9)]`` (iNaturalist: more
    than ~5 GB/h or ~24 GB/day of media may get a client blocked); :meth:`wait` blocks until the
    next body fits again. A cap of ``None`` is no cap."""

    def __init__(self, limits: Sequence[tuple[float, float | None]]) -> None:
        self.limits = [(float(w), cap) for w, cap in limits if cap]
        self.horizon = max((w for w, _ in self.limits), default=0.0)
        self._log: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def _delay(self) -> float:
        """Seconds until every window is under its cap again (0: now)."""
        now = time.monotonic()
        while self._log and self._log[0][0] <= now - self.horizon:
            self._log.popleft()
        return budget_delay(list(self._log), self.limits, now)

    def wait(self) -> None:
        while True:
            with self._lock:
                delay = self._delay()
            if delay <= 0:
                return
            log.warning("media byte budget reached; pausing %.1f s", delay)
            time.sleep(min(delay, 60.0))

    def add(self, n: int) -> None:
        with self._lock:
            self._log.append((time.monotonic(), n))


class HttpError(Exception):
    """A request that failed for good in this run: ``transient`` when retries ran out on a
    fault that may pass (a later run tries again), else permanent (a later run skips it)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RetryableError(Exception):
    """Raised by a body check to ask for another try (the body was damaged on the way)."""


#: transport faults that may pass: retried with backoff (requests wraps urllib3's in these)
TRANSIENT = (
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,  # connection closed mid-body, short body
    requests.exceptions.ContentDecodingError,
    RetryableError,
)
#: faults that will not pass by retrying: bad URL or scheme, TLS failures, redirect loops
PERMANENT = (
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.SSLError,
    requests.exceptions.TooManyRedirects,
)
REDIRECTS = (301, 302, 303, 307, 308)


def host_allowed(url: str, hosts: Sequence[str] | None, allow_http: bool) -> str | None:
    """Why ``url`` may not be fetched (``None`` when it may): its scheme must be https (or
    http with ``allow_http``) and its host one of ``hosts`` or a subdomain of one
    (``hosts=None``: any host)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port: raises on a malformed one
    except ValueError as e:
        return f"malformed URL ({e})"
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        return f"scheme {parts.scheme or '(none)'!r} not allowed (allowed: {', '.join(schemes)})"
    host = (parts.hostname or "").lower()
    if hosts is not None and not any(host == h or host.endswith("." + h) for h in hosts):
        return f"host {host!r} not in the allowed hosts ({', '.join(hosts)})"
    return None


@dataclass
class RetryPolicy:
    """Retries on timeouts, connection errors, 429 (honouring ``Retry-After``) and 5xx.

    Args:
        retries: extra attempts after the first.
        backoff: first backoff in seconds; doubles every attempt, plus up to 100% jitter.
        max_backoff: cap of one wait, ``Retry-After`` included.
    """

    retries: int = 4
    backoff: float = 1.0
    max_backoff: float = 120.0

    def delay(self, attempt: int) -> float:
        base = self.backoff * 2**attempt
        return min(base * (1 + random.random()), self.max_backoff)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class HttpClient:
    """GET with a global rate limit, retries and a body-size cap.

    Args:
        rate: requests per second, never exceeded (iNaturalist asks for ~1/s on its API).
        user_agent: a descriptive User-Agent, with a way to reach you.
        timeout: seconds to connect and between bytes.
        retry: see :class:`RetryPolicy`.
        max_bytes: refuse bodies larger than this.
        byte_budget: optional hourly/daily byte caps.
        allowed_hosts: hosts (and their subdomains) that may be contacted, checked again after
            every redirect; ``None`` allows any.
        allow_http: allow plain ``http`` (only for local servers: the User-Agent names you).
        max_redirects: redirects followed per request.
        limiter: the rate limiter to draw from instead of this client's own (a fleet-wide one:
            :class:`~inat_lightning.scrape.budget.SharedRateLimiter`).
    """

    def __init__(
        self,
        rate: float,
        user_agent: str,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_bytes: int = 20_000_000,
        byte_budget: ByteBudget | Any | None = None,
        allowed_hosts: Sequence[str] | None = None,
        allow_http: bool = False,
        max_redirects: int = 5,
        limiter: RateLimiter | Any | None = None,
    ) -> None:
        self.limiter = limiter or RateLimiter(rate)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_bytes = max_bytes
        self.byte_budget = byte_budget
        self.allowed_hosts = [h.lower() for h in allowed_hosts] if allowed_hosts else None
        self.allow_http = allow_http
        self.max_redirects = max_redirects
        self._local = threading.local()
        self.user_agent = user_agent

    @property
    def session(self) -> requests.Session:
        """One ``requests.Session`` per thread (sessions are not thread-safe)."""
        if not hasattr(self._local, "session"):
            s = requests.Session()
            s.headers["User-Agent"] = self.user_agent
            self._local.session = s
        return self._local.session

    def _read(self, resp: requests.Response) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise HttpError(f"body of {declared} bytes exceeds max_bytes={self.max_bytes}")
        chunks, size = [], 0
        for chunk in resp.iter_content(65536):  # a short body raises ChunkedEncodingError
            size += len(chunk)
            if size > self.max_bytes:
                raise HttpError(f"body exceeds max_bytes={self.max_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)

    def _open(self, url: str, params: dict | None) -> requests.Response:
        """The final response of ``url``, redirects followed by hand so that every hop's host
        is checked against the allow-list before it is contacted."""
        for _ in range(self.max_redirects + 1):
            refused = host_allowed(url, self.allowed_hosts, self.allow_http)
            if refused:
                raise HttpError(f"{url}: {refused}")
            self.limiter.acquire()  # every hop is a request: the rate limit counts it
            resp = self.session.get(
                url, params=params, timeout=self.timeout, stream=True, allow_redirects=False
            )
            if resp.status_code not in REDIRECTS or "Location" not in resp.headers:
                return resp
            resp.close()
            url, params = urljoin(url, resp.headers["Location"]), None
        raise HttpError(f"more than {self.max_redirects} redirects (a loop?)")

    def open_stream(self, url: str) -> requests.Response:
        """A 200 response of ``url`` whose body is left unread, for streaming multi-GB files
        (no ``max_bytes``); opening is retried like :meth:`get`, the caller closes it."""
        reason = ""
        for attempt in range(self.retry.retries + 1):
            try:
                resp = self._open(url, None)
            except (*TRANSIENT, requests.ConnectionError) as e:
                reason = f"{type(e).__name__}: {str(e)[:300]}"
            except requests.RequestException as e:
                raise HttpError(f"{type(e).__name__}: {e}") from e
            else:
                if resp.status_code == 200:
                    return resp
                resp.close()
                reason = f"HTTP {resp.status_code} for {url}"
                if 400 <= resp.status_code < 500 and resp.status_code != 429:
                    raise HttpError(reason)
            if attempt < self.retry.retries:
                time.sleep(self.retry.delay(attempt))
        raise HttpError(
            f"gave up after {self.retry.retries + 1} attempts: {reason}", transient=True
        )

    def get(
        self,
        url: str,
        params: dict | None = None,
        accept: Callable[[requests.Response, bytes], None] | None = None,
    ) -> tuple[requests.Response, bytes]:
        """GET ``url``; ``accept(response, body)`` may raise :class:`RetryableError` (try again)
        or :class:`HttpError` (give up). Returns the response and its body; every failure is an
        :class:`HttpError` (see the module doc)."""
        reason = ""
        for attempt in range(self.retry.retries + 1):
            if self.byte_budget:
                self.byte_budget.wait()
            wait = self.retry.delay(attempt)
            try:
                with self._open(url, params) as resp:
                    status = resp.status_code
                    if status == 429 or status >= 500:
                        reason = f"HTTP {status}"
                        hinted = retry_after_seconds(resp.headers.get("Retry-After"))
                        if status == 429 and hinted is not None:
                            wait = min(hinted, self.retry.max_backoff)
                    elif status >= 400:
                        raise HttpError(f"HTTP {status} for {url}")
                    else:
                        body = self._read(resp)
                        if self.byte_budget:
                            self.byte_budget.add(len(body))
                        if accept:
                            accept(resp, body)
                        return resp, body
            except PERMANENT as e:
                raise HttpError(f"{type(e).__name__}: {e}") from e
            except (*TRANSIENT, requests.ConnectionError) as e:
                reason = f"{type(e).__name__}: {str(e)[:300]}"
            except requests.RequestException as e:  # anything else requests may raise
                raise HttpError(f"{type(e).__name__}: {e}") from e
            if attempt < self.retry.retries:
                log.debug("retrying %s in %.1f s (%s)", url, wait, reason)
                time.sleep(wait)
        raise HttpError(
            f"gave up after {self.retry.retries + 1} attempts: {reason}", transient=True
        )
