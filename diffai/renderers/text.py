"""The seed's text output: analysis lines, a summary line, then one line per change.

anomaly_detection: type=none, severity=none, action="continue_training"
...
summary: compared=5, changed=1, added=1, removed=1, shape_changed=0, dtype_changed=0, unchanged=2
verdict: fail — 1 error check failed            (when a verdict is asked for)
  error regression_test.allow_removed: 1 tensor was removed (fc2.bias); tensors: fc2.bias
  ~ fc1.weight: mean=-0.0002->-0.0001, std=0.0514->0.0716, rel_l2=0.41, cos=0.91
  + fc3.weight: shape=[10, 32], dtype=f32
  - fc2.bias: shape=[32], dtype=f32

Names come from untrusted files and go through ``one_line``: a layer line starts
with its name, which must never start a workflow command.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from diffai.renderers.adapter import adapter_lines
from diffai.renderers.analysis_lines import LINE_KEYS, analysis_lines
from diffai.renderers.functional_lines import functional_lines
from diffai.renderers.outcome import is_identical, verdict_lines
from diffai.text import one_line, scalar_text

SUMMARY_KEYS = ("changed", "added", "removed", "shape_changed", "dtype_changed", "unchanged")


def render_text(
    document: dict[str, Any],
    tensors: list[dict[str, Any]],
    analyses: Sequence[str] = LINE_KEYS,
    show_layers: bool = False,
    show_verdict: bool = False,
) -> str:
    lines = [*analysis_lines(document, analyses), summary_line(document["summary"])]
    lines += mapping_lines(document.get("mapping"))
    lines += rename_lines(document.get("renamed"))
    lines += functional_lines(document.get("functional"))
    lines += adapter_lines(document.get("adapter"))
    if is_identical(document["summary"]):
        lines.append("identical: no compared tensor or scalar differs")
    if show_verdict:
        lines += verdict_lines(document)
    lines += [_tensor_line(t) for t in tensors if t["status"] != "unchanged"]
    lines += [
        f"  ~ {one_line(s['name'])}: {scalar_text(s['baseline'])}->{scalar_text(s['candidate'])}"
        for s in document["scalars"]
    ]
    if show_layers:
        lines += layer_lines(document["layers"])
    return "\n".join(lines) + "\n"


def summary_line(summary: dict[str, int]) -> str:
    counts = ", ".join(f"{key}={summary[key]}" for key in SUMMARY_KEYS)
    if summary.get("renamed"):  # said only when there are, so older outputs read the same
        counts += f", renamed={summary['renamed']}"
    compared, scalars = summary["tensors_compared"], summary["scalars_changed"]
    return f"summary: compared={compared}, {counts}, scalars_changed={scalars}"


def mapping_lines(mapping: dict[str, Any] | None) -> list[str]:
    """How names were paired, when anything was done to them: a reviewer must know."""
    return ["names: " + sentence for sentence in mapping_sentences(mapping)]


def mapping_sentences(mapping: dict[str, Any] | None) -> list[str]:
    """One sentence per name map applied, then one for the prefixes taken off, if any
    (text, markdown and HTML say the same); names and paths already on one line."""
    if not mapping:
        return []
    sentences = [_map_sentence(applied) for applied in mapping.get("maps", ())]
    taken = [f"{one_line(p)!r} off both sides (--strip-prefix)" for p in mapping["strip_prefixes"]]
    for side in ("baseline", "candidate"):
        taken += [
            f"{one_line(p)!r} off every {side} tensor name (detected)"
            for p in mapping["detected"][side]
        ]
    return sentences + (["took " + "; ".join(taken)] if taken else [])


def _map_sentence(applied: dict[str, Any]) -> str:
    """``mapped the candidate's names by gguf-llama (built-in, automatic: ...): 22 tensors
    mapped, 4 of them transformed (permute_rotary(...))``"""
    kind = "built-in" if applied["kind"] == "builtin" else "map file"
    why = f": {applied['reason']}" if applied["reason"] else ""
    tensors = applied["tensors"]
    transforms = sorted({t["transform"] for t in tensors if t["transform"]})
    transformed = sum(1 for t in tensors if t["transform"])
    done = f", {transformed} of them transformed ({'; '.join(transforms)})" if transformed else ""
    return (
        f"mapped the {applied['side']}'s names by {one_line(applied['source'])} ({kind}, "
        f"{applied['chosen']}{one_line(why)}): {len(tensors)} tensors mapped{done}"
    )


def rename_lines(renamed: dict[str, Any] | None) -> list[str]:
    """Look-alikes left unpaired, and why: the reviewer sees the removed and added ones."""
    if not renamed:
        return []
    notes = [
        f"{len(renamed[key])} {what}" for key, what in RENAME_NOTES.items() if renamed[key]
    ]
    return ["renames: left unpaired: " + "; ".join(notes)] if notes else []


RENAME_NOTES = {
    "ambiguous": "group(s) of look-alikes that matched more than one way (renamed.ambiguous)",
    "unconfirmed": "pair(s) merge could not read to confirm (renamed.unconfirmed)",
}


def layer_lines(layers: list[dict[str, Any]]) -> list[str]:
    """Layers with the largest relative change first."""
    ranked = sorted(layers, key=lambda layer: -(layer["relative_l2"] or 0.0))
    return ["layer_impact:"] + [
        f"  {one_line(layer['name'])}: rel_l2={_num(layer['relative_l2'])}, "
        f"changed={layer['changed']}/{layer['tensors']} tensors, params={layer['parameters']:,}"
        for layer in ranked
    ]


def _tensor_line(tensor: dict[str, Any]) -> str:
    render = _LINE_RENDERERS[tensor["status"]]
    marker = {"added": "+", "removed": "-"}.get(tensor["status"], "~")
    return f"  {marker} {_names(tensor)}: {render(tensor)}"


def _names(tensor: dict[str, Any]) -> str:
    """A renamed tensor is shown as ``old -> new``."""
    rename = tensor.get("rename")
    old = f"{one_line(rename['from'])} -> " if rename else ""
    return old + one_line(tensor["name"])


def _renamed(tensor: dict[str, Any]) -> str:
    rename = tensor["rename"]
    how = f"renamed ({rename['match']}, confidence {_num(rename['confidence'], 6)})"
    if rename["match"] != "near":
        return how
    return f"{how}, {_changed(tensor)}"


def _added(tensor: dict[str, Any]) -> str:
    return _shape_dtype(tensor["candidate"])


def _removed(tensor: dict[str, Any]) -> str:
    return _shape_dtype(tensor["baseline"])


def _shape_dtype(side: dict[str, Any]) -> str:
    sparse = f", layout={side['layout']}, nnz={side['nnz']}" if "layout" in side else ""
    return f"shape={side['shape']}, dtype={side['dtype']}{sparse}"


def _sparsity(base: dict[str, Any], cand: dict[str, Any]) -> str:
    """How a sparse side is stored (``layout=dense->csr, nnz=n/a->12``); nothing if neither is."""
    if "layout" not in base and "layout" not in cand:
        return ""
    layouts = "->".join(side.get("layout", "dense") for side in (base, cand))
    counts = "->".join(str(side.get("nnz", "n/a")) for side in (base, cand))
    return f", layout={layouts}, nnz={counts}"


def _shape_changed(tensor: dict[str, Any]) -> str:
    base, cand = tensor["baseline"], tensor["candidate"]
    return f"shape={base['shape']}->{cand['shape']}, " + _moments(base, cand)


def _dtype_changed(tensor: dict[str, Any]) -> str:
    base, cand = tensor["baseline"], tensor["candidate"]
    retyped = f"dtype={_stored(base)}->{_stored(cand)}"
    if tensor["diff"] is None:  # complex against real: no element-wise difference
        return retyped
    return f"{retyped}, {_difference(tensor)}"


def _stored(side: dict[str, Any]) -> str:
    """A change of encoding alone (f32 -> qint8, both read as f32) is named by what is stored."""
    return side.get("stored_dtype", side["dtype"])


def _changed(tensor: dict[str, Any]) -> str:
    base, cand = tensor["baseline"], tensor["candidate"]
    return _moments(base, cand) + ", " + _difference(tensor) + _sparsity(base, cand)


def _moments(base: dict[str, Any], cand: dict[str, Any]) -> str:
    """One f-string, not lists joined: the text output's 100,000 lines spent 0.3 s there."""
    text = (
        f"mean={_num(base['mean'])}->{_num(cand['mean'])}, "
        f"std={_num(base['std'])}->{_num(cand['std'])}"
    )
    for key in ("nan", "inf"):
        if base[key] != cand[key]:
            text += f", {key}={base[key]}->{cand[key]}"
    return text


def _difference(tensor: dict[str, Any]) -> str:
    """rel_l2 and cosine; where the tensor's own baseline is zero or negligible, also the
    relative change the policy judges and what it is measured against (``diffai.change``)."""
    diff = tensor["diff"]
    text = f"rel_l2={_num(diff['relative_l2'])}"
    basis = diff.get("relative_basis", "self")
    if basis != "self":
        text += f", rel_change={_num(diff['relative_change'])} (of {basis})"
    return f"{text}, cos={_num(diff['cosine'], 6)}"


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


_LINE_RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "changed": _changed,
    "dtype_changed": _dtype_changed,
    "shape_changed": _shape_changed,
    "added": _added,
    "removed": _removed,
    "renamed": _renamed,
}
