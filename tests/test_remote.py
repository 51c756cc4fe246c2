"""Remote models over real loopback servers: a range server (with faults), S3 (moto), the Hub.

Every case compares the remote report with the local one (the same JSON but the
paths and the remote-only ``source``) and counts the bytes the server sent.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from diffai.comparison import CompareOptions, compare_models
from diffai.errors import RemoteUnavailable
from diffai.formats import open_models
from diffai.policy import default_policy
from diffai.report import Gate, Report
from diffai.sources.http import Client, Retry
from diffai.sources.remote import Settings
from tests.remote_servers import HubServer, RangeServer

RNG = np.random.default_rng(7)
#: Blocks this small give a few dozen requests per file, so faults land mid-tensor.
SMALL_BLOCK = 64 * 1024


def _pair() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    base = {f"layers.{i}.weight": RNG.standard_normal((256, 300)).astype(np.float32)
            for i in range(4)}  # fmt: skip
    base["layers.0.bias"] = RNG.standard_normal(300).astype(np.float16)
    cand = {name: values + np.asarray(1e-3, values.dtype) for name, values in base.items()}
    return base, cand


@pytest.fixture
def pair(write_safetensors: Callable[..., Path]) -> tuple[Path, Path]:
    base, cand = _pair()
    return write_safetensors("base.safetensors", base), write_safetensors("cand.safetensors", cand)


@pytest.fixture
def server() -> Iterator[RangeServer]:
    running = RangeServer()
    yield running
    running.close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[HubServer]:
    cdn = RangeServer()
    running = HubServer(cdn)
    monkeypatch.setenv("HF_ENDPOINT", running.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token of the machine
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield running
    running.close()
    cdn.close()


def _serve(server: RangeServer, *paths: Path) -> list[str]:
    for path in paths:
        server.files[f"/{path.name}"] = path.read_bytes()
    return [f"{server.url}/{path.name}" for path in paths]


def _report(baseline: str | Path, candidate: str | Path, settings: Settings | None = None,
            options: CompareOptions | None = None) -> dict[str, Any]:  # fmt: skip
    base, cand = open_models(baseline, candidate, settings=settings)
    comparison = compare_models(base, cand, options or CompareOptions(workers=2))
    return Report.build(comparison, Gate(policy=default_policy())).document


def _without_paths(document: dict[str, Any]) -> dict[str, Any]:
    document = json.loads(json.dumps(document))
    for side in ("baseline", "candidate"):
        document[side].pop("path")
        document[side].pop("source", None)
    return document


def _fast_settings(retry: Retry | None = None) -> Settings:
    return Settings(dict(os.environ), Client(retry=retry or Retry(sleep=lambda _: None),
                                             block=SMALL_BLOCK))  # fmt: skip


def test_a_range_server_pair_reports_as_the_local_pair_each_byte_sent_once(
    server: RangeServer, pair: tuple[Path, Path], validate_report: Callable[..., None]
) -> None:
    remote = _report(*_serve(server, *pair), _fast_settings())
    validate_report(remote)
    assert _without_paths(remote) == _without_paths(_report(*pair))
    assert server.bytes_sent() == sum(path.stat().st_size for path in pair)
    assert server.overlaps() == []
    assert remote["baseline"]["path"].startswith("http://127.0.0.1:")


def test_latency_5xx_bursts_and_cuts_mid_range_change_nothing_and_resume_where_they_stopped(
    server: RangeServer, pair: tuple[Path, Path]
) -> None:
    urls = _serve(server, *pair)
    server.latency = 0.002
    server.statuses.extend([503, 503, 500, 429, 502])
    server.cuts.extend([100, 5000, 1, 40000, 0, 12345])
    waits: list[float] = []
    remote = _report(*urls, _fast_settings(Retry(sleep=waits.append)))
    assert _without_paths(remote) == _without_paths(_report(*pair))
    assert server.overlaps() == []  # each cut resumed at the byte it stopped at
    assert server.bytes_sent() == sum(path.stat().st_size for path in pair)
    assert len(waits) == 11 and waits[:2] == [0.5, 1.0]


def test_a_server_that_never_recovers_is_one_line_after_the_retries(
    server: RangeServer, pair: tuple[Path, Path], run_cli: Callable[..., Any]
) -> None:
    urls = _serve(server, *pair)
    server.statuses.extend([503] * 50)
    with pytest.raises(RemoteUnavailable, match=r"HTTP 503, 6 times; giving up"):
        _report(*urls, _fast_settings())


def test_a_server_that_ignores_range_is_refused_before_the_body_is_read(
    server: RangeServer, write_safetensors: Callable[..., Path], run_cli: Callable[..., Any]
) -> None:
    big = write_safetensors("big.safetensors", {"w": np.zeros((1024, 1024), np.float32)})
    (url,) = _serve(server, big)
    server.ignore_range = True
    result = run_cli(url, url)
    assert result.code == 2
    assert result.err.strip().endswith(
        "big.safetensors: the server ignored the Range header and began sending the whole file; "
        "diffai reads remote models only by byte ranges, so download the file and compare the "
        "local copy"
    )
    settings = _fast_settings()
    with pytest.raises(RemoteUnavailable, match="ignored the Range header"):
        open_models(url, url, settings=settings)
    assert settings.client.received == 0  # refused on its headers, the body never read


@pytest.mark.parametrize(
    ("serve", "expected"),
    [
        pytest.param(lambda s: s.redirects.update({"/x.safetensors": "file:///etc/passwd"}),
                     "x.safetensors: a redirect to a 'file' URL; refused", id="redirect-to-file"),
        pytest.param(lambda s: s.redirects.update({"/x.safetensors": "/y.safetensors",
                                                   "/y.safetensors": "/x.safetensors"}),
                     "x.safetensors: more than 5 redirects", id="redirect-loop"),
        pytest.param(lambda s: s.replaced.update({"/x.safetensors": bytes(600_000)}),
                     "x.safetensors: the file changed size while it was being read",
                     id="replaced-mid-read"),
    ],
)  # fmt: skip
def test_a_server_that_misleads_is_refused_in_one_line(
    server: RangeServer, write_safetensors: Callable[..., Path], run_cli: Callable[..., Any],
    serve: Callable[[RangeServer], None], expected: str,
) -> None:  # fmt: skip
    model = write_safetensors("x.safetensors", {"w": np.ones((400, 400), np.float32)})
    (url,) = _serve(server, model)
    serve(server)
    result = run_cli(url, model)  # a remote side and a local one
    assert result.code == 2
    assert result.err.strip().endswith(expected), result.err


@pytest.mark.parametrize(
    ("flags", "wanted"),
    [
        pytest.param(["--include", "layers.1.*"], {"layers.1.weight"}, id="include"),
        pytest.param(["--shard", "2/4"], None, id="shard"),
    ],
)
def test_include_and_shard_fetch_only_the_tensors_they_measure(
    server: RangeServer, pair: tuple[Path, Path], run_cli: Callable[..., Any], tmp_path: Path,
    flags: list[str], wanted: set[str] | None,
) -> None:  # fmt: skip
    urls = _serve(server, *pair)
    result = run_cli(*urls, *flags, "--report", tmp_path / "r.json", "-q")
    assert result.code in (0, 1), result.err
    measured = {t["name"] for t in json.loads((tmp_path / "r.json").read_text())["tensors"]}
    tensor_bytes = {name: values.nbytes for name, values in _pair()[0].items()}
    assert measured == wanted if wanted else measured and measured < set(tensor_bytes)
    header = 8 + int.from_bytes(pair[0].read_bytes()[:8], "little")
    most = 2 * (max(header, 256 * 1024) + sum(tensor_bytes[name] for name in measured))
    assert server.bytes_sent() <= most
    assert server.bytes_sent() < 0.6 * sum(path.stat().st_size for path in pair)


def test_a_remote_npy_pair_reads_by_ranges(
    server: RangeServer, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    base, cand = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(base, RNG.standard_normal((600, 700)))
    np.save(cand, np.load(base) * 1.01)
    remote = _report(*_serve(server, base, cand), _fast_settings())
    assert _without_paths(remote) == _without_paths(_report(base, cand))
    assert server.overlaps() == []


def test_a_remote_gguf_pair_reads_its_header_and_quantized_blocks_by_ranges(
    server: RangeServer, tmp_path: Path
) -> None:
    """A tokenizer's strings push the header past the first fetch, so it grows as parsed."""
    pytest.importorskip("gguf")
    from tests.gguf_files import Q, write_gguf

    vocabulary = {"tokenizer.ggml.tokens": [f"token-{i:06d}" for i in range(40_000)]}
    paths = []
    for name, scale in (("a.gguf", 1.0), ("b.gguf", 1.01)):
        values = (RNG.standard_normal((512, 256)) * scale).astype(np.float32)
        tensors = {"blk.0.ffn.weight": (values, Q.Q8_0), "blk.0.norm.weight": values[0].copy()}
        paths.append(write_gguf(tmp_path / name, tensors, vocabulary))
    remote = _report(*_serve(server, *paths), _fast_settings())
    assert _without_paths(remote) == _without_paths(_report(*paths))
    assert server.overlaps() == []
    assert server.bytes_sent() == sum(path.stat().st_size for path in paths)


def test_a_format_that_needs_random_access_says_to_use_a_local_copy(
    server: RangeServer, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07\x12\x04test:\x02\x08\x01" + bytes(300_000))
    (url,) = _serve(server, model)
    result = run_cli(url, url)
    assert result.code == 2
    assert result.err.strip().endswith(
        "model.onnx: diffai reads only safetensors, GGUF, .npy and uncompressed PyTorch zip files "
        "(and folders and indexes of safetensors shards) remotely; this one needs a local copy: "
        "download it and compare the files"
    )


# --- the Hub ---------------------------------------------------------------------------------


def _publish(hub: HubServer, repo: str, revision: str, folder: Path) -> None:
    for path in folder.iterdir():
        hub.add(repo, revision, path.name, path.read_bytes())


def _sharded(folder: Path, tensors: dict[str, np.ndarray], shared: bytes | None = None) -> Path:
    """Two shards and an index; ``shared`` replaces the second shard's bytes (a file the
    candidate did not change)."""
    from safetensors.numpy import save_file

    folder.mkdir()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[:2],
              "model-00002-of-00002.safetensors": names[2:]}  # fmt: skip
    for shard, members in halves.items():
        save_file({name: tensors[name] for name in members}, folder / shard)
    if shared is not None:
        (folder / "model-00002-of-00002.safetensors").write_bytes(shared)
    weight_map = {name: shard for shard, members in halves.items() for name in members}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def test_hub_folders_with_an_index_report_as_local_and_unchanged_shards_are_read_once(
    hub: HubServer, tmp_path: Path, validate_report: Callable[..., None]
) -> None:
    base_tensors, cand_tensors = _pair()
    base = _sharded(tmp_path / "base", base_tensors)
    unchanged = (base / "model-00002-of-00002.safetensors").read_bytes()
    cand = _sharded(tmp_path / "cand", cand_tensors, shared=unchanged)
    _publish(hub, "org/model", "main", base)
    _publish(hub, "org/model", "v2", cand)
    remote = _report("hf://org/model", "hf://org/model@v2", _fast_settings())
    validate_report(remote)
    assert _without_paths(remote) == _without_paths(_report(base, cand))
    digest = hashlib.sha256(unchanged).hexdigest()
    assert remote["candidate"]["source"]["read_once"] == [{
        "baseline": "hf://org/model@main/model-00002-of-00002.safetensors",
        "candidate": "hf://org/model@v2/model-00002-of-00002.safetensors",
        "sha256": digest,
    }]  # fmt: skip
    assert hub.cdn.overlaps() == []
    assert hub.cdn.bytes_sent(f"/blobs/{digest}") == len(unchanged)  # once, for both sides
    assert set(hub.cdn.authorizations) == {""}


def test_a_pull_request_revision_is_written_percent_encoded(
    hub: HubServer, pair: tuple[Path, Path]
) -> None:
    """``refs/pr/1`` holds slashes, which would read as the file's path; ``%2F`` does not."""
    hub.add("org/model", "main", "model.safetensors", pair[0].read_bytes())
    hub.add("org/model", "refs/pr/1", "model.safetensors", pair[1].read_bytes())
    candidate = "hf://org/model@refs%2Fpr%2F1/model.safetensors"
    remote = _report("hf://org/model/model.safetensors", candidate, _fast_settings())
    assert _without_paths(remote) == _without_paths(_report(*pair))
    assert remote["candidate"]["path"] == candidate
    (file,) = remote["candidate"]["source"]["files"]
    assert file["sha256"] == hashlib.sha256(pair[1].read_bytes()).hexdigest()


def test_a_hub_token_goes_to_the_hub_only_never_to_the_cdn(
    hub: HubServer, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.add("org/private", "main", "a.safetensors", pair[0].read_bytes())
    hub.add("org/private", "main", "b.safetensors", pair[1].read_bytes())
    hub.token = "hf_secret"
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    remote = _report("hf://org/private/a.safetensors", "hf://org/private/b.safetensors")
    assert _without_paths(remote) == _without_paths(_report(*pair))
    assert "Bearer hf_secret" in hub.authorizations
    assert set(hub.cdn.authorizations) == {""}
    assert hub.api_calls == ["paths-info", "paths-info"]  # one look-up per file, not two
    home = Path(os.environ["HF_HOME"])
    assert not home.exists() or not any(home.rglob("*"))  # no cache, no xet chunks: no disk


@pytest.mark.parametrize(
    ("token", "url", "expected"),
    [
        pytest.param(None, "hf://org/private/a.safetensors",
                     "hf://org/private@main/a.safetensors: HTTP 401 (not authorized); set HF_TOKEN "
                     "to a token that may read org/private (a private or gated repository)",
                     id="401"),
        pytest.param("hf_other", "hf://org/private/a.safetensors",
                     "hf://org/private@main/a.safetensors: HTTP 403 (access denied); HF_TOKEN may "
                     "not read org/private: accept its terms on the Hub, or use a token with read "
                     "access to it", id="403"),
        pytest.param("hf_secret", "hf://org/private/missing.safetensors",
                     "hf://org/private/missing.safetensors: no such repository, revision or file "
                     "in org/private (without HF_TOKEN, a private repository answers 404 too)",
                     id="404"),
    ],
)  # fmt: skip
def test_hub_refusals_are_one_line_naming_the_file_and_the_credential(
    hub: HubServer, run_cli: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
    token: str | None, url: str, expected: str,
) -> None:  # fmt: skip
    hub.add("org/private", "main", "a.safetensors", b"x" * 100)
    hub.token = "hf_secret"
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    result = run_cli(url, url)
    assert result.code == 2
    assert result.err == f"diffai: error: {expected}\n"
    assert "hf_" not in result.err.replace("hf://", "")


def test_plain_url_refusals_name_the_file_and_what_is_missing(
    server: RangeServer, pair: tuple[Path, Path], run_cli: Callable[..., Any]
) -> None:
    (url,) = _serve(server, pair[0])
    server.token = "t"
    result = run_cli(url, url)
    assert result.err.endswith(
        "base.safetensors: HTTP 401 (not authorized); a plain URL gets no credentials from diffai; "
        "use a presigned URL, or hf:// or s3://\n"
    )
    server.token = None
    result = run_cli(url + ".gone", url)
    assert result.err.endswith("base.safetensors.gone: HTTP 404 (not found); check the URL\n")


def test_a_missing_extra_names_what_to_install(
    run_cli: Callable[..., Any], hide_module: Callable[[str], None]
) -> None:
    hide_module("huggingface_hub")
    hide_module("boto3")
    assert run_cli("hf://org/x", "hf://org/y").err == (
        "diffai: error: hf://org/x@main: reading hf:// needs huggingface_hub; install it with: "
        "pip install 'diffai[hf]'\n"
    )


def test_the_action_gates_models_it_reads_by_ranges(
    server: RangeServer, tmp_path: Path, github_api: Any
) -> None:
    """Baseline and candidate as URLs: no file in the workspace, the same verdict and report."""
    from tests.test_action_runner import make_runner, make_workspace

    workspace = make_workspace(tmp_path)
    local = [workspace / "examples" / f"{side}.safetensors" for side in ("baseline", "candidate")]
    urls = _serve(server, *local)
    action = make_runner(workspace, github_api, tmp_path)
    step = action.run("push", {}, in_process=True, baseline=urls[0], candidate=urls[1])
    assert step.code == 0, step.stdout
    assert step.outputs["verdict"] == "warn"
    report = json.loads((step.report_dir / "report.json").read_text())
    assert report["baseline"]["path"] == urls[0]
    assert server.bytes_sent() == sum(path.stat().st_size for path in local)


def test_a_pair_of_many_small_tensors_comes_in_a_few_requests_each_byte_once(
    server: RangeServer, write_safetensors: Callable[..., Path]
) -> None:
    """A mixture-of-experts layout: 600 tensors of 8 KiB a side. One request per tensor
    made it latency-bound (41 s at 20 ms a request); planned, both files' tensors come as
    a few blocks (``diffai.sources.plan``), and the report is the local one."""
    base = {f"blocks.{i // 24}.experts.{i % 24 // 3}.w{i % 3}": RNG.standard_normal((32, 64))
            .astype(np.float32) for i in range(600)}  # fmt: skip
    cand = {name: values + np.float32(1e-3) for name, values in base.items()}
    pair = write_safetensors("base.safetensors", base), write_safetensors("cand.safetensors", cand)
    urls = _serve(server, *pair)
    server.latency = 0.02
    remote = _report(*urls, settings=_fast_settings())
    assert _without_paths(remote) == _without_paths(_report(*pair))
    # Per file: the probe (the header and the first tensors) and one block of 4.6 MB of
    # tensors past the kept head, which holds up to 4 MiB: two blocks.
    assert server.requests <= 2 * 3, server.requests
    assert server.overlaps() == []
    tensor_bytes = sum(values.nbytes for values in base.values())
    assert server.bytes_sent() <= 2 * tensor_bytes * 1.02 + 2 * 256 * 1024
