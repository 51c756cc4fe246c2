"""Amazon S3 and S3-protocol stores: ``s3://BUCKET/KEY``, read by ranges.

``boto3`` (the ``s3`` extra) signs and finds credentials, which is where an S3
client goes wrong when written by hand: SigV4's canonical request, the whole
credential chain (environment, ``AWS_PROFILE``, SSO, the runner's role) and the
endpoint (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``). It answers ``HEAD``
(size, checksum) and lists folders; the bytes come through ``http.Client`` from
a presigned URL, so S3 shares the range reader's retries, resume and byte
accounting. s3fs was not taken: it brings aiobotocore and a block cache that
reads past what a reader asks for. A presigned URL is a credential: it is never
shown; messages name ``s3://BUCKET/KEY``.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from diffai.errors import MissingExtra, RemoteUnavailable, UsageError
from diffai.sources.http import Endpoint
from diffai.sources.remote import RemoteFile, Settings

#: Long enough for a 140 GB model over a slow link; each range request re-presents it.
PRESIGN_SECONDS = 12 * 3600
CREDENTIALS = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
HINTS = {
    401: f"set AWS credentials ({CREDENTIALS}) that may read it",
    403: f"the AWS credentials in use may not s3:GetObject it; set {CREDENTIALS}",
    404: "no such bucket or key",
}


def parse(text: str) -> tuple[str, str]:
    bucket, _, key = text[len("s3://") :].partition("/")
    if not bucket:
        raise UsageError(f"{text}: an S3 path is s3://BUCKET/KEY")
    return bucket, key


@dataclass
class S3Folder:
    """The objects under one prefix ('' or ending in '/'), listed one level deep."""

    bucket: str
    prefix: str
    settings: Settings
    client: Any = field(repr=False)
    #: HEAD answers already had (``locate`` asks one to tell a key from a prefix), by name.
    heads: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def names(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
        )
        with _mapped(self.name):
            keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        if not keys:
            raise RemoteUnavailable(self.name.rstrip("/"), "no such key, and no objects under it")
        return sorted(key[len(self.prefix) :] for key in keys)

    def open(self, name: str) -> RemoteFile:
        key = self.prefix + name
        label = f"s3://{self.bucket}/{key}"
        with _mapped(label):
            head = self.heads.pop(name, None) or _head_object(self.client, self.bucket, key)
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=PRESIGN_SECONDS
            )
        endpoint = Endpoint(label, url, hints=HINTS)
        return RemoteFile(label, self.settings.client, endpoint, full_object_sha256(head))


def full_object_sha256(head: dict[str, Any]) -> str | None:
    """S3's SHA-256 of the whole object, as hex; a multipart upload's composite checksum
    (a hash of the parts' hashes, ``...-N``) is not one, and neither is the ETag (an MD5)."""
    value = head.get("ChecksumSHA256")
    if not value or head.get("ChecksumType", "FULL_OBJECT") != "FULL_OBJECT" or "-" in value:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except binascii.Error:
        return None
    return digest.hex() if len(digest) == 32 else None


def locate(text: str, settings: Settings) -> tuple[S3Folder, str | None]:
    bucket, key = parse(text)
    client = _client(text, settings)
    if not key or key.endswith("/"):
        return S3Folder(bucket, key, settings, client), None
    head = _head_if_any(client, bucket, key, text)
    if head is None:
        return S3Folder(bucket, key + "/", settings, client), None
    prefix, _, name = key.rpartition("/")
    folder = S3Folder(bucket, prefix + "/" if prefix else "", settings, client, {name: head})
    return folder, name


def _head_if_any(client: Any, bucket: str, key: str, label: str) -> dict[str, Any] | None:
    """The object's HEAD answer, None when there is no such key (then it names a prefix)."""
    from botocore.exceptions import ClientError

    try:
        with _mapped(label, passing=(404,)):
            return _head_object(client, bucket, key)
    except ClientError:
        return None


def _head_object(client: Any, bucket: str, key: str) -> dict[str, Any]:
    """Size and, when stored, the full-object SHA-256 (``ChecksumMode``) in one request."""
    return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")


def _client(label: str, settings: Settings) -> Any:
    if importlib.util.find_spec("boto3") is None:
        raise MissingExtra(label, "reading s3:// needs boto3", "s3")
    import boto3

    environ = settings.environ
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


@contextmanager
def _mapped(label: str, passing: tuple[int, ...] = ()) -> Iterator[None]:
    """boto's errors as one line naming the object and the credential; ``passing`` statuses
    are re-raised as they are, for the caller to decide."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError as exc:
        raise RemoteUnavailable(label, f"no AWS credentials found; set {CREDENTIALS}") from exc
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if status in passing:
            raise
        problem = f"HTTP {status}; {HINTS[status]}" if status in HINTS else f"HTTP {status}"
        raise RemoteUnavailable(label, f"S3 answered {problem}") from exc
    except BotoCoreError as exc:
        raise RemoteUnavailable(label, f"S3 failed: {exc}") from exc
