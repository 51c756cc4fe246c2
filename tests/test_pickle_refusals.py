"""A refused pickle's message must fit the file: "save the state dict" only for a whole object.

Real files from ``torch.save``, through the real CLI, twice: without torch (the
default install, where the allow-list's refusal is the message) and with it
(where torch's weights-only loader reads what it can and diffai says what it
cannot compare). Each asserts the exact line.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from diffai.formats import pytorch

NOTHING_RAN = "nothing was executed"
TORCH_TOO = "torch.load(weights_only=True) refused it too"


class RunsCode:
    """Pickles as a call of ``os.system``, as an attack would."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def conv_packed_params() -> dict[str, Any]:
    """A TorchScript class diffai does not read (quantized tensors and Linear/LSTM packed
    parameters it reads: tests/test_format_quantized.py)."""
    weight = torch.quantize_per_tensor(torch.randn(2, 1, 3, 3), 0.1, 0, torch.qint8)
    return {"p": torch.ops.quantized.conv2d_prepack(weight, None, [1, 1], [0, 0], [1, 1], 1)}


def whole_module() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2))


def runs_code() -> dict[str, Any]:
    return {"w": RunsCode()}


def user_class() -> Any:
    return _Net()


class _Net:
    """A user's class, pickled whole: its module is this test file."""


@pytest.fixture
def saved(tmp_path: Path) -> Callable[[Callable[[], Any]], Path]:
    def save(make: Callable[[], Any]) -> Path:
        path = tmp_path / "model.pt"
        with warnings.catch_warnings():  # torch's deprecation notes on quantization
            warnings.simplefilter("ignore")
            torch.save(make(), path)
        return path

    return save


def refused(global_name: str, reason: str) -> str:
    return f"refused to load pickled global {global_name!r} (not on the allow-list): {reason}"


def not_read_yet(what: str, global_name: str) -> str:
    return (
        f"it holds {what} (pickled global {global_name!r}), which diffai does not read yet; "
        f"{NOTHING_RAN}"
    )


WHOLE_MODULE = (
    "the file is a whole pickled nn.Module, not a state dict; save model.state_dict() "
    f"instead; {NOTHING_RAN}"
)
WHOLE_OBJECT = (
    "the file pickles a whole Python object, not a state dict; save model.state_dict() "
    f"instead; {NOTHING_RAN}"
)
RUNS_CODE = f"loading it would run code; {NOTHING_RAN}"
SEQUENTIAL = "torch.nn.modules.container.Sequential"
CONV_PACKED = (
    "model/data.pkl: it holds a TorchScript object of class "
    f"'__torch__.torch.classes.quantized.Conv2dPackedParamsBase', which diffai does not read; "
    f"{NOTHING_RAN}"
)
USER_CLASS = f"{__name__}._Net"

WITHOUT_TORCH = [
    pytest.param(
        conv_packed_params, CONV_PACKED, id="conv-packed-params",
    ),
    pytest.param(whole_module, refused(SEQUENTIAL, WHOLE_MODULE), id="whole-module"),
    pytest.param(user_class, refused(USER_CLASS, WHOLE_OBJECT), id="user-class"),
    pytest.param(runs_code, refused("posix.system", RUNS_CODE), id="os-system"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "problem"), WITHOUT_TORCH)
def test_without_torch_the_refusal_says_what_the_global_is(
    run_cli, saved, monkeypatch, make: Callable[[], Any], problem: str
) -> None:
    path = saved(make)
    monkeypatch.setattr(pytorch, "_import_torch", lambda: None)
    result = run_cli(path, path)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"diffai: error: {path}: {problem}\n"


WITH_TORCH = [
    pytest.param(
        conv_packed_params, CONV_PACKED, id="conv-packed-params",
    ),
    pytest.param(
        whole_module, f"{refused(SEQUENTIAL, WHOLE_MODULE)}; {TORCH_TOO}", id="whole-module",
    ),
    pytest.param(
        user_class, f"{refused(USER_CLASS, WHOLE_OBJECT)}; {TORCH_TOO}", id="user-class",
    ),
    pytest.param(
        runs_code, f"{refused('posix.system', RUNS_CODE)}; {TORCH_TOO}", id="os-system",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("make", "problem"), WITH_TORCH)
def test_with_torch_the_message_says_what_the_tensor_is(
    run_cli, saved, make: Callable[[], Any], problem: str
) -> None:
    path = saved(make)
    result = run_cli(path, path)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"diffai: error: {path}: {problem}\n"


def test_builtins_eval_is_refused_as_code(run_cli, tmp_path: Path, monkeypatch) -> None:
    """Protocol 2 spells builtins ``__builtin__``, which is no module of Python 3's."""

    class Eval:
        def __reduce__(self) -> tuple[Any, ...]:
            return (eval, ("1 + 1",))

    path = tmp_path / "model.pt"
    torch.save({"w": Eval()}, path)
    monkeypatch.setattr(pytorch, "_import_torch", lambda: None)
    result = run_cli(path, path)
    assert result.err == f"diffai: error: {path}: {refused('__builtin__.eval', RUNS_CODE)}\n"
