"""What the GitHub and GitLab clients share below their endpoints: calls, answers, pages.

Both APIs are JSON over HTTPS with the same failure modes: a refusal for a token that may
not write, a proxy's HTML page where JSON belongs, a list split into pages of 100 that
are linked by ``Link: rel="next"`` (GitLab also says ``X-Next-Page``). One client base
checks every answer's shape, maps refusals to ``CannotComment`` and follows next-page
links only on the API's own host, since the session would send the token to any host.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests

from diffai.ci.github_retry import RetryingSender, RetryPolicy, api_message
from diffai.errors import CannotComment, GitHubError

PER_PAGE = 100  # the most either API hands out per page
MAX_PAGES = 1_000  # 100,000 items: beyond that a listing is a server that never ends it
# Both answer 403 (and 404 for what the token may not even see) when a permission is
# missing; rate limits were ruled out by the retry layer before a 403 gets here.
_ERROR_FOR_STATUS: dict[int, type[GitHubError]] = {
    401: CannotComment,
    403: CannotComment,
    404: CannotComment,
}


class RestClient:
    """A JSON API at ``api_url``, every request sent through one retrying sender.

    The clocks are parameters so tests neither sleep nor depend on the time of day.
    """

    service = "GitHub"

    def __init__(
        self,
        session: requests.Session,
        api_url: str,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        policy = retry or RetryPolicy()
        self._sender = RetryingSender(session, policy, sleep, clock, wall_clock, self.service)

    def call(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """The successful response; the failure mapped to CannotComment or GitHubError."""
        response = self._sender.send(method, url, **kwargs)
        if response.ok:
            return response
        error = _ERROR_FOR_STATUS.get(response.status_code, GitHubError)
        status, path = response.status_code, urlsplit(url).path
        message = api_message(response)
        raise error(message, method=method, path=path, status=status, service=self.service)

    def answer(self, response: requests.Response, shape: type[Any], *keys: str) -> Any:
        """A successful answer's body, checked: a list of objects or one object, with these keys.

        Anything else (a proxy's login page, a cut-off body) is a GitHubError naming the call,
        raised at once: sending the request again would not change what came back.
        """
        try:
            data = response.json()
        except ValueError:
            kind = response.headers.get("content-type") or "no content type"
            problem = f"a body that is not JSON ({kind})"
        else:
            problem = shape_problem(data, shape, keys)
            if problem is None:
                return data
        raise GitHubError(
            f"unexpected answer: {problem}",
            method=response.request.method or "",
            path=urlsplit(response.url).path,
            status=response.status_code,
            service=self.service,
        )

    def pages(self, url: str, params: dict[str, Any], *keys: str) -> Iterator[dict[str, Any]]:
        """Every item of a listing, page by page of ``PER_PAGE``, in the order the API gives."""
        next_url: str | None = url
        query: dict[str, Any] | None = {**params, "per_page": PER_PAGE}
        for _ in range(MAX_PAGES):
            response = self.call("GET", next_url, params=query)
            yield from self.answer(response, list, *keys)
            next_url, query = self._next_page(response, next_url, query)
            if next_url is None:
                return
        raise GitHubError(
            f"a listing of more than {MAX_PAGES} pages: {urlsplit(url).path}", service=self.service
        )

    def _next_page(
        self, response: requests.Response, url: str, query: dict[str, Any] | None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Link rel="next" (it keeps the query), else GitLab's ``X-Next-Page`` number."""
        link = response.links.get("next", {}).get("url")
        if link:
            if not link.startswith(f"{self.api_url}/"):
                raise GitHubError(
                    f"refusing to follow a next-page link off the API: {link}",
                    service=self.service,
                )
            return link, None
        page = response.headers.get("x-next-page", "").strip()
        if query is None or not page.isdigit():
            return None, None  # a Link-followed listing ends where its links end
        return url, {**query, "page": int(page)}


def shape_problem(data: Any, shape: type[Any], keys: tuple[str, ...]) -> str | None:
    """What is wrong with a body's shape; None when nothing is."""
    if not isinstance(data, shape):
        return f"JSON that is not {'a list' if shape is list else 'an object'}"
    for item in data if shape is list else [data]:
        if not isinstance(item, dict):
            return "a list item that is not an object"
        missing = [key for key in keys if key not in item]
        if missing:
            return f"an object without {', '.join(missing)}"
    return None
