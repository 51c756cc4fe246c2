"""Real pretrained weights and real training runs, as fixtures for end-to-end tests.

Random tensors are too kind to a comparison tool: real checkpoints hold all-zero
biases, integer buffers, BatchNorm statistics, non-contiguous tensors and tiny
LayerNorm spreads. ``REAL`` holds small files from public model packages
(``tests/data/real/README.md`` says where each comes from). The functions below
derive the candidates a tool must judge: a genuine AdamW fine-tune, a scrambled
or re-initialised layer, and genuine PyTorch / Lightning training checkpoints.

Everything is seeded and deterministic, and fast enough to run per test.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file
from torch import nn

from tests.onnx_models import onnx_reference

REAL = Path(__file__).resolve().parent / "data" / "real"

#: The committed files that diffai reads today, with the loader users would run on them.
SAFETENSORS_FILES = ("silero_vad_16k.safetensors", "all-MiniLM-L6-v2.slice.safetensors")
TORCH_FILES = ("pnet.pt", "rnet.pt")
#: Their reference loader is ``torch.jit.load(path).state_dict()`` (trusted, committed files).
TORCHSCRIPT_FILES = ("silero_vad.jit",)
ONNX_FILES = ("silero_vad.onnx", "silero_vad_16k_op15.onnx")
#: Read by diffai's own GGUF and TFLite parsers (tests/test_format_gguf.py, test_format_tflite.py).
GGUF_FILES = ("ggml-vocab-llama-spm.gguf",)
TFLITE_FILES = ("emotion_model_quantized.tflite",)
#: Read by the Keras reader in its isolated child (tests/test_format_keras.py).
KERAS_FILES = ("emotion_model.hdf5",)


def load_real(name: str) -> dict[str, np.ndarray]:
    """A committed file as its reference loader reads it (safetensors, torch ``weights_only``)."""
    return load_reference(REAL / name)


def load_reference(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a safetensors, ONNX, torch or TorchScript file, named as diffai names them
    (nested keys dotted; ONNX subgraph tensors under their node path)."""
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix == ".onnx":
        return onnx_reference(path)
    if path.suffix == ".jit":
        return {name: _numpy(t) for name, t in torch.jit.load(path).state_dict().items()}
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    return {name: _numpy(tensor) for name, tensor in _walk(checkpoint, "")}


def _walk(obj: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a nested checkpoint, independently of diffai's own flattening."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _walk(value, f"{prefix}.{index}" if prefix else str(index))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """The values as numpy, bf16 through its bits (numpy has no bf16 of its own)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


# --- candidates derived from real weights ------------------------------------------------


def fine_tune(
    tensors: Mapping[str, np.ndarray],
    *,
    steps: int = 20,
    lr: float = 1e-5,
    seed: int = 0,
    weight_decay: float = 0.01,
) -> dict[str, np.ndarray]:
    """A real AdamW fine-tune of every float tensor: "an ordinary fine-tune", measured.

    The objective is fixed and random but touches every element: for each tensor
    ``w`` with pretrained value ``w0`` and a seeded direction ``R``,
    ``(w * R).sum() + 0.5 * ||w - w0||^2``. Adam normalises each element's step,
    so every element moves by about ``lr`` per step whatever its scale, as in a
    real small fine-tune: all-zero biases end at about ``steps * lr``, not at
    zero and not at a random init. Integer tensors come back untouched; names and
    dtypes are those of the input.
    """
    generator = torch.Generator().manual_seed(seed)
    params: dict[str, nn.Parameter] = {}
    directions: dict[str, torch.Tensor] = {}
    starts: dict[str, torch.Tensor] = {}
    for name, array in tensors.items():
        if np.issubdtype(array.dtype, np.floating):
            start = torch.from_numpy(np.array(array, dtype=np.float32))
            starts[name] = start
            params[name] = nn.Parameter(start.clone())
            directions[name] = torch.randn(start.shape, generator=generator)
    if params:
        optimizer = torch.optim.AdamW(params.values(), lr=lr, weight_decay=weight_decay)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = sum(
                (param * directions[name]).sum() + 0.5 * (param - starts[name]).square().sum()
                for name, param in params.items()
            )
            loss.backward()
            optimizer.step()
    return {
        name: params[name].detach().numpy().astype(array.dtype) if name in params else array.copy()
        for name, array in tensors.items()
    }


def permute_rows(tensors: Mapping[str, np.ndarray], name: str, seed: int) -> dict[str, np.ndarray]:
    """The scrambled-layer case: one matrix's rows shuffled, its mean, std and norm unchanged."""
    array = tensors[name]
    rng = np.random.default_rng(seed)
    order = rng.permutation(array.shape[0])
    while array.shape[0] > 1 and np.array_equal(order, np.arange(array.shape[0])):
        order = rng.permutation(array.shape[0])
    return {**tensors, name: array[order].copy()}


def reinitialise(tensors: Mapping[str, np.ndarray], name: str, seed: int) -> dict[str, np.ndarray]:
    """The re-initialised-layer case: fresh N(0, std) of the same std, shape and dtype."""
    array = tensors[name]
    std = float(np.std(array, dtype=np.float64))
    fresh = np.random.default_rng(seed).normal(0.0, std, array.shape).astype(array.dtype)
    return {**tensors, name: fresh}


# --- real training checkpoints ------------------------------------------------------------


class SmallCNN(nn.Module):
    """Conv2d + BatchNorm2d + Linear: weights, BN running stats and a ``num_batches_tracked``."""

    def __init__(self, channels: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.bn(self.conv(images)))
        return self.fc(features.mean(dim=(2, 3)))


def _train(
    steps: int, seed: int
) -> tuple[SmallCNN, torch.optim.Adam, torch.optim.lr_scheduler.StepLR, list[float], torch.Tensor]:
    """``steps`` real Adam steps on seeded random images; also the per-step losses and RNG state.

    Runs inside ``fork_rng`` so that a test's global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        losses = []
        for _ in range(steps):
            images, labels = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        rng_state = torch.get_rng_state()
    return model, optimizer, scheduler, losses, rng_state


def training_checkpoint(path: Path, *, steps: int = 4, seed: int = 0) -> Path:
    """A plain PyTorch training checkpoint as tutorials write it (``torch.save``, zip format)."""
    model, optimizer, scheduler, losses, rng_state = _train(steps, seed)
    torch.save(
        {
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(),
            "rng_state": rng_state,
            "epoch": steps // 2,
            "step": steps,
            "loss": losses[-1] if losses else None,
        },
        path,
    )
    return path


#: The callback keys Lightning 2.x writes: class name + repr of the ``state_key`` arguments.
MODEL_CHECKPOINT_KEY = (
    "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0, "
    "'every_n_epochs': 1, 'train_time_interval': None}"
)
EARLY_STOPPING_KEY = "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
LIGHTNING_VERSION = "2.5.1"


def lightning_checkpoint(path: Path, *, steps: int = 4, seed: int = 0) -> Path:
    """The layout ``Trainer.save_checkpoint`` writes (Lightning 2.x ``dump_checkpoint``).

    The weights live under ``state_dict`` with the LightningModule's attribute
    prefix (``model.``), optimizers and schedulers are lists, and the callbacks
    carry tensors of their own (best scores), which are training state, not weights.
    """
    model, optimizer, scheduler, losses, _ = _train(steps, seed)
    epoch = max(steps // 2 - 1, 0)
    score = torch.tensor(losses[-1] if losses else 0.0)
    best = f"/ckpt/epoch={epoch}.ckpt"
    torch.save(
        {
            "epoch": epoch,
            "global_step": steps,
            "pytorch-lightning_version": LIGHTNING_VERSION,
            "state_dict": {f"model.{name}": value for name, value in model.state_dict().items()},
            "loops": _lightning_loops(steps, epoch),
            "callbacks": {
                MODEL_CHECKPOINT_KEY: {
                    "monitor": "val_loss",
                    "best_model_score": score,
                    "best_model_path": best,
                    "current_score": score,
                    "dirpath": "/ckpt",
                    "best_k_models": {best: score},
                    "kth_best_model_path": best,
                    "kth_value": score,
                    "last_model_path": "",
                },
                EARLY_STOPPING_KEY: {
                    "wait_count": 0,
                    "stopped_epoch": 0,
                    "best_score": score,
                    "patience": 3,
                },
            },
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [scheduler.state_dict()],
            "hparams_name": "kwargs",
            "hyper_parameters": {"channels": 8, "classes": 4, "lr": 1e-3},
        },
        path,
    )
    return path


def _progress(count: int, *, started: bool = True, processed: bool = True) -> dict[str, int]:
    """A Lightning progress counter: ready/started/processed/completed, as its loops keep them."""
    counter = {"ready": count}
    if started:
        counter["started"] = count
    if processed:
        counter["processed"] = count
    counter["completed"] = count
    return counter


def _tracker(total: int, current: int, **kinds: bool) -> dict[str, dict[str, int]]:
    return {"total": _progress(total, **kinds), "current": _progress(current, **kinds)}


def _lightning_loops(steps: int, epoch: int) -> dict[str, Any]:
    """``loops``: the fit/validate/test/predict loop progress, all plain ints and bools."""
    batches = {**_tracker(steps, steps % 2), "is_last_batch": False}
    idle = {**_tracker(0, 0), "is_last_batch": False}
    step_only = _tracker(steps, steps % 2, started=False, processed=False)
    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": steps},
            "epoch_loop.batch_progress": batches,
            "epoch_loop.scheduler_progress": step_only,
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": _tracker(
                0, 0, started=False, processed=False
            ),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {
                "optimizer": {
                    "step": step_only,
                    "zero_grad": _tracker(steps, steps % 2, processed=False),
                }
            },
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": idle,
            "epoch_progress": _tracker(epoch, epoch),
        },
        "validate_loop": {"state_dict": {}, "batch_progress": idle},
        "test_loop": {"state_dict": {}, "batch_progress": idle},
        "predict_loop": {"state_dict": {}, "batch_progress": idle},
    }
