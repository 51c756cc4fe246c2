"""``diffai audit`` over a series: 10 checkpoints of a small model trained here with Adam."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cmarkgfm
import jsonschema
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from diffai.series import series_schema

EPOCHS = 10


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Checkpoints named so that the shell's glob order (1, 10, 2, ...) is not theirs."""
    folder = tmp_path_factory.mktemp("series")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    inputs, labels = torch.randn(128, 8), torch.randint(0, 2, (128,))
    paths = []
    for epoch in range(1, EPOCHS + 1):
        for _ in range(4):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs), labels).backward()
            optimizer.step()
        paths.append(folder / f"ckpt_epoch_{epoch}.pt")
        torch.save(net.state_dict(), paths[-1])
    return paths


def weights(path: Path) -> dict[str, np.ndarray]:
    return {name: t.numpy().astype(np.float64) for name, t in torch.load(path).items()}


def relative(base: dict[str, np.ndarray], cand: dict[str, np.ndarray], prefix: str = "") -> float:
    names = [name for name in base if name.startswith(prefix)]
    change = sum(float(np.sum((cand[n] - base[n]) ** 2)) for n in names)
    return math.sqrt(change / sum(float(np.sum(base[n] ** 2)) for n in names))


def audit_json(run_cli, *argv: object) -> tuple[int, dict]:
    result = run_cli("audit", *argv, "-o", "json", "--exit-zero")
    assert result.code == 0, result.err
    document = json.loads(result.out)
    jsonschema.validate(document, series_schema())
    return result.code, document


def test_each_step_and_the_drift_are_measured_in_natural_order(run_cli, trained) -> None:
    _, document = audit_json(run_cli, *sorted(map(str, trained)))  # the glob's order
    assert document["first"] == str(trained[0])
    assert [c["path"] for c in document["checkpoints"]] == [str(p) for p in trained[1:]]
    loaded = [weights(path) for path in trained]
    for number, checkpoint in enumerate(document["checkpoints"], start=1):
        step, drift = checkpoint["step"], checkpoint["drift"]
        expected_step = relative(loaded[number - 1], loaded[number])
        assert step["relative_change"] == pytest.approx(expected_step, rel=1e-9)
        assert drift["relative_change"] == pytest.approx(relative(loaded[0], loaded[number]),
                                                         rel=1e-9)  # fmt: skip
        for layer in ("0", "2"):
            expected = relative(loaded[0], loaded[number], f"{layer}.")
            assert drift["layers"][layer] == pytest.approx(expected, rel=1e-9)
        assert (step["tensors_changed"], step["identical"], step["verdict"]) == (4, False, "pass")
    drifts = [c["drift"]["relative_change"] for c in document["checkpoints"]]
    assert drifts == sorted(drifts)  # training moves away from the start, epoch by epoch
    last = document["checkpoints"][-1]["drift"]["layers"]
    assert document["trend_layers"] == sorted(last, key=lambda name: -last[name])
    assert document["verdict"] == "pass" and document["policy"] is None


def test_text_shows_every_checkpoint_and_each_layers_trend(run_cli, trained) -> None:
    result = run_cli("audit", *trained)
    assert result.code == 1  # they differ; with --exit-zero or a passing --verdict, 0
    lines = result.out.splitlines()
    assert lines[0].startswith("audit: 10 checkpoints in natural order")
    rows = [line.split() for line in lines[2 : 2 + EPOCHS - 1]]
    assert [row[0] for row in rows] == [str(n) for n in range(2, EPOCHS + 1)]
    assert [row[-1] for row in rows] == [str(p) for p in trained[1:]]
    header = lines.index("drift of the most-drifted layers, checkpoint 2 to the last:")
    trend = {line.split()[0]: line.split()[1] for line in lines[header + 1 : -1]}
    assert set(trend) == {"0", "2"} and all(len(spark) == EPOCHS - 1 for spark in trend.values())
    assert all(spark[-1] == "█" for spark in trend.values())  # drift grows to its largest
    assert lines[-1] == "verdict: pass (the worst step's)"
    assert run_cli("audit", *trained, "--verdict").code == 0


def test_a_step_that_breaks_the_model_fails_the_series(run_cli, trained, tmp_path) -> None:
    """Checkpoint 7 gained a NaN: its step fails the default policy, and so the series; the
    step to 8, which lost it again, passes (a NaN is judged where it appears)."""
    broken = [shutil.copy(p, tmp_path / p.name) for p in trained]
    state = torch.load(broken[6])
    state["0.weight"][0, 0] = float("nan")
    torch.save(state, broken[6])
    result = run_cli("audit", *broken, "-o", "json", "--verdict")
    assert result.code == 1
    document = json.loads(result.out)
    verdicts = [c["step"]["verdict"] for c in document["checkpoints"]]
    assert verdicts == ["pass"] * 5 + ["fail"] + ["pass"] * 3 and document["verdict"] == "fail"
    assert document["checkpoints"][5]["drift"]["verdict"] == "fail"


def test_identical_checkpoints_exit_zero(run_cli, trained, tmp_path) -> None:
    copies = [shutil.copy(trained[0], tmp_path / f"copy_{n}.pt") for n in range(3)]
    result = run_cli("audit", *copies, "-o", "json")
    assert result.code == 0
    document = json.loads(result.out)
    assert [c["step"]["identical"] for c in document["checkpoints"]] == [True, True]
    assert document["checkpoints"][-1]["drift"]["relative_change"] == 0.0


def test_outputs_are_written_and_the_markdown_renders(run_cli, trained, tmp_path) -> None:
    report, page = tmp_path / "series.json", tmp_path / "trend.md"
    result = run_cli("audit", *trained, "--report", report, "--markdown", page, "--exit-zero")
    assert result.code == 0, result.err
    document = json.loads(report.read_text())
    jsonschema.validate(document, series_schema())
    unsafe = cmarkgfm.Options.CMARK_OPT_UNSAFE  # GitHub keeps <code>
    html = cmarkgfm.github_flavored_markdown_to_html(page.read_text(), options=unsafe)
    assert html.count("<tr>") == EPOCHS  # a header row and one per checkpoint after the first
    assert html.count('<pre lang="mermaid">') == 2
    assert "drift from the first" in html and "ckpt_epoch_10.<wbr>pt</code>" in html


def test_names_from_files_cannot_start_a_workflow_command(run_cli, tmp_path) -> None:
    paths = []
    for number in range(3):
        paths.append(tmp_path / f"m{number}.safetensors")
        save_file({"::error::pwned.weight": np.full(4, 1.0 + number, np.float32)}, paths[-1])
    result = run_cli("audit", *paths)
    assert "::error::" not in result.out and "\\x3a:error::pwned" in result.out
    page = tmp_path / "p.md"
    run_cli("audit", *paths, "--markdown", page)
    assert "<code>&#58;&#58;error&#58;&#58;pwned</code>" in page.read_text()


def test_one_checkpoint_is_a_usage_error(run_cli, trained) -> None:
    result = run_cli("audit", trained[0])
    assert result.code == 2
    assert result.err == "diffai: error: diffai audit needs at least two checkpoints\n"


def test_the_html_page_holds_every_checkpoint_and_layer_drift(run_cli, trained, tmp_path) -> None:
    report, page = tmp_path / "series.json", tmp_path / "trend.html"
    result = run_cli("audit", *trained, "--report", report, "--html", page, "--exit-zero")
    assert result.code == 0, result.err
    document, html = json.loads(report.read_text()), page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "default-src 'none'" in html
    block = html.split('id="diffai-data">', 1)[1].split("</script>", 1)[0]
    data = json.loads(block)
    assert [row[0] for row in data["checkpoints"]] == [str(p) for p in trained[1:]]
    last = weights(trained[-1])
    first = weights(trained[0])
    assert data["layers"][0] in {"0", "2"} and data["layer_count"] == 2
    drift = data["cells"][data["layers"].index("0")]
    assert drift[-1] == pytest.approx(relative(first, last, "0."), rel=1e-6)
    assert drift == [c["drift"]["layers"]["0"] for c in document["checkpoints"]]
