"""Every analysis on real safetensors files whose drift is known, checked against numpy."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import diffai

RNG = np.random.default_rng(7)


def transformer(layers: int = 6, hidden: int = 32) -> dict[str, np.ndarray]:
    """A small BERT-shaped state dict."""
    weights = {"embeddings.word_embeddings.weight": RNG.standard_normal((100, hidden))}
    for i in range(layers):
        prefix = f"encoder.layer.{i}"
        for part in ("query", "key", "value"):
            weights[f"{prefix}.attention.self.{part}.weight"] = RNG.standard_normal(
                (hidden, hidden)
            )
            weights[f"{prefix}.attention.self.{part}.bias"] = RNG.standard_normal(hidden) * 0.1
        weights[f"{prefix}.intermediate.dense.weight"] = RNG.standard_normal((4 * hidden, hidden))
        weights[f"{prefix}.output.LayerNorm.weight"] = np.ones(hidden)
    weights["classifier.weight"] = RNG.standard_normal((2, hidden))
    return {name: (value * 0.05).astype(np.float32) for name, value in weights.items()}


def analyses(write_safetensors, base: dict, cand: dict) -> dict:
    report = diffai.compare(
        write_safetensors("b.safetensors", base), write_safetensors("c.safetensors", cand)
    )
    return report.document["analyses"]


def nudged(weights: dict, scale: float, only: str = "") -> dict:
    return {
        n: (v + RNG.standard_normal(v.shape).astype(np.float32) * scale * v.std()).astype(v.dtype)
        if only in n else v
        for n, v in weights.items()
    }  # fmt: skip


# anomaly_detection


def test_clean_fine_tune_has_no_anomaly(write_safetensors) -> None:
    base = transformer()
    result = analyses(write_safetensors, base, nudged(base, 0.01))["anomaly_detection"]
    assert result == {"type": "none", "severity": "none", "affected_layers": [],
                      "action": "continue_training", "findings": []}  # fmt: skip


@pytest.mark.parametrize(
    ("poison", "kind", "severity", "detail"),
    [
        pytest.param(lambda v: np.where(np.arange(v.size).reshape(v.shape) < 3, np.nan, v),
                     "nan_gained", "critical", "NaN elements 0 -> 3", id="nan"),
        pytest.param(lambda v: np.where(np.arange(v.size).reshape(v.shape) == 0, np.inf, v),
                     "inf_gained", "critical", "±inf elements 0 -> 1", id="inf"),
        pytest.param(lambda v: v * 50, "exploding", "high", "(50.0x)", id="exploding"),
        pytest.param(lambda v: v * 0, "collapsed", "high", "every element is now zero", id="zero"),
        pytest.param(lambda v: np.full_like(v, 0.5), "constant", "high", "now 0.5", id="constant"),
        pytest.param(lambda v: v * 0.05, "std_collapse", "medium", "std ", id="std-collapse"),
    ],
)  # fmt: skip
def test_anomalies_name_the_tensor(write_safetensors, poison, kind, severity, detail) -> None:
    base = transformer()
    cand = dict(base)
    target = "encoder.layer.2.attention.self.key.weight"
    cand[target] = poison(base[target]).astype(np.float32)
    result = analyses(write_safetensors, base, cand)["anomaly_detection"]
    assert (result["type"], result["severity"]) == (kind, severity)
    assert result["affected_layers"] == ["encoder.layer.2.attention.self.key"]
    [finding] = result["findings"]
    assert finding["tensor"] == target and detail in finding["detail"]


# architecture_comparison


@pytest.mark.parametrize(
    ("weights", "family"),
    [
        pytest.param(
            {"encoder.layer.0.attention.self.query.weight": (4, 4)}, "transformer", id="bert"
        ),
        pytest.param({"model.layers.0.self_attn.q_proj.weight": (4, 4)}, "transformer", id="llama"),
        pytest.param(
            {"lstm.weight_ih_l0": (16, 4), "lstm.weight_hh_l0": (16, 4)}, "rnn", id="lstm"
        ),
        pytest.param({"features.0.weight": (8, 3, 3, 3), "fc.weight": (10, 8)}, "cnn", id="cnn"),
        pytest.param({"fc1.weight": (8, 4), "fc1.bias": (8,)}, "feedforward", id="mlp"),
        pytest.param({"scale": (4,)}, "unknown", id="vector-only"),
    ],
)
def test_model_family_from_names_and_shapes(write_safetensors, weights, family) -> None:
    tensors = {n: np.ones(s, np.float32) for n, s in weights.items()}
    result = analyses(write_safetensors, tensors, tensors)["architecture_comparison"]
    assert (result["type1"], result["type2"]) == (family, family)


def test_migration_and_complexity(write_safetensors) -> None:
    base = transformer(layers=4)
    same = analyses(write_safetensors, base, {n: v.astype(np.float16) for n, v in base.items()})
    assert same["architecture_comparison"]["migration"] == "easy"
    assert same["architecture_comparison"]["depth_baseline"] == 4
    grown = dict(base, **{"pooler.dense.weight": np.ones((32, 32), np.float32)})
    added = analyses(write_safetensors, base, grown)["architecture_comparison"]
    assert (added["migration"], added["deployment_readiness"]) == ("moderate", "review")
    assert added["parameters_candidate"] - added["parameters_baseline"] == 32 * 32
    assert added["complexity"] == "similar_complexity"  # +1024 of ~30k parameters is under 5%
    reshaped = dict(base, **{"classifier.weight": np.ones((3, 32), np.float32)})
    hard = analyses(write_safetensors, base, reshaped)["architecture_comparison"]
    assert (hard["migration"], hard["reshaped"]) == ("hard", ["classifier.weight"])
    pruned = {n: v for n, v in base.items() if "layer.3" not in n}
    smaller = analyses(write_safetensors, base, pruned)["architecture_comparison"]
    assert smaller["complexity"] == "reduced_complexity" and smaller["depth_candidate"] == 3


# convergence_analysis


def test_convergence_status_follows_the_update(write_safetensors) -> None:
    base = transformer()
    tiny = analyses(write_safetensors, base, nudged(base, 1e-5))["convergence_analysis"]
    assert tiny["status"] == "converged" and tiny["stability"] > 0.9
    step = analyses(write_safetensors, base, nudged(base, 0.02))["convergence_analysis"]
    assert step["status"] == "converging"
    assert step["update_magnitude"] == pytest.approx(0.02, rel=0.1)
    mixed = nudged(nudged(base, 1e-4), 0.3, only="layer.5.")
    uneven = analyses(write_safetensors, base, mixed)["convergence_analysis"]
    assert uneven["status"] == "unstable" and uneven["spread_decades"] > 1
    assert uneven["stability"] == pytest.approx(1 / (1 + uneven["spread_decades"]))
    wild = analyses(write_safetensors, base, nudged(base, 2.0))["convergence_analysis"]
    assert wild["status"] == "diverging"


def test_convergence_spread_is_the_std_of_log_relative_changes(write_safetensors) -> None:
    base = {"a.weight": np.ones(100, np.float32), "b.weight": np.ones(100, np.float32)}
    cand = {"a.weight": np.full(100, 1.001, np.float32), "b.weight": np.full(100, 1.1, np.float32)}
    result = analyses(write_safetensors, base, cand)["convergence_analysis"]
    ra, rb = float(np.float32(1.001)) - 1, float(np.float32(1.1)) - 1
    assert result["spread_decades"] == pytest.approx(
        abs(math.log10(rb) - math.log10(ra)) / 2, rel=1e-6
    )
    assert result["update_magnitude"] == pytest.approx(
        math.hypot(ra, rb) * 10 / math.sqrt(200), rel=1e-6
    )


# gradient_analysis


def test_gradient_proxy_is_the_weight_update(write_safetensors) -> None:
    base = transformer()
    cand = nudged(base, 0.01)
    result = analyses(write_safetensors, base, cand)["gradient_analysis"]
    delta = math.sqrt(sum(float(np.sum((cand[n].astype(np.float64) - base[n]) ** 2)) for n in base))
    assert result["norm"] == pytest.approx(delta, rel=1e-6)
    assert (result["flow_health"], result["source"], result["blocks"]) == (
        "healthy",
        "weight_update",
        6,
    )


def test_vanishing_and_exploding_updates(write_safetensors) -> None:
    base = transformer()
    late_only = nudged(nudged(base, 1e-6), 0.05, only="layer.5.")
    late_only = nudged(late_only, 0.05, only="layer.4.")
    assert (
        analyses(write_safetensors, base, late_only)["gradient_analysis"]["flow_health"]
        == "vanishing"
    )
    blown = nudged(nudged(base, 0.01), 3.0, only="layer.2.")
    result = analyses(write_safetensors, base, blown)["gradient_analysis"]
    assert result["flow_health"] == "exploding" and result["max_block"]["index"] == 2


def test_adam_moments_are_used_when_both_checkpoints_carry_them(write_safetensors) -> None:
    def checkpoint(scale: float) -> dict[str, np.ndarray]:
        weights = {
            f"model.layer.{i}.weight": np.ones((4, 4), np.float32) * (1 + scale) for i in range(3)
        }
        for i in range(3):
            weights[f"optimizer.state.{i}.exp_avg"] = np.full((4, 4), scale * (i + 1), np.float32)
            weights[f"optimizer.state.{i}.exp_avg_sq"] = np.full((4, 4), scale**2, np.float32)
        return weights

    result = analyses(write_safetensors, checkpoint(0.1), checkpoint(0.2))["gradient_analysis"]
    assert result["source"] == "optimizer_state (Adam exp_avg)"
    expected = math.sqrt(sum(16 * (0.2 * (i + 1)) ** 2 for i in range(3)))
    assert result["norm"] == pytest.approx(expected, rel=1e-6)
    assert result["gradient_rms"] == pytest.approx(0.2, rel=1e-6)
    assert result["flow_health"] == "healthy"


# memory_analysis and quantization_analysis


@pytest.mark.parametrize(
    ("dtype", "target", "low", "high", "loss"),
    [
        pytest.param("f16", np.float16, 1e-4, 4e-4, "minimal", id="f16"),
        pytest.param("bf16", ml_dtypes.bfloat16, 1e-3, 3e-3, "low", id="bf16"),
    ],
)
def test_quantization_error_is_measured(write_safetensors, dtype, target, low, high, loss) -> None:
    base = transformer()
    cand = {n: v.astype(target) for n, v in base.items()}
    result = analyses(write_safetensors, base, cand)
    quant = result["quantization_analysis"]
    num = sum(float(np.sum((cand[n].astype(np.float64) - base[n]) ** 2)) for n in base)
    den = sum(float(np.sum(base[n].astype(np.float64) ** 2)) for n in base)
    assert quant["relative_error"] == pytest.approx(math.sqrt(num / den), rel=1e-6)
    assert low < quant["relative_error"] < high
    assert quant["sqnr_db"] == pytest.approx(10 * math.log10(den / num), rel=1e-6)
    assert (quant["detected"], quant["compression"], quant["precision_loss"]) == (True, 0.5, loss)
    assert quant["speedup"] == 2.0 and quant["conversions"] == {f"f32->{dtype}": len(base)}
    memory = result["memory_analysis"]
    total = sum(v.nbytes for v in base.values())
    assert memory["baseline_mb"] == total / 2**20
    assert memory["delta_mb"] == -total / 2 / 2**20
    assert memory["efficiency"] == 2.0
    assert memory["bytes_by_dtype"] == {
        "baseline": {"f32": total},
        "candidate": {dtype: total // 2},
    }


def test_no_dtype_change_means_no_quantization(write_safetensors) -> None:
    base = transformer()
    quant = analyses(write_safetensors, base, base)["quantization_analysis"]
    assert (quant["detected"], quant["compression"], quant["precision_loss"]) == (
        False,
        None,
        "none",
    )


def test_memory_recommendation_rules(write_safetensors) -> None:
    base = {"w": np.ones(1000, np.float32)}
    assert (
        analyses(write_safetensors, base, {"w": np.ones(1000, np.float16)})["memory_analysis"][
            "recommendation"
        ]
        == "optimal"
    )
    grown = {"w": np.ones(1000, np.float32), "extra": np.ones(200, np.float32)}
    assert analyses(write_safetensors, base, grown)["memory_analysis"]["recommendation"] == (
        "review_size_increase"
    )
    assert (
        analyses(write_safetensors, base, {"w": np.ones(1000, np.float64)})["memory_analysis"][
            "recommendation"
        ]
        == "review_size_increase"
    )


def test_one_scrambled_matrix_is_disruption_not_convergence(write_safetensors) -> None:
    base = transformer()
    scrambled = nudged(base, 0.01)
    name = next(n for n, v in base.items() if v.ndim == 2 and v.size >= 256)
    scrambled[name] = base[name][::-1].copy()  # rows reversed: same values, other places
    result = analyses(write_safetensors, base, scrambled)["convergence_analysis"]
    assert result["status"] == "disrupted"
    assert result["scrambled"] == [name]
    fine = analyses(write_safetensors, base, nudged(base, 0.01))["convergence_analysis"]
    assert (fine["status"], fine["scrambled"]) == ("converging", [])


def test_a_batch_norm_counter_is_not_a_gradient(write_safetensors) -> None:
    """A counter going 0 -> 100 once read as gradient norm 100 and a diverging run."""
    base = {"bn.weight": np.ones(16, np.float32), "fc.weight": transformer()["classifier.weight"]}
    base = {n: v.astype(np.float32) for n, v in base.items()}
    cand = nudged(base, 0.02)
    base["bn.num_batches_tracked"] = np.array(0, np.int64)
    cand["bn.num_batches_tracked"] = np.array(100, np.int64)
    result = analyses(write_safetensors, base, cand)
    weights_only = np.sqrt(sum(
        np.sum((cand[n].astype(np.float64) - base[n]) ** 2) for n in ("bn.weight", "fc.weight")
    ))  # fmt: skip
    assert result["gradient_analysis"]["norm"] == pytest.approx(weights_only, rel=1e-9)
    assert result["convergence_analysis"]["status"] == "converging"
    assert result["convergence_analysis"]["tensors_measured"] == 2


def test_a_change_of_encoding_alone_is_a_dtype_change() -> None:
    """GGUF Q8_0 -> Q4_0, or f32 -> qint8: the values stay f32, the stored dtype moves."""
    from diffai.analyses import quantization
    from diffai.comparison import CompareOptions, compare_models
    from diffai.model import Model, TensorRef

    rng = np.random.default_rng(3)
    values = rng.standard_normal((64, 32)).astype(np.float32)
    coarse = (np.round(values * 8) / 8).astype(np.float32)

    def model(array: np.ndarray, stored: str, size: int) -> Model:
        ref = TensorRef(
            "w", array.shape, "f32", load=lambda: array, stored_as=stored, stored_size=size
        )
        return Model("m", "test", size, tensors={"w": ref})

    comparison = compare_models(
        model(values, "q8_0", 2176), model(coarse, "q4_0", 1152), CompareOptions()
    )
    (tensor,) = comparison.tensors
    assert tensor.status == "dtype_changed"
    quant = quantization.analyze(comparison)
    error = float(
        np.linalg.norm(coarse.astype(np.float64) - values)
        / np.linalg.norm(values.astype(np.float64))
    )
    assert quant["relative_error"] == pytest.approx(error, rel=1e-9)
    assert quant["conversions"] == {"q8_0->q4_0": 1}
    assert quant["compression"] == pytest.approx(1152 / 2176)
