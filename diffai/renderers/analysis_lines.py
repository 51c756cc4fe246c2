"""One seed-style line per analysis: ``convergence_analysis: status=converging, stability=0.92``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diffai.text import one_line

Line = Callable[[dict[str, Any]], str]


def analysis_lines(document: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """One line per chosen section that has something to say, in the order given.

    A section may quote checkpoint values (a string ``epoch`` in training_progress),
    so each line is made one line.
    """
    return [
        f"{key}: {one_line(line)}" for key in keys if (line := _LINES[key](section(document, key)))
    ]


def section(document: dict[str, Any], key: str) -> dict[str, Any]:
    """An analysis, or one of the policy's sections at the top of the report."""
    return document["analyses"][key] if key in document["analyses"] else document[key]


def _anomaly(result: dict[str, Any]) -> str:
    line = f'type={result["type"]}, severity={result["severity"]}, action="{result["action"]}"'
    if result["affected_layers"]:
        line += f", affected_layers=[{', '.join(result['affected_layers'])}]"
    return line


def _architecture(result: dict[str, Any]) -> str:
    return (
        f"type1={result['type1']}, type2={result['type2']}, complexity={result['complexity']}, "
        f"migration={result['migration']}, deployment_readiness={result['deployment_readiness']}"
    )


def _convergence(result: dict[str, Any]) -> str:
    return f"status={result['status']}, stability={_fixed(result['stability'], 2)}"


def _gradient(result: dict[str, Any]) -> str:
    source = "" if result["source"] == "weight_update" else f", source={result['source']}"
    return f"flow_health={result['flow_health']}, norm={_fixed(result['norm'], 6)}{source}"


def _memory(result: dict[str, Any]) -> str:
    return (
        f"delta={result['delta_mb']:+.4g}MB, efficiency={_fixed(result['efficiency'], 4)}, "
        f"recommendation={result['recommendation']}"
    )


def _quantization(result: dict[str, Any]) -> str:
    if not result["detected"]:
        return "detected=false"
    speedup = "n/a" if result["speedup"] is None else f"{result['speedup']:.2f}x (estimate)"
    return (
        f"compression={_fixed(result['compression'], 2)}, speedup={speedup}, "
        f"precision_loss={result['precision_loss']}, "
        f"relative_error={_sig(result['relative_error'])}"
    )


def _training(result: dict[str, Any]) -> str:
    return result["story"]


def _regression(result: dict[str, Any]) -> str:
    degradation = result["degradation"]
    if degradation is None:
        shown = "n/a"
    elif result.get("degradation_basis") == "tensor_drift_over_limit":
        shown = f"{degradation:.2f}x_limit"
    else:
        shown = f"{degradation:+.1%}"
    passed = "true" if result["passed"] else "false"
    return f"passed={passed}, degradation={shown}, severity={result['severity']}"


def _readiness(result: dict[str, Any]) -> str:
    return f"readiness={result['readiness']:.2f}, risk={result['risk']}"


def _fixed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _sig(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


_LINES: dict[str, Line] = {
    "anomaly_detection": _anomaly,
    "architecture_comparison": _architecture,
    "convergence_analysis": _convergence,
    "gradient_analysis": _gradient,
    "memory_analysis": _memory,
    "quantization_analysis": _quantization,
    "training_progress": _training,
    "regression_test": _regression,
    "deployment_readiness": _readiness,
}
#: The analyses the seed's flags (``--anomaly-detection`` ...) choose among.
ANALYSIS_KEYS: tuple[str, ...] = tuple(_LINES)[:6]
#: The policy's sections, shown with the analyses whenever a verdict is asked for.
VERDICT_KEYS = ("regression_test", "deployment_readiness")
#: Everything, in output order: what stdout shows when no flag chooses.
LINE_KEYS: tuple[str, ...] = tuple(_LINES)
