"""Release assets: the report, the comment and the HTML report, attached to the release.

Opt-in (``release-assets: true``), only on a ``release`` event, and it needs
``contents: write``. The upload goes to the release's ``upload_url`` from the event
file (GitHub's ``uploads.github.com``, or ``/api/uploads`` on an Enterprise server),
which the session would send the token to: it must be on the API's own host, or on
the ``uploads.`` twin of ``api.``, over the API's scheme. A run that is retried
replaces the assets of its own earlier attempt (same name, uploaded by this
token's identity) and leaves anyone else's alone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from diffai.ci.config import Config
from diffai.ci.github import GitHub
from diffai.errors import GitHubError

#: What is attached, in this order, when the report folder holds it, and its media type.
ASSETS = {
    "report.json": "application/json",
    "comment.md": "text/markdown; charset=utf-8",
    "report.html": "text/html; charset=utf-8",
}
RELEASE_HINT = "give this job 'permissions: contents: write' to attach the report to the release"


def wants_release_assets(config: Config) -> bool:
    return config.release_assets and config.github_event_name == "release"


def attach_report(config: Config, github: GitHub, event: dict[str, Any]) -> list[str]:
    """Every report file there is, attached to the event's release; their download URLs."""
    release = event.get("release") or {}
    upload_url = checked_upload_url(str(release.get("upload_url", "")), config.github_api_url)
    folder = config.resolve(config.report_dir)
    present = [(name, kind) for name, kind in ASSETS.items() if (folder / name).is_file()]
    existing = {asset["name"]: asset for asset in github.release_assets(int(release["id"]))}
    urls = []
    for name, kind in present:
        if name in existing:
            _replace(github, existing[name])
        data = (folder / name).read_bytes()
        urls.append(github.upload_release_asset(upload_url, name, data, kind))
    return urls


def _replace(github: GitHub, asset: dict[str, Any]) -> None:
    """Our own earlier upload (a re-run) goes; another's stays, and ours is not attached."""
    if not github.owns({"user": asset.get("uploader")}):
        raise GitHubError(f"the release already has an asset {asset['name']!r} of someone else's")
    github.delete_release_asset(int(asset["id"]))


def checked_upload_url(template: str, api_url: str) -> str:
    """``upload_url`` without its ``{?name,label}`` template, if it is GitHub's own host."""
    url = template.split("{", 1)[0]
    upload, api = urlsplit(url), urlsplit(api_url)
    twin = api.hostname and api.hostname.startswith("api.") and (
        upload.hostname == "uploads." + api.hostname.removeprefix("api.")
    )
    if upload.scheme != api.scheme or not (upload.hostname == api.hostname or twin):
        raise GitHubError(f"the release's upload_url {url!r} is not on the API's host")
    return url
