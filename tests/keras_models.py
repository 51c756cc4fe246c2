"""Real Keras 3 files, saved by Keras itself (torch backend) in a child process.

The child imports Keras with ``KERAS_BACKEND=torch`` (no TensorFlow), trains a
small functional model one epoch so the optimizer holds real moments, and saves
it every way Keras does: ``model.keras``, ``model.weights.h5`` and the legacy
``legacy.h5``; it also writes every variable's values as Keras holds them to
``values.npz`` (keyed by ``Variable.path``, the optimizer's by index) as the
reference. ``net`` has a bfloat16 head (legacy .h5 keeps bf16 as unmarked
opaque bytes, which diffai refuses), ``net32`` is all float32.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

_MAKE = r"""
import sys
from pathlib import Path
import numpy as np
import keras

def build(name, head_dtype):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    block = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(5, name="inner"),
         keras.layers.LayerNormalization(name="norm")],
        name="block",
    )
    x = keras.layers.Dense(8, name="first")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(3, name="head", dtype=head_dtype)(block(x))
    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((16, 6)), rng.random((16, 3)), epochs=1, verbose=0)
    return model

def values(model):
    found = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    found.update(
        {f"optimizer/{i}": keras.ops.convert_to_numpy(v)
         for i, v in enumerate(model.optimizer.variables)}
    )
    # npz keeps no bfloat16: its bits go as uint16
    return {k: v.view(np.uint16) if v.dtype.kind == "V" else v for k, v in found.items()}

folder = Path(sys.argv[1])
for name, head in (("net", "bfloat16"), ("net32", "float32")):
    model = build(name, head)
    (folder / name).mkdir()
    model.save(folder / name / "model.keras")
    model.save_weights(folder / name / "model.weights.h5")
    model.save(folder / name / "legacy.h5")
    np.savez(folder / name / "values.npz", **values(model))
"""


def make_keras_models(folder: Path) -> Path:
    """``folder/net`` and ``folder/net32``, each with its three files and ``values.npz``."""
    environment = {**os.environ, "KERAS_BACKEND": "torch", "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-c", _MAKE, str(folder)],
        env=environment, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return folder


def keras_values(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "values.npz") as archive:
        return {name: archive[name] for name in archive.files}
