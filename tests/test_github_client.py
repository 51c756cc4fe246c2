"""The GitHub client against a real loopback server: one sticky comment, retries, refusals."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

from diffai import __version__
from diffai.ci.github import (
    COMMENT_LIMIT,
    GitHub,
    PullRequest,
    RetryPolicy,
    make_session,
    pull_request_from_event,
)
from diffai.errors import CannotComment, GitHubError
from tests.github_api import (
    APP,
    APP_TOKEN,
    BOT,
    FORBIDDEN,
    READ_ONLY_TOKEN,
    REPOSITORY,
    USER_TOKEN,
    WRITE_TOKEN,
    FakeGitHub,
    Pull,
    Reply,
    comment_json,
    error,
)

MARKER = "<!-- diffai-comment: models -->"
SHA = "a" * 40
COMMENTS = r"/issues/7/comments$"
STALLED = Reply(200, [], delay=1.0)  # long past the tests' request_timeout of 0.2 s
SECONDARY = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)


class FakeTime:
    """Clocks that move only when the client sleeps: waits are recorded, never spent."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(github_api: FakeGitHub, fake_time: FakeTime) -> Callable[..., GitHub]:
    def make(token: str = WRITE_TOKEN, api_url: str | None = None, **retry: Any) -> GitHub:
        return GitHub(
            make_session(token),
            api_url or github_api.api_url,
            REPOSITORY,
            retry=RetryPolicy(**retry),
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            wall_clock=fake_time.clock,
        )

    return make


@pytest.fixture
def github(make_client: Callable[..., GitHub]) -> GitHub:
    return make_client()


def body(text: str) -> str:
    return f"{MARKER}\n## diffai\n{text}\n"


# --- the sticky comment ----------------------------------------------------------------


def test_creates_the_comment_when_there_is_none(github: GitHub, github_api: FakeGitHub) -> None:
    url = github.upsert_comment(7, MARKER, body("pass"))

    [comment] = github_api.comments_on(7)
    assert (comment.login, comment.body) == (BOT, body("pass"))
    assert url == f"https://github.com/{REPOSITORY}/pull/7#issuecomment-{comment.id}"
    headers = github_api.calls("POST")[0].headers
    assert headers["authorization"] == f"Bearer {WRITE_TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"] == f"diffai/{__version__}"


def test_a_second_call_edits_the_same_comment(github: GitHub, github_api: FakeGitHub) -> None:
    first = github.upsert_comment(7, MARKER, body("pass"))
    second = github.upsert_comment(7, MARKER, body("fail"))

    assert first == second
    assert [c.body for c in github_api.comments_on(7)] == [body("fail")]
    assert (len(github_api.calls("POST")), len(github_api.calls("PATCH"))) == (1, 1)


def test_an_unchanged_body_is_not_sent_again(github: GitHub, github_api: FakeGitHub) -> None:
    github.upsert_comment(7, MARKER, body("pass"))
    github.upsert_comment(7, MARKER, body("pass"))

    assert github_api.calls("PATCH") == []


def test_finds_its_comment_on_page_two_behind_110_others(
    github: GitHub, github_api: FakeGitHub
) -> None:
    github_api.add_comments(7, 110)
    ours = github_api.add_comment(7, body("old"))

    github.upsert_comment(7, MARKER, body("new"))

    assert ours.body == body("new")
    assert len(github_api.comments_on(7)) == 111
    pages = github_api.calls("GET", "/comments$")
    assert [(r.path.split("/")[1], r.query) for r in pages] == [
        ("repos", {"per_page": "100"}),
        ("repositories", {"per_page": "100", "page": "2"}),  # GitHub's own next link
    ]


def test_a_foreign_comment_with_the_marker_is_left_alone(
    github: GitHub, github_api: FakeGitHub
) -> None:
    foreign = github_api.add_comment(7, body("looks like yours"), login="mallory")

    github.upsert_comment(7, MARKER, body("pass"))

    assert foreign.body == body("looks like yours")
    assert [(c.login, c.body) for c in github_api.comments_on(7)] == [
        ("mallory", body("looks like yours")),
        (BOT, body("pass")),
    ]


def test_the_oldest_of_its_marked_comments_is_the_sticky_one(
    github: GitHub, github_api: FakeGitHub
) -> None:
    oldest = github_api.add_comment(7, body("one"))
    github_api.add_comment(7, body("two"))

    found = github.find_comment(7, MARKER)
    assert found is not None
    assert found.id == oldest.id


def test_a_tag_marks_a_separate_comment(github: GitHub, github_api: FakeGitHub) -> None:
    other = "<!-- diffai-comment: tokenizer -->"
    github.upsert_comment(7, MARKER, body("models"))
    github.upsert_comment(7, other, f"{other}\ntokenizer")

    assert len(github_api.comments_on(7)) == 2


def test_a_body_without_its_marker_is_refused(github: GitHub, github_api: FakeGitHub) -> None:
    with pytest.raises(ValueError, match="marker"):
        github.upsert_comment(7, MARKER, "## diffai\n")
    assert github_api.received == []


@pytest.mark.parametrize("marker_at", ["top", "bottom"])
def test_a_long_body_is_trimmed_keeping_the_marker(
    github: GitHub, github_api: FakeGitHub, marker_at: str
) -> None:
    rows = "".join(f"| layer{i}.weight | 0.{i:05d} |\n" for i in range(5000))
    text = f"## diffai\n```\n{rows}```\n"
    github.upsert_comment(7, MARKER, f"{MARKER}\n{text}" if marker_at == "top" else text + MARKER)

    [comment] = github_api.comments_on(7)  # the server refuses bodies over the limit
    assert len(comment.body) <= COMMENT_LIMIT
    assert comment.body.startswith(f"{MARKER}\n## diffai\n```\n| layer0.weight | 0.00000 |\n")
    assert comment.body.count(MARKER) == 1
    assert comment.body.count("```") % 2 == 0
    assert "the full report is in the run's artifact" in comment.body
    assert github.find_comment(7, MARKER) is not None


def test_a_comment_deleted_after_it_was_listed_is_created_again(
    github: GitHub, github_api: FakeGitHub
) -> None:
    deleted = github_api.add_comment(7, body("old"))
    github_api.fail("GET", COMMENTS, Reply(200, [comment_json(deleted, github_api.api_url)]))
    del github_api.comments[deleted.id]  # by someone, between the listing and the edit

    url = github.upsert_comment(7, MARKER, body("new"))

    [comment] = github_api.comments_on(7)
    assert comment.body == body("new")
    assert url == f"https://github.com/{REPOSITORY}/pull/7#issuecomment-{comment.id}"
    assert [r.method for r in github_api.received[-2:]] == ["PATCH", "POST"]


def test_a_deleted_comment_that_may_not_be_created_again_is_refused(
    github: GitHub, github_api: FakeGitHub
) -> None:
    github_api.fail("PATCH", r"/issues/comments/\d+$", error(404, "Not Found"))
    github_api.fail("POST", COMMENTS, error(403, FORBIDDEN))
    github_api.add_comment(7, body("old"))

    with pytest.raises(CannotComment, match=FORBIDDEN) as caught:
        github.upsert_comment(7, MARKER, body("new"))

    assert (caught.value.method, caught.value.status) == ("POST", 403)


# --- who "we" are -----------------------------------------------------------------------


def test_an_installation_token_has_no_login(github: GitHub, github_api: FakeGitHub) -> None:
    assert github.identity() is None
    assert github.identity() is None
    assert len(github_api.calls("GET", "^/user$")) == 1  # asked once


def test_a_github_app_token_keeps_one_sticky_comment(
    make_client: Callable[..., GitHub], github_api: FakeGitHub
) -> None:
    """An App's token writes as <app>[bot] and may not read GET /user either."""
    person = github_api.add_comment(7, body("a person's copy"), login="mallory")
    app = make_client(APP_TOKEN)

    app.upsert_comment(7, MARKER, body("one"))
    make_client(APP_TOKEN).upsert_comment(7, MARKER, body("two"))  # the next run

    assert [(c.login, c.body) for c in github_api.comments_on(7)] == [
        ("mallory", person.body),
        (APP, body("two")),
    ]


def test_a_personal_token_comments_as_its_user(
    make_client: Callable[..., GitHub], github_api: FakeGitHub
) -> None:
    ours = github_api.add_comment(7, body("old"), login="octocat")
    github_api.add_comment(7, body("the bot's"))

    make_client(USER_TOKEN).upsert_comment(7, MARKER, body("new"))

    assert ours.body == body("new")
    assert len(github_api.comments_on(7)) == 2


# --- retries ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "waits"),
    [
        pytest.param(Reply(502, "<html>502 Bad Gateway</html>"), [1.0], id="502"),
        pytest.param(error(503, "Service Unavailable"), [1.0], id="503"),
        pytest.param(
            Reply(403, {"message": SECONDARY}, {"retry-after": "1"}), [1.0], id="secondary"
        ),
        pytest.param(Reply(403, {"message": SECONDARY}), [60.0], id="secondary-no-header"),
        pytest.param(
            Reply(429, {"message": "Too Many Requests"}, {"retry-after": "3"}), [3.0], id="429"
        ),
        pytest.param(
            Reply(
                403,
                {"message": "API rate limit exceeded for installation ID 1."},
                {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000030"},
            ),
            [31.0],  # until the reset, plus a second of slack
            id="primary-rate-limit",
        ),
    ],
)
def test_transient_failures_are_retried_into_success(
    github: GitHub, github_api: FakeGitHub, fake_time: FakeTime, fault: Reply, waits: list[float]
) -> None:
    github_api.fail("POST", COMMENTS, fault)

    github.upsert_comment(7, MARKER, body("pass"))

    assert fake_time.slept == waits
    assert len(github_api.calls("POST")) == 2
    assert len(github_api.comments_on(7)) == 1


def test_server_errors_back_off_exponentially_then_give_up(
    github: GitHub, github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    github_api.fail("GET", COMMENTS, *[error(502, "Server Error")] * 5)

    with pytest.raises(GitHubError, match="still failing after 5 attempts") as caught:
        github.find_comment(7, MARKER)

    assert fake_time.slept == [1.0, 2.0, 4.0, 8.0]
    assert (caught.value.status, caught.value.method) == (502, "GET")


def test_a_wait_beyond_the_budget_gives_up_at_once(
    github: GitHub, github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(fake_time.now) + 3600)}
    github_api.fail("POST", COMMENTS, Reply(403, {"message": "API rate limit exceeded"}, reset))

    with pytest.raises(GitHubError, match=r"3601 s, beyond the 60 s retry budget") as caught:
        github.upsert_comment(7, MARKER, body("pass"))

    assert type(caught.value) is GitHubError  # a rate limit is not a missing permission
    assert fake_time.slept == []


def test_waits_add_up_against_the_budget(
    make_client: Callable[..., GitHub], github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    github_api.fail("GET", COMMENTS, *[Reply(429, {}, {"retry-after": "25"})] * 3)

    with pytest.raises(GitHubError, match="retry budget"):
        make_client(max_total_wait=60).find_comment(7, MARKER)

    assert fake_time.slept == [25.0, 25.0]


def test_no_connection_is_retried_then_reported(
    make_client: Callable[..., GitHub], fake_time: FakeTime
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]

    with pytest.raises(GitHubError, match="no response") as caught:
        make_client(api_url=f"http://127.0.0.1:{port}").find_comment(7, MARKER)

    assert caught.value.status is None
    assert fake_time.slept == [1.0, 2.0, 4.0, 8.0]


def test_a_stalled_answer_times_out_and_is_asked_again(
    make_client: Callable[..., GitHub], github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    github_api.fail("GET", COMMENTS, STALLED)

    make_client(request_timeout=0.2).upsert_comment(7, MARKER, body("pass"))

    assert len(github_api.calls("GET", COMMENTS)) == 2
    assert [c.body for c in github_api.comments_on(7)] == [body("pass")]
    assert fake_time.slept == [1.0]


def test_answers_that_never_come_are_bounded_then_reported(
    make_client: Callable[..., GitHub], github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    github_api.fail("GET", COMMENTS, *[STALLED] * 3)
    client = make_client(request_timeout=0.2, max_attempts=3)
    started = time.monotonic()

    with pytest.raises(
        GitHubError, match=r"no response; still failing after 3 attempts: .*timed out"
    ):
        client.find_comment(7, MARKER)

    assert time.monotonic() - started < 2.0  # three stalls of 1 s were cut at 0.2 s each
    assert fake_time.slept == [1.0, 2.0]


@pytest.mark.parametrize(
    "lost",
    [
        pytest.param(Reply(502, "<html>502 Bad Gateway</html>", acts=True), id="502"),
        pytest.param(Reply(201, {}, delay=1.0, acts=True), id="timeout"),
    ],
)
def test_a_comment_created_despite_a_lost_answer_is_not_posted_twice(
    make_client: Callable[..., GitHub], github_api: FakeGitHub, fake_time: FakeTime, lost: Reply
) -> None:
    github_api.fail("POST", COMMENTS, lost)

    url = make_client(request_timeout=0.2).upsert_comment(7, MARKER, body("pass"))

    [comment] = github_api.comments_on(7)
    assert url == f"https://github.com/{REPOSITORY}/pull/7#issuecomment-{comment.id}"
    assert len(github_api.calls("POST")) == 1
    assert github_api.calls("PATCH") == []
    assert fake_time.slept == [1.0]


def test_a_validation_error_is_not_retried(
    github: GitHub, github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    github_api.fail("POST", COMMENTS, error(422, "Validation Failed"))

    with pytest.raises(GitHubError) as caught:
        github.upsert_comment(7, MARKER, body("pass"))

    assert str(caught.value) == (
        f"GitHub API POST /repos/{REPOSITORY}/issues/7/comments -> HTTP 422: Validation Failed"
    )
    assert len(github_api.calls("POST")) == 1
    assert fake_time.slept == []


# --- refusals -----------------------------------------------------------------------------


def test_a_read_only_token_cannot_comment(
    make_client: Callable[..., GitHub], github_api: FakeGitHub, fake_time: FakeTime
) -> None:
    with pytest.raises(CannotComment, match=FORBIDDEN) as caught:
        make_client(READ_ONLY_TOKEN).upsert_comment(7, MARKER, body("pass"))

    assert caught.value.status == 403
    assert github_api.comments_on(7) == []
    assert fake_time.slept == []


def test_a_read_only_token_cannot_set_a_status(make_client: Callable[..., GitHub]) -> None:
    with pytest.raises(CannotComment, match=FORBIDDEN):
        make_client(READ_ONLY_TOKEN).create_status(SHA, "success", "diffai", "pass")


@pytest.mark.parametrize(
    ("fault", "status"),
    [
        pytest.param(error(404, "Not Found"), 404, id="no-such-pr-or-no-access"),
        pytest.param(error(401, "Bad credentials"), 401, id="bad-token"),
    ],
)
def test_refusals_on_the_comments_endpoint_mean_cannot_comment(
    github: GitHub, github_api: FakeGitHub, fault: Reply, status: int
) -> None:
    github_api.fail("GET", COMMENTS, fault)

    with pytest.raises(CannotComment) as caught:
        github.upsert_comment(7, MARKER, body("pass"))

    assert caught.value.status == status


def test_a_next_page_link_off_the_api_host_is_not_followed(
    github: GitHub, github_api: FakeGitHub
) -> None:
    elsewhere = {"Link": '<http://evil.example/comments?page=2>; rel="next"'}
    github_api.fail("GET", COMMENTS, Reply(200, [], elsewhere))

    with pytest.raises(GitHubError, match=r"evil\.example"):
        github.find_comment(7, MARKER)


@pytest.mark.parametrize(
    ("method", "path", "garbled", "problem"),
    [
        pytest.param(
            "GET",
            f"/repos/{REPOSITORY}/issues/7/comments",
            Reply(200, "<html>Sign in to your proxy</html>"),
            "a body that is not JSON (text/html)",
            id="html-page",
        ),
        pytest.param(
            "GET",
            f"/repos/{REPOSITORY}/issues/7/comments",
            Reply(200, b'[{"id": 1'),
            "a body that is not JSON (application/json)",
            id="cut-off-json",
        ),
        pytest.param(
            "GET",
            f"/repos/{REPOSITORY}/issues/7/comments",
            Reply(200, {"comments": []}),
            "JSON that is not a list",
            id="object-for-a-list",
        ),
        pytest.param(
            "POST",
            f"/repos/{REPOSITORY}/issues/7/comments",
            Reply(201, {"id": 1}),
            "an object without html_url",
            id="comment-without-url",
        ),
        pytest.param(
            "GET",
            "/user",
            Reply(200, [{"login": "octocat"}]),
            "JSON that is not an object",
            id="list-for-an-object",
        ),
    ],
)
def test_a_garbled_success_is_an_error_at_once(
    make_client: Callable[..., GitHub],
    github_api: FakeGitHub,
    fake_time: FakeTime,
    method: str,
    path: str,
    garbled: Reply,
    problem: str,
) -> None:
    github_api.fail(method, f"^{path}$", garbled)

    with pytest.raises(GitHubError) as caught:
        make_client(USER_TOKEN).upsert_comment(7, MARKER, body("pass"))

    assert type(caught.value) is GitHubError  # not a missing permission, and not a crash
    expected = f"GitHub API {method} {path} -> HTTP {garbled.status}: unexpected answer: {problem}"
    assert str(caught.value) == expected
    assert len(github_api.calls(method, f"^{path}$")) == 1
    assert fake_time.slept == []


def test_the_token_never_shows_in_a_repr(github: GitHub) -> None:
    assert WRITE_TOKEN not in repr(github)
    assert WRITE_TOKEN not in repr(vars(github))


# --- commit status ------------------------------------------------------------------------


def test_a_status_is_posted_with_its_description_cut_to_140(
    github: GitHub, github_api: FakeGitHub
) -> None:
    github.create_status(SHA, "failure", "diffai/models", "x" * 300, "https://ci/run/1")

    [status] = github_api.statuses
    assert status["sha"] == SHA
    assert (status["state"], status["context"]) == ("failure", "diffai/models")
    assert status["description"] == "x" * 139 + "…"
    assert status["target_url"] == "https://ci/run/1"


def test_a_status_without_a_target_url_sends_none(github: GitHub, github_api: FakeGitHub) -> None:
    github.create_status(SHA, "success", "diffai", "pass")

    assert "target_url" not in github_api.calls("POST", "/statuses/")[0].json


def test_an_unknown_status_state_is_refused(github: GitHub) -> None:
    with pytest.raises(ValueError, match="'passed'"):
        github.create_status(SHA, "passed", "diffai", "pass")


# --- which pull request -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "expected"),
    [
        pytest.param("pull_request", PullRequest(7, SHA), id="pull_request"),
        pytest.param("pull_request_target", PullRequest(7, SHA), id="pull_request_target"),
        pytest.param("push", None, id="push"),
        pytest.param("workflow_run", None, id="workflow_run-needs-the-api"),
    ],
)
def test_pull_request_from_event(event_name: str, expected: PullRequest | None) -> None:
    event = {"pull_request": {"number": 7, "head": {"sha": SHA}}}
    assert pull_request_from_event(event_name, event) == expected


def workflow_run(pulls: list[dict[str, Any]], owner: str = "octo", branch: str = "tune") -> dict:
    return {
        "workflow_run": {
            "event": "pull_request",
            "head_sha": SHA,
            "head_branch": branch,
            "head_repository": {"owner": {"login": owner}},
            "pull_requests": pulls,
        }
    }


def listed(number: int, base: str) -> dict[str, Any]:
    return {"number": number, "base": {"repo": {"url": f"https://api.github.com/repos/{base}"}}}


def test_a_run_names_its_pull_request(github: GitHub, github_api: FakeGitHub) -> None:
    event = workflow_run([listed(3, "upstream/models"), listed(5, REPOSITORY)])

    assert github.pull_request_for_run(event) == PullRequest(5, SHA)
    assert github_api.received == []


def test_a_run_finds_its_pull_request_by_commit(github: GitHub, github_api: FakeGitHub) -> None:
    github_api.pulls.append(Pull(12, SHA, "tune", "octo"))

    assert github.pull_request_for_run(workflow_run([])) == PullRequest(12, SHA)
    assert [r.path for r in github_api.received] == [f"/repos/{REPOSITORY}/commits/{SHA}/pulls"]


def test_a_run_from_a_fork_finds_its_pull_request_by_branch(
    github: GitHub, github_api: FakeGitHub
) -> None:
    github_api.pulls.append(Pull(13, SHA, "patch-1", "forker"))

    found = github.pull_request_for_run(workflow_run([], owner="forker", branch="patch-1"))

    assert found == PullRequest(13, SHA)
    [lookup] = github_api.calls("GET", f"^/repos/{REPOSITORY}/pulls$")
    assert lookup.query == {"state": "open", "head": "forker:patch-1"}


def test_a_push_without_a_pull_request_has_none(github: GitHub, github_api: FakeGitHub) -> None:
    github_api.pulls.append(Pull(14, "b" * 40, "other", "octo"))

    assert github.pull_request_for_run(workflow_run([], branch="main")) is None


def test_a_run_from_a_deleted_fork_has_none(github: GitHub) -> None:
    event = workflow_run([])
    event["workflow_run"]["head_repository"] = None

    assert github.pull_request_for_run(event) is None


# --- GitHub Enterprise --------------------------------------------------------------------


def test_an_enterprise_api_url_with_a_path_prefix(
    make_client: Callable[..., GitHub], github_api: FakeGitHub
) -> None:
    github_api.prefix = "/api/v3"
    github_api.add_comments(7, 110)
    ours = github_api.add_comment(7, body("old"))

    make_client(api_url=f"{github_api.api_url}/").upsert_comment(7, MARKER, body("new"))

    assert ours.body == body("new")
    assert len(github_api.calls("GET", "/comments$")) == 2
