"""``--map FILE``: rules, transforms in bounded memory, and every error a map file can hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffai.model import Model, TensorRef
from diffai.pairing.maps.transforms import RotaryPermutation, Transpose
from tests.test_name_maps_gguf import rotary_permuted

KERAS_STYLE = """\
version: 1
side: candidate
rules:
  - pattern: 'dense_(\\d+)\\.kernel'
    replacement: 'fc\\1.weight'
    transform: {transpose: true}
  - pattern: 'dense_(?P<n>\\d+)\\.bias'
    replacement: 'fc\\g<n>.bias'
"""


@pytest.fixture
def keras_pair(write_safetensors) -> tuple[Path, Path]:
    rng = np.random.default_rng(1)
    weight, bias = rng.standard_normal((8, 4)).astype(np.float32), np.ones(8, np.float32)
    torch_style = write_safetensors("torch.safetensors", {"fc1.weight": weight, "fc1.bias": bias})
    keras = write_safetensors(
        "keras.safetensors", {"dense_1.kernel": weight.T, "dense_1.bias": bias}
    )
    return torch_style, keras


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "names.yaml"
    path.write_text(text)
    return path


def test_a_map_with_a_transpose_pairs_a_kernel_with_its_weight(
    run_cli, validate_report, tmp_path, keras_pair
) -> None:
    names = write_map(tmp_path, KERAS_STYLE)
    report_path = tmp_path / "report.json"
    result = run_cli(*keras_pair, "--map", names, "--report", report_path)
    report = json.loads(report_path.read_text())
    validate_report(report)
    assert result.code == 0 and report["summary"]["unchanged"] == 2
    (applied,) = report["mapping"]["maps"]
    assert applied["tensors"] == [  # in the file's order
        {"name": "fc1.bias", "stored_name": "dense_1.bias", "transform": None},
        {"name": "fc1.weight", "stored_name": "dense_1.kernel", "transform": "transpose"},
    ]
    assert (f"names: mapped the candidate's names by {names} (map file, given): 2 tensors "
            "mapped, 1 of them transformed (transpose)") in result.out  # fmt: skip


def test_the_baseline_side_can_be_mapped(run_cli, tmp_path, keras_pair) -> None:
    names = write_map(tmp_path, KERAS_STYLE.replace("side: candidate", "side: baseline"))
    assert run_cli(*reversed(keras_pair), "--map", names).code == 0


def stream_of(array: np.ndarray, piece: int = 5) -> TensorRef:
    """A streamed tensor (as dequantized blocks come), in pieces that cut across rows."""
    flat = array.reshape(-1)
    pieces = lambda: (flat[i : i + piece] for i in range(0, flat.size, piece))  # noqa: E731
    return TensorRef("w", array.shape, "f32", stream=pieces)


MODEL = Model("m.gguf", "gguf", 0, scalars={"general.architecture": "llama",
              "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2})  # fmt: skip


@pytest.mark.parametrize("budget", [1, 7, 24, 1 << 20], ids=lambda b: f"budget-{b}")
def test_a_streamed_transpose_reads_in_passes_of_its_budget(budget: int) -> None:
    values = np.arange(6 * 4, dtype=np.float32).reshape(6, 4)
    transposed = Transpose(budget).apply(stream_of(values), MODEL)
    assert transposed.shape == (4, 6) and np.array_equal(transposed.array(), values.T)


def test_a_mapped_transpose_stays_a_view_of_the_map(tmp_path) -> None:
    values = np.lib.format.open_memmap(tmp_path / "w.npy", "w+", np.float32, (6, 4))
    values[:] = np.arange(24).reshape(6, 4)
    ref = TensorRef("w", (6, 4), "f32", load=lambda: values)
    view = Transpose().apply(ref, MODEL).load()
    assert np.shares_memory(view, values) and np.array_equal(view, values.T)


@pytest.mark.parametrize(
    ("permutation", "heads"),
    [
        pytest.param(RotaryPermutation(heads=4), 4, id="heads"),
        pytest.param(RotaryPermutation(heads=4, kv_heads=2), 2, id="kv-heads-win"),
        pytest.param(RotaryPermutation(from_metadata="query"), 4, id="query-from-metadata"),
        pytest.param(RotaryPermutation(from_metadata="key"), 2, id="key-from-metadata"),
    ],
)
def test_the_rotary_permutation_undoes_llama_cpps(permutation, heads) -> None:
    source = np.random.default_rng(2).standard_normal((32, 6)).astype(np.float32)
    stored = rotary_permuted(source, heads)
    assert np.array_equal(permutation.apply(stream_of(stored), MODEL).array(), source)
    forward = RotaryPermutation(heads=heads, inverse=False)
    assert np.array_equal(forward.apply(stream_of(source), MODEL).array(), stored)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("", 'the name map file is empty; start it with "version: 1"', id="empty"),
        pytest.param(
            "- 1\n",
            "1: expected a mapping of version and rules at the top level, got a list",
            id="list",
        ),
        pytest.param("version: 1\n", "1: rules: required key is missing", id="no-rules"),
        pytest.param(
            "version: 1\nside: left\nrules: [{pattern: a, replacement: b}]\n",
            "2: side: expected baseline or candidate, got 'left'",
            id="side",
        ),
        pytest.param(
            "version: 1\nrules:\n  - patern: a\n    replacement: b\n",
            "3: rules[0].patern: unknown key, did you mean pattern?",
            id="typo",
        ),
        pytest.param(
            "version: 1\nrules:\n  - {pattern: a, replacement: b}\n"
            "  - {pattern: '(a', replacement: b}\n",
            "4: rules[1].pattern: not a regular expression: missing ), unterminated "
            "subpattern at position 0",
            id="regex",
        ),
        pytest.param(
            "version: 1\nrules:\n  - pattern: a\n    replacement: b\n    transform: "
            "{transpose: true, permute_rotary: {heads: 2}}\n",
            "5: rules[0].transform: give one transform per rule, not transpose and permute_rotary",
            id="two-transforms",
        ),
        pytest.param(
            "version: 1\nrules:\n  - pattern: a\n    replacement: b\n    transform: "
            "{permute_rotary: {inverse: true}}\n",
            "5: rules[0].transform.permute_rotary: set at least one of heads or from_metadata",
            id="no-heads",
        ),
        pytest.param(
            "version: 1\nrules:\n  - pattern: a\n    replacement: b\n    transform: "
            "{permute_rotary: {heads: 0}}\n",
            "5: rules[0].transform.permute_rotary.heads: 0 is below the minimum 1",
            id="zero-heads",
        ),
        pytest.param(
            "version: 1\nrules:\n  - pattern: a\n    replacement: b\n    transform: "
            "{permute_rotary: {heads: 2, from_metadata: key}}\n",
            "5: rules[0].transform.permute_rotary: give heads (and kv_heads) or "
            "from_metadata, not both",
            id="heads-twice",
        ),
        pytest.param(
            'version: 1\nrules:\n  - {pattern: a, replacement: "b\\n::error::c"}\n',
            "3: rules[0].replacement: holds a control or line-break character, which no "
            "tensor name may",
            id="line-break",
        ),
        pytest.param(
            "version: 1\nversion: 1\nrules: []\n",
            "2: version: duplicate key (first at line 1)",
            id="duplicate-key",
        ),
    ],
)
def test_map_file_errors_name_the_file_the_line_and_the_rule(
    run_cli, tmp_path, keras_pair, text, error
) -> None:
    names = write_map(tmp_path, text)
    result = run_cli(*keras_pair, "--map", names)
    assert result.code == 2 and result.out == ""
    separator = "" if error[0].isdigit() else " "
    assert result.err == f"diffai: error: {names}:{separator}{error}\n"


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        pytest.param(
            "  - {pattern: 'dense_1\\.(kernel|bias)', replacement: 'fc.\\2'}\n",
            "rules[0] at line 3: replacement 'fc.\\\\2' does not fit its pattern: "
            "invalid group reference 2 at position 4",
            id="group",
        ),
        pytest.param(
            "  - {pattern: 'dense_1\\.bias', replacement: b, transform: {transpose: true}}\n",
            "rules[0] at line 3: transpose needs a 2-D tensor, 'b' of {keras} has shape [8]",
            id="transpose-1-d",
        ),
        pytest.param(
            "  - {pattern: 'dense_1\\.kernel', replacement: k, transform: "
            "{permute_rotary: {heads: 3}}}\n",
            "rules[0] at line 3: permute_rotary with 3 heads does not fit 'k' of shape "
            "[4, 8] in {keras}: its first axis must be a multiple of 2 x 3",
            id="heads-misfit",
        ),
        pytest.param(
            "  - {pattern: 'dense_1\\.kernel', replacement: k, transform: "
            "{permute_rotary: {from_metadata: key}}}\n",
            "rules[0] at line 3: permute_rotary takes the key head count from the GGUF "
            "metadata, and {keras} has no None.attention.head_count_kv of at least 1",
            id="no-metadata",
        ),
    ],
)
def test_a_rule_that_does_not_fit_a_tensor_is_refused_naming_it(
    run_cli, tmp_path, keras_pair, rules, error
) -> None:
    names = write_map(tmp_path, f"version: 1\nrules:\n{rules}")
    result = run_cli(*keras_pair, "--map", names)
    assert result.code == 2
    assert result.err == f"diffai: error: {names}: {error.format(keras=keras_pair[1])}\n"


def test_two_names_mapped_to_one_are_refused_naming_both(run_cli, tmp_path, keras_pair) -> None:
    names = write_map(tmp_path, "version: 1\nrules:\n  - {pattern: 'dense_1\\..*', "
                      "replacement: fc1.weight}\n")  # fmt: skip
    result = run_cli(*keras_pair, "--map", names)
    assert result.code == 2
    assert result.err == (
        f"diffai: error: {names}: tensors 'dense_1.bias' (by rules[0] at line 3) and "
        f"'dense_1.kernel' (by rules[0] at line 3) of {keras_pair[1]} would both be named "
        "'fc1.weight'; refused, as pairing either would judge a tensor the file does not "
        "hold under that name\n"
    )


def test_a_missing_map_file_fails_before_any_model_is_read(run_cli, tmp_path) -> None:
    result = run_cli(tmp_path / "no.pt", tmp_path / "no.pt", "--map", tmp_path / "none.yaml")
    assert result.err == f"diffai: error: {tmp_path / 'none.yaml'}: no such name map file\n"


def test_the_documented_map_file_is_valid(tmp_path) -> None:
    from diffai.pairing.maps.load import load_map

    page = (Path(__file__).parents[1] / "docs" / "name-maps.md").read_text()
    example = write_map(tmp_path, page.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert len(load_map(str(example)).rules) == 5
