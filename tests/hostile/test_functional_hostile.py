"""Crafted ONNX graphs a functional comparison must refuse before it runs them, or stop.

Each graph is valid to diffai's weight reader (its tensors compare), so only the
functional stage stands between it and ONNX Runtime: a custom operator domain (in the
main graph, a subgraph, a model-local function), ONNX Runtime's contrib domain without
the policy's consent, a node attribute whose external data points outside the model's
folder (the weight reader reads only Constant nodes' tensors, ONNX Runtime every one),
a loop that never ends and an allocation past the memory budget. Each gives exit 2,
one line naming the file, no report. On the code before the functional stage, each
policy is refused as an unknown key instead (so each test fails there).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import CliResult
from tests.hostile.conftest import Refusal, assert_refused

POLICY = "version: 1\nregression_test:\n  functional:\n    probes: 4\n"
X = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
Y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)


def save(path: Path, nodes: list[onnx.NodeProto], **extra: object) -> Path:
    graph = helper.make_graph(nodes, "g", [X], [Y])
    opsets = [helper.make_opsetid("", 17), *extra.pop("opsets", [])]  # type: ignore[list-item]
    model = helper.make_model(graph, opset_imports=opsets, **extra)
    onnx.save(model, str(path))
    return path


def custom_op(path: Path) -> Path:
    node = helper.make_node("Evil", ["x"], ["y"], domain="ai.evil")
    return save(path, [node], opsets=[helper.make_opsetid("ai.evil", 1)])


def custom_op_in_a_branch(path: Path) -> Path:
    inner = helper.make_graph(
        [helper.make_node("Evil", ["x"], ["z"], domain="ai.evil")], "then", [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )  # fmt: skip
    cond = helper.make_node("Constant", [], ["c"], value=helper.make_tensor("v", 9, [], [1]))
    branch = helper.make_node("If", ["c"], ["y"], then_branch=inner, else_branch=inner)
    return save(path, [cond, branch], opsets=[helper.make_opsetid("ai.evil", 1)])


def custom_op_in_a_function(path: Path) -> Path:
    body = [helper.make_node("Evil", ["a"], ["b"], domain="ai.evil")]
    function = helper.make_function(
        "local", "Wrap", ["a"], ["b"], body, [helper.make_opsetid("ai.evil", 1)]
    )
    node = helper.make_node("Wrap", ["x"], ["y"], domain="local")
    opsets = [helper.make_opsetid("local", 1), helper.make_opsetid("ai.evil", 1)]
    return save(path, [node], opsets=opsets, functions=[function])


def contrib_op(path: Path) -> Path:
    node = helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")
    return save(path, [node], opsets=[helper.make_opsetid("com.microsoft", 1)])


def external_attribute(location: str) -> Callable[[Path], Path]:
    """``ConstantOfShape``'s ``value`` kept in an external file: not a Constant node, so not a
    tensor diffai compares, but one ONNX Runtime loads."""

    def write(path: Path) -> Path:
        value = helper.make_tensor("fill", TensorProto.FLOAT, [1], [0.0])
        value.data_location = TensorProto.EXTERNAL
        value.ClearField("float_data")
        value.external_data.add(key="location", value=location)
        shape = helper.make_node("Shape", ["x"], ["s"])
        fill = helper.make_node("ConstantOfShape", ["s"], ["f"], value=value)
        return save(path, [shape, fill, helper.make_node("Add", ["x", "f"], ["y"])])

    return write


HOSTILE = [
    pytest.param(custom_op, "it uses operator 'Evil' of domain 'ai.evil', which is not a standard "
                 "ONNX operator domain (custom operators); refused before running it", id="custom"),
    pytest.param(custom_op_in_a_branch, "operator 'Evil' of domain 'ai.evil'", id="in-a-branch"),
    pytest.param(custom_op_in_a_function, "operator 'Evil' of domain 'ai.evil'", id="in-function"),
    pytest.param(contrib_op, "it uses operator 'Gelu' of domain 'com.microsoft', an ONNX Runtime "
                 "contrib operator; set regression_test.functional.allow_contrib_ops to run it",
                 id="contrib"),
    pytest.param(external_attribute("/etc/hostname"), "tensor 'fill' external data location "
                 "'/etc/hostname' is absolute; it must name a file beside the model",
                 id="absolute"),
    pytest.param(external_attribute("../../../../proc/self/environ"), "leaves the model's folder",
                 id="climbing"),
]  # fmt: skip


@pytest.fixture
def gated(run_cli: Callable[..., CliResult], tmp_path: Path) -> Callable[..., Refusal]:
    def run(hostile: Path, policy: str = POLICY) -> Refusal:
        (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
        report = tmp_path / "report.json"
        args = ("--policy", tmp_path / "policy.yaml", "--report", report)
        result = run_cli(hostile, hostile, *args)
        return Refusal(hostile, result.code, result.err, report.exists())

    return run


@pytest.mark.parametrize(("craft", "problem"), HOSTILE)
def test_a_graph_is_refused_before_it_runs(gated, tmp_path, craft, problem) -> None:
    assert_refused(gated(craft(tmp_path / "hostile.onnx")), problem)


def test_contrib_operators_run_when_the_policy_allows_them(gated, tmp_path) -> None:
    allowed = gated(contrib_op(tmp_path / "gelu.onnx"), POLICY + "    allow_contrib_ops: true\n")
    assert allowed.code == 0 and allowed.report_written, allowed


def test_a_function_of_standard_operators_runs(gated, tmp_path) -> None:
    body = [helper.make_node("Relu", ["a"], ["b"])]
    function = helper.make_function(
        "local", "Wrap", ["a"], ["b"], body, [helper.make_opsetid("", 17)]
    )
    node = helper.make_node("Wrap", ["x"], ["y"], domain="local")
    path = save(
        tmp_path / "f.onnx", [node], opsets=[helper.make_opsetid("local", 1)], functions=[function]
    )
    assert gated(path).code == 0


def test_a_loop_that_never_ends_is_stopped_at_its_budget(gated, tmp_path) -> None:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Identity", ["v"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)],
    )  # fmt: skip
    forever = helper.make_node("Constant", [], ["t"], value=helper.make_tensor("t", 9, [], [1]))
    loop = helper.make_node("Loop", ["", "t", "x"], ["y"], body=body)
    refusal = gated(
        save(tmp_path / "loop.onnx", [forever, loop]), POLICY + "    timeout_seconds: 3\n"
    )
    assert_refused(
        refusal, "ONNX Runtime, running the baseline took over 3 s on this file and was stopped"
    )


def test_an_allocation_past_the_memory_budget_is_one_line(gated, tmp_path) -> None:
    shape = helper.make_node(
        "Constant",
        [],
        ["s"],
        value=helper.make_tensor("s", TensorProto.INT64, [2], [1 << 17, 1 << 17]),
    )
    fill = helper.make_node("ConstantOfShape", ["s"], ["f"])
    nodes = [
        shape,
        fill,
        helper.make_node("ReduceSum", ["f"], ["r"]),
        helper.make_node("Add", ["x", "r"], ["y"]),
    ]
    refusal = gated(save(tmp_path / "big.onnx", nodes), POLICY + "    memory_mb: 512\n")
    assert_refused(refusal, "ONNX Runtime failed on probe run 0: ")
    assert refusal.err.endswith("68719476736\n")  # the 64 GiB it asked for, no "\\n" shown
