"""Regenerate the example models: a small MLP and a fine-tuned copy of it.

    python examples/make_examples.py

The candidate is the baseline after a simulated fine-tune: every tensor moves
a little, the classifier head more than the rest, and a new tensor
(``fc2.scale``) appears.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HERE = Path(__file__).parent


def baseline_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "fc1.weight": (rng.standard_normal((32, 16)) * 0.25).astype(np.float32),
        "fc1.bias": (rng.standard_normal(32) * 0.05).astype(np.float32),
        "fc2.weight": (rng.standard_normal((10, 32)) * 0.18).astype(np.float32),
        "fc2.bias": np.zeros(10, dtype=np.float32),
    }


def fine_tuned(weights: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    step = {"fc1.weight": 0.01, "fc1.bias": 0.005, "fc2.weight": 0.05, "fc2.bias": 0.02}
    tuned = {
        name: (value + rng.standard_normal(value.shape) * step[name]).astype(np.float32)
        for name, value in weights.items()
    }
    tuned["fc2.scale"] = np.ones(10, dtype=np.float32)
    return tuned


def main() -> None:
    rng = np.random.default_rng(20261126)
    baseline = baseline_weights(rng)
    save_file(baseline, HERE / "baseline.safetensors", metadata={"epoch": "10"})
    save_file(fine_tuned(baseline, rng), HERE / "candidate.safetensors", metadata={"epoch": "12"})


if __name__ == "__main__":
    main()
