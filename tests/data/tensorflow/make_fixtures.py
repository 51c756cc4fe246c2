"""Make the TensorFlow fixtures of tests/data/tensorflow with TensorFlow itself (run once,
by hand, in a venv with tensorflow-cpu; the tests need no TensorFlow):

    python tests/data/tensorflow/make_fixtures.py tests/data/tensorflow

Writes ``module/`` (tf.saved_model.save of a tf.Module: variables of several dtypes, a
nested module, a list), ``keras/`` (a Keras model exported as a SavedModel), ``frozen.pb``
(a frozen GraphDef of the module's function: its variables as Const nodes), and for each
``*.npz``: what TensorFlow's own readers return (``tf.train.load_checkpoint`` for the
SavedModels' variables, ``tf.make_ndarray`` of every Const node), by key.
"""

import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)


class Inner(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(np.arange(4, dtype=np.float32).reshape(2, 2) / 7, name="w")


class Net(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.kernel = tf.Variable(rng.normal(size=(3, 4)).astype(np.float32))
        self.scale = tf.Variable(rng.normal(size=(2,)), dtype=tf.float64)
        self.half = tf.Variable(rng.normal(size=(2, 2)).astype(np.float16))
        self.brain = tf.Variable(tf.constant([1.5, -2.25, 3.0], dtype=tf.bfloat16))
        self.counts = tf.Variable(np.arange(5, dtype=np.int32))
        self.step = tf.Variable(np.int64(42))
        self.mask = tf.Variable(np.array([True, False, True, True]))
        self.inner = Inner()
        self.blocks = [tf.Variable(np.full((2,), 0.5 * i, np.float32)) for i in range(2)]

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    def __call__(self, x):
        y = tf.matmul(x, self.kernel) * tf.constant(2.5)  # a scalar: float_val, not content
        y = y + tf.constant([7.0, 7.0, 7.0, 7.0], name="sevens")
        return y + tf.reduce_sum(self.inner.w) + tf.cast(self.step, tf.float32)


def checkpoint_values(folder: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    values = {}
    for key, dtype in reader.get_variable_to_dtype_map().items():
        if dtype != tf.string:
            values[key] = np.asarray(reader.get_tensor(key))
    return values


def save_npz(path: Path, values: dict[str, np.ndarray]) -> None:
    """npz keeps no bfloat16: such values go as their uint16 bits, the key marked."""
    stored = {}
    for key, value in values.items():
        if value.dtype == tf.bfloat16.as_numpy_dtype:
            stored[f"{key}|bf16"] = value.view(np.uint16)
        else:
            stored[key] = value
    np.savez(path, **stored)


def main(out: Path) -> None:
    tf.random.set_seed(0)
    net = Net()
    tf.saved_model.save(net, str(out / "module"))
    save_npz(out / "module.npz", checkpoint_values(out / "module"))

    keras = tf.keras
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, name="dense"),
         keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(2, name="out")]
    )
    model.export(str(out / "keras"))
    save_npz(out / "keras.npz", checkpoint_values(out / "keras"))

    frozen = convert_variables_to_constants_v2(net.__call__.get_concrete_function())
    graph = frozen.graph.as_graph_def()
    (out / "frozen.pb").write_bytes(graph.SerializeToString())
    consts = {
        node.name: tf.make_ndarray(node.attr["value"].tensor)
        for node in graph.node
        if node.op == "Const"
    }
    save_npz(out / "frozen.npz", consts)
    print("tensorflow", tf.__version__, "keras", keras.__version__)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
