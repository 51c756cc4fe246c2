"""How the outputs moved (the report's ``functional`` section), as text lines and table rows.

functional: 256 probes in 8 runs (seed 0, inputs sha256 e520f44d15cb), 2 outputs
  ~ logits: rel_l2=0.4521, cos=0.8102, max_abs=3.12, mismatch=99.8%, top1=12.1%, kl=0.8123
functional: not run: the baseline is safetensors, which holds no graph to run; only ONNX models run

Output names come from untrusted graphs and go through ``one_line``.
"""

from __future__ import annotations

from typing import Any

from diffai.text import one_line

#: Report field, label, and how it is shown, for each measured column.
COLUMNS = (
    ("relative_l2", "rel_l2", "{:.4g}"),
    ("cosine", "cos", "{:.6g}"),
    ("max_abs", "max_abs", "{:.4g}"),
    ("mismatch_fraction", "mismatch", "percent"),
    ("top1_agreement", "top1", "percent"),
    ("kl_divergence", "kl", "{:.4g}"),
)
STATUS_WORDS = {
    "not_run": "not run",
    "inputs_changed": "not compared",
    "candidate_failed": "candidate failed",
}


def functional_lines(section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return []
    status = section["status"]
    if status in STATUS_WORDS and "probes" not in section:
        return [f"functional: {STATUS_WORDS[status]}: {one_line(section['reason'])}"]
    head = f"functional: {probes_sentence(section)}"
    if status != "compared":
        return [f"{head}; {STATUS_WORDS[status]}: {one_line(section['reason'])}"]
    outputs = section["outputs"]
    lines = [f"{head}, {len(outputs)} output{'' if len(outputs) == 1 else 's'}"]
    return lines + [f"  ~ {one_line(o['name'])}: {output_text(o)}" for o in outputs]


def probes_sentence(section: dict[str, Any]) -> str:
    source = "seed {}".format(section["seed"]) if section["source"] == "random" else "from a file"
    digest = section["inputs_sha256"][:12]
    return (
        f"{section['probes']} probes in {section['runs']} runs ({source}, inputs sha256 {digest})"
    )


def output_text(output: dict[str, Any]) -> str:
    if output["status"] != "compared":
        return output["status"].replace("_", " ") + _shapes(output)
    return ", ".join(
        f"{label}={shown(output[key], style)}" for key, label, style in COLUMNS if key in output
    )


def measured_cells(output: dict[str, Any]) -> dict[str, str]:
    """Each column's value for a table: the text shown, or "" where it does not apply."""
    if output["status"] != "compared":
        return {}
    return {label: shown(output[key], style) for key, label, style in COLUMNS if key in output}


def shown(value: float | None, style: str) -> str:
    if value is None:
        return "n/a"
    if style == "percent":
        return f"{value * 100:.3g}%"
    return style.format(value)


def _shapes(output: dict[str, Any]) -> str:
    if "baseline_shape" not in output:
        return ""
    return f" ({output['baseline_shape']} -> {output['candidate_shape']})"
