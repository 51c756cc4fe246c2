"""``s3://`` against a real S3-protocol server on loopback: moto's server mode."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffai.formats import open_models
from diffai.sources.http import Client, Retry
from diffai.sources.remote import Settings
from diffai.sources.s3 import full_object_sha256
from tests.test_remote import _pair, _report, _sharded, _without_paths

moto_server = pytest.importorskip("moto.server")
BUCKET = "models"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def _upload(client: Any, key: str, path: Path) -> str:
    client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ChecksumAlgorithm="SHA256")
    return f"s3://{BUCKET}/{key}"


def _settings() -> Settings:
    return Settings(dict(os.environ), Client(retry=Retry(sleep=lambda _: None), block=64 * 1024))


def test_an_s3_pair_reports_as_the_local_pair_fetching_each_byte_once(
    s3: Any, write_safetensors: Callable[..., Path], validate_report: Callable[..., None]
) -> None:
    base, cand = _pair()
    local = write_safetensors("a.safetensors", base), write_safetensors("b.safetensors", cand)
    urls = [_upload(s3, f"run/{path.name}", path) for path in local]
    settings = _settings()
    remote = _report(*urls, settings)
    validate_report(remote)
    assert _without_paths(remote) == _without_paths(_report(*local))
    assert settings.client.received == sum(path.stat().st_size for path in local)
    assert remote["baseline"]["source"]["files"][0]["sha256"] == hashlib.sha256(
        local[0].read_bytes()
    ).hexdigest()


def test_an_s3_folder_reads_its_index_and_an_unchanged_shard_once(
    s3: Any, tmp_path: Path
) -> None:
    base_tensors, cand_tensors = _pair()
    base = _sharded(tmp_path / "base", base_tensors)
    unchanged = (base / "model-00002-of-00002.safetensors").read_bytes()
    cand = _sharded(tmp_path / "cand", cand_tensors, shared=unchanged)
    for side, folder in (("v1", base), ("v2", cand)):
        for path in folder.iterdir():
            _upload(s3, f"{side}/{path.name}", path)
    settings = _settings()
    remote = _report(f"s3://{BUCKET}/v1/", f"s3://{BUCKET}/v2", settings)
    assert _without_paths(remote) == _without_paths(_report(base, cand))
    assert [pair["candidate"] for pair in remote["candidate"]["source"]["read_once"]] == [
        f"s3://{BUCKET}/v2/model-00002-of-00002.safetensors"
    ]
    everything = sum(path.stat().st_size for folder in (base, cand) for path in folder.iterdir())
    index = (base / "model.safetensors.index.json").stat().st_size
    assert settings.client.received == everything - len(unchanged) - index


@pytest.mark.parametrize(
    ("setup", "url", "expected"),
    [
        pytest.param("none", f"s3://{BUCKET}/gone.safetensors",
                     f"s3://{BUCKET}/gone.safetensors: no such key, and no objects under it",
                     id="404"),
        pytest.param("auth", f"s3://{BUCKET}/a.safetensors",
                     f"s3://{BUCKET}/a.safetensors: S3 answered HTTP 403; the AWS credentials in "
                     "use may not s3:GetObject it; set AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE", id="403"),
        pytest.param("anonymous", f"s3://{BUCKET}/a.safetensors",
                     f"s3://{BUCKET}/a.safetensors: no AWS credentials found; set "
                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
                     id="no-credentials"),
    ],
)  # fmt: skip
def test_s3_refusals_are_one_line_naming_the_object_and_the_credential(
    s3: Any, run_cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    setup: str, url: str, expected: str,
) -> None:  # fmt: skip
    (tmp_path / "a.safetensors").write_bytes(b"x" * 64)
    _upload(s3, "a.safetensors", tmp_path / "a.safetensors")
    if setup == "auth":
        import moto.settings

        monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    if setup == "anonymous":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result = run_cli(url, url)
    assert result.code == 2
    assert result.err == f"diffai: error: {expected}\n"
    assert "X-Amz-Signature" not in result.err


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        pytest.param({"ChecksumSHA256": "AAAA" * 10 + "AAA=", "ChecksumType": "FULL_OBJECT"},
                     "00" * 32, id="full-object"),
        pytest.param({"ChecksumSHA256": "AAAA" * 10 + "AAA=-3", "ChecksumType": "COMPOSITE"},
                     None, id="multipart-composite"),
        pytest.param({"ETag": '"0cc175b9c0f1b6a831c399e269772661"'}, None, id="etag-only"),
    ],
)  # fmt: skip
def test_only_a_full_object_sha256_is_proof(head: dict[str, str], expected: str | None) -> None:
    assert full_object_sha256(head) == expected


def test_proof_is_the_stores_sha256_not_the_size_or_the_header(
    s3: Any, tmp_path: Path
) -> None:
    """A fine-tune keeps its header byte for byte and its size; only the hash tells."""
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, np.zeros(1000, np.float32))
    np.save(second, np.ones(1000, np.float32))
    urls = [_upload(s3, path.name, path) for path in (first, second)]
    base, cand = open_models(*urls, settings=_settings())
    assert base.size_bytes == cand.size_bytes
    assert cand.source is not None and cand.source["read_once"] == []


def test_each_object_is_asked_for_its_size_and_checksum_once(
    s3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Telling a key from a prefix takes a HEAD; that answer is the file's, not asked again."""
    import diffai.sources.s3 as store

    heads: list[str] = []
    made = store._client

    def counting(label: str, settings: Settings) -> Any:
        client = made(label, settings)
        client.meta.events.register(
            "before-parameter-build.s3.HeadObject", lambda params, **_: heads.append(params["Key"])
        )
        return client

    monkeypatch.setattr(store, "_client", counting)
    np.save(tmp_path / "a.npy", np.zeros(1000, np.float32))
    np.save(tmp_path / "b.npy", np.ones(1000, np.float32))
    urls = [_upload(s3, path.name, path) for path in (tmp_path / "a.npy", tmp_path / "b.npy")]
    base, _ = open_models(*urls, settings=_settings())
    assert sorted(heads) == ["a.npy", "b.npy"]
    assert base.source is not None and base.source["files"][0]["sha256"] == hashlib.sha256(
        (tmp_path / "a.npy").read_bytes()
    ).hexdigest()
