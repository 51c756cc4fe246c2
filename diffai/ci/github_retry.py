"""Sending GitHub API requests again when GitHub says "later", bounded in attempts and time.

GitHub's documented rules ("Rate limits for the REST API"): a 403 or 429 that is a rate
limit says how long to wait with ``retry-after``, else with ``x-ratelimit-remaining: 0``
and ``x-ratelimit-reset`` (epoch seconds), else "wait at least one minute". Server errors,
lost connections and answers that never came are worth a retry after an exponential
backoff. Any other answer is final: retrying a 422 or a permission refusal only repeats it.

GitLab's calls go through the same sender: its 429 says ``Retry-After``, or spells the
quota headers without the ``x-`` (``RateLimit-Remaining``, ``RateLimit-Reset``), and its
errors say ``message`` or ``error``.

A CI job must finish, so every wait counts against one budget: when GitHub asks for a
longer wait than is left, the request fails at once with a message that says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests

from diffai.errors import GitHubError

UNSPECIFIED_RATE_LIMIT_WAIT = 60.0  # GitHub: "wait for at least one minute before retrying"
RESET_SLACK = 1.0  # x-ratelimit-reset has whole seconds, and runner clocks drift a little
QUOTA_PREFIXES = ("x-ratelimit-", "ratelimit-")  # GitHub's, GitLab's

Outcome = requests.Response | requests.RequestException


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts and seconds of waiting per request, seconds per attempt.

    ``request_timeout`` is how long one attempt waits for a connection or for the next
    bytes of an answer; a stalled attempt is then "no response", retried like one. The
    budget is measured with a monotonic ``clock``, so in production the time a timed-out
    attempt took counts against ``max_total_wait`` too, not only the sleeps between.
    """

    max_attempts: int = 5
    max_total_wait: float = 60.0
    base_delay: float = 1.0
    request_timeout: float = 30.0


@dataclass(frozen=True)
class Wait:
    """Why a request is tried again, and after how many seconds."""

    seconds: float
    reason: str


@dataclass(frozen=True)
class RetryingSender:
    """Sends one request until GitHub gives a final answer, or the policy runs out.

    The clocks are parameters so tests neither sleep nor depend on the time of day:
    ``clock`` measures the budget, ``wall_clock`` reads ``x-ratelimit-reset`` epochs.
    """

    session: requests.Session = field(repr=False)
    policy: RetryPolicy
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    service: str = "GitHub"

    def send(
        self,
        method: str,
        url: str,
        *,
        before_resend: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """GitHub's final answer, which may be an error status; GitHubError when out of tries.

        ``before_resend`` runs before every attempt but the first: a request that is not
        idempotent can look whether a lost answer had done its work, and raise to stop.
        """
        started = self.clock()
        for attempt in itertools.count(1):
            outcome = self._attempt(method, url, kwargs)
            wait = self._wait_for(outcome, attempt)
            if wait is None:
                assert isinstance(outcome, requests.Response)  # only a response can be final
                return outcome
            stop = self._reason_to_stop(attempt, wait, self.clock() - started)
            if stop:
                _give_up(method, url, outcome, stop, self.service)
            self.sleep(wait.seconds)
            if before_resend:
                before_resend()

    def _reason_to_stop(self, attempt: int, wait: Wait, elapsed: float) -> str | None:
        """The attempts are spent, or the next one would start after the time budget."""
        budget = self.policy.max_total_wait
        if attempt >= self.policy.max_attempts:
            return f"{wait.reason}; still failing after {attempt} attempts"
        if elapsed + wait.seconds > budget:
            later = f"the next try would be in {wait.seconds:.0f} s"
            return f"{wait.reason}; {later}, beyond the {budget:.0f} s retry budget"
        return None

    def _attempt(self, method: str, url: str, kwargs: dict[str, Any]) -> Outcome:
        try:
            return self.session.request(method, url, timeout=self.policy.request_timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            return exc

    def _wait_for(self, outcome: Outcome, attempt: int) -> Wait | None:
        """None when the outcome is final; otherwise how long to wait before the next try."""
        if isinstance(outcome, requests.RequestException):
            return Wait(self._backoff(attempt), "no response")
        status = outcome.status_code
        if status >= 500:
            return Wait(retry_after(outcome) or self._backoff(attempt), "server error")
        if status == 429 or (status == 403 and is_rate_limited(outcome)):
            return Wait(self._rate_limit_wait(outcome), "rate limited")
        return None

    def _backoff(self, attempt: int) -> float:
        return self.policy.base_delay * 2 ** (attempt - 1)

    def _rate_limit_wait(self, response: requests.Response) -> float:
        """GitHub's order: retry-after, then the reset of an exhausted quota, then a minute."""
        after = retry_after(response)
        if after is not None:
            return after
        reset = quota_reset(response)
        if reset is not None:
            return max(reset - self.wall_clock(), 0.0) + RESET_SLACK
        return UNSPECIFIED_RATE_LIMIT_WAIT


def quota_reset(response: requests.Response) -> float | None:
    """When an exhausted quota comes back (epoch seconds); None when it is not exhausted."""
    headers = response.headers
    for prefix in QUOTA_PREFIXES:
        reset = headers.get(f"{prefix}reset", "").strip()
        if headers.get(f"{prefix}remaining") == "0" and reset.isdigit():
            return float(reset)
    return None


def is_rate_limited(response: requests.Response) -> bool:
    """A 403 is a rate limit only when GitHub says so; otherwise it is a refusal."""
    return (
        "retry-after" in response.headers
        or quota_reset(response) is not None
        or "rate limit" in api_message(response).lower()
    )


def retry_after(response: requests.Response) -> float | None:
    """The ``retry-after`` seconds, if GitHub sent them (it never sends an HTTP date)."""
    value = response.headers.get("retry-after", "")
    return float(value) if value.strip().isdigit() else None


def api_message(response: requests.Response) -> str:
    """The API's ``message`` (GitLab: or ``error``); a proxy's HTML page becomes its status line."""
    try:
        body = response.json()
        message = body.get("message") or body.get("error")
    except (ValueError, AttributeError):
        message = None
    return str(message)[:500] if message else f"{response.status_code} {response.reason}"


def _give_up(method: str, url: str, outcome: Outcome, why: str, service: str) -> NoReturn:
    call = {"method": method, "path": urlsplit(url).path, "service": service}
    if isinstance(outcome, requests.RequestException):
        raise GitHubError(f"{why}: {outcome}", **call) from outcome
    raise GitHubError(f"{api_message(outcome)} ({why})", status=outcome.status_code, **call)
