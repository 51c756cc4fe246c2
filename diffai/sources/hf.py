"""The Hugging Face Hub: ``hf://ORG/NAME[@REVISION][/PATH]``, read by ranges, never downloaded.

``huggingface_hub`` (the ``hf`` extra) is used for what it does well and nothing
else: the API calls that list a folder and give each file's size and LFS
``sha256`` (``paths-info``, ``tree``), the token (``HF_TOKEN``, else the one
``hf auth login`` stored) and the endpoint (``HF_ENDPOINT``). The bytes come
from its resolve URL through ``http.Client`` as range requests: its
``hf_hub_download`` would write the whole file to the cache, and its ``hf-xet``
backend keeps a chunk cache on disk, neither of which a 140 GB model on a 14 GB
runner can afford. The token goes only to the endpoint's host; the CDN a resolve
URL redirects to gets the request without it (``http._redirected``).
"""

from __future__ import annotations

import importlib.util
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from diffai.errors import MissingExtra, RemoteUnavailable, UsageError
from diffai.sources.http import Endpoint
from diffai.sources.remote import RemoteFile, Settings

DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class HubPath:
    """``hf://ORG/NAME@REVISION/PATH`` taken apart; ``path`` is '' for the repository root.

    A revision with a slash (a pull request's ``refs/pr/1``) is written percent-encoded,
    ``@refs%2Fpr%2F1``, as ``huggingface_hub``'s own ``hf://`` file system has it."""

    repo: str
    revision: str
    path: str

    def url(self, path: str | None = None) -> str:
        suffix = self.path if path is None else path
        revision = quote(self.revision, safe="")
        return f"hf://{self.repo}@{revision}" + (f"/{suffix}" if suffix else "")


def parse(text: str) -> HubPath:
    parts = text[len("hf://") :].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise UsageError(f"{text}: a Hub path is hf://ORG/NAME[@REVISION][/PATH]")
    name, _, revision = parts[1].partition("@")
    return HubPath(f"{parts[0]}/{name}", unquote(revision) or "main", "/".join(parts[2:]))


def hints(repo: str) -> dict[int, str]:
    """Which credential a refusal points at."""
    return {
        401: f"set HF_TOKEN to a token that may read {repo} (a private or gated repository)",
        403: f"HF_TOKEN may not read {repo}: accept its terms on the Hub, or use a token with "
        "read access to it",
        404: f"no such repository, revision or file in {repo} (without HF_TOKEN, a private "
        "repository answers 404 too)",
    }


@dataclass
class HubFolder:
    """A folder of a Hub repository at one revision; its listing gives every file's LFS hash."""

    where: HubPath
    settings: Settings
    api: Any = field(repr=False)
    token: str | None = field(repr=False)
    files: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.where.url()

    def names(self) -> list[str]:
        with _mapped(self.name, self.where.repo):
            entries = list(self.api.list_repo_tree(
                self.where.repo, path_in_repo=self.where.path or None, revision=self.where.revision
            ))  # fmt: skip
        self.files.update({posixpath.basename(e.path): e for e in entries if _is_file(e)})
        return sorted(self.files)

    def open(self, name: str) -> RemoteFile:
        path = posixpath.join(self.where.path, name)
        info = self.files.get(name) or self._info(path)
        if info is None or not _is_file(info):
            raise RemoteUnavailable(self.where.url(path), "not a file in the repository")
        endpoint = Endpoint(self.where.url(path), self._resolve_url(path),
                            self._auth(), hints(self.where.repo))  # fmt: skip
        return RemoteFile(endpoint.name, self.settings.client, endpoint, _lfs_sha256(info))

    def _info(self, path: str) -> Any:
        with _mapped(self.where.url(path), self.where.repo):
            found = self.api.get_paths_info(self.where.repo, [path], revision=self.where.revision)
        return found[0] if found else None

    def _resolve_url(self, path: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.where.repo, path, revision=self.where.revision,
                          endpoint=self.api.endpoint)  # fmt: skip

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def locate(text: str, settings: Settings) -> tuple[HubFolder, str | None]:
    where = parse(text)
    root = _folder(HubPath(where.repo, where.revision, ""), settings)
    if not where.path:
        return root, None
    info = root._info(where.path)
    if info is None:
        raise RemoteUnavailable(text, hints(where.repo)[404])
    if not _is_file(info):
        return _folder(where, settings, root), None
    parent, _, name = where.path.rpartition("/")
    folder = _folder(HubPath(where.repo, where.revision, parent), settings, root)
    folder.files[name] = info  # so open() does not ask the API for it again
    return folder, name


def _folder(where: HubPath, settings: Settings, like: HubFolder | None = None) -> HubFolder:
    if like is not None:
        return HubFolder(where, settings, like.api, like.token)
    if importlib.util.find_spec("huggingface_hub") is None:
        raise MissingExtra(where.url(), "reading hf:// needs huggingface_hub", "hf")
    import huggingface_hub

    endpoint = settings.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    token = settings.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    api = huggingface_hub.HfApi(endpoint=endpoint, token=token or False)
    return HubFolder(where, settings, api, token)


def _is_file(entry: Any) -> bool:
    return hasattr(entry, "size") and hasattr(entry, "lfs")


def _lfs_sha256(info: Any) -> str | None:
    """The LFS object's SHA-256, which the Hub computed over the whole content; a file kept in
    git itself has only a git blob id (SHA-1 over a header and the content), never proof."""
    return info.lfs.sha256 if info.lfs else None


@contextmanager
def _mapped(name: str, repo: str) -> Iterator[None]:
    """The client's errors as one line naming the file and the credential."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        reason = {401: "not authorized", 403: "access denied", 404: "not found"}.get(status)
        if reason is None:
            raise RemoteUnavailable(name, f"the Hub API failed: HTTP {status}") from exc
        raise RemoteUnavailable(name, f"HTTP {status} ({reason}); {hints(repo)[status]}") from exc
