"""The report's ``adapter`` section as rows a reader scans: one per module, worst first."""

from __future__ import annotations

from typing import Any

from diffai.text import one_line

MERGE_MARKS = {"merged": "ok", "unverifiable": "?", "not_merged": "FAIL", "mismatch": "FAIL",
               "missing": "FAIL"}  # fmt: skip
MERGE_NOTES = {
    "not_merged": "the merged weight equals the base weight: the merge did not take effect",
    "mismatch": "merged − base is not ΔW",
    "missing": "the merged model lacks this tensor or has another shape",
    "unverifiable": "ΔW is below the merged dtype's rounding",
    "merged": "",
}


def adapter_heading(section: dict[str, Any]) -> str:
    if section["mode"] == "merge_verification":
        merge = section["merge"]
        return (
            f"adapter: mode=merge_verification, checked={merge['checked']}, "
            f"merged={merge['merged']}, failed={len(merge['failed'])}, "
            f"unverifiable={len(merge['unverifiable'])}"
        )
    saved = len(section["saved_modules"])
    return f"adapter: mode={section['mode']}, modules={len(section['modules'])}, saved={saved}"


def adapter_rows(section: dict[str, Any]) -> list[dict[str, str]]:
    """Each module's figures as text, the failing merges (or the largest changes) first."""
    if section["mode"] == "merge_verification":
        records = sorted(section["modules"], key=lambda r: MERGE_MARKS[r["status"]] == "ok")
        return [_merge_row(record) for record in records]
    return [_update_row(record) for record in section["modules"]]


def _merge_row(record: dict[str, Any]) -> dict[str, str]:
    return {
        "mark": MERGE_MARKS[record["status"]],
        "name": one_line(record["weight"]),
        "status": record["status"],
        "figures": f"‖ΔW‖={_number(record['delta_norm'])}, "
        f"‖merged−base‖={_number(record['merged_delta_norm'])}, "
        f"error={_number(record['error'])} ({_number(record['relative_error'])} of ‖ΔW‖)",
        "note": MERGE_NOTES[record["status"]],
    }


def _update_row(record: dict[str, Any]) -> dict[str, str]:
    sides = [record["baseline"], record["candidate"]]
    figures = [
        "rank=" + "->".join(_side(s, "rank") for s in sides),
        "‖ΔW‖=" + "->".join(_side(s, "norm") for s in sides),
    ]
    if record["base_norm"] is not None:
        figures.append("‖ΔW‖/‖W‖=" + "->".join(_side(s, "relative_size") for s in sides))
    if record["cosine"] is not None:
        figures += [f"cos={_number(record['cosine'])}", f"rel_l2={_number(record['relative_l2'])}"]
    return {"mark": "~", "name": one_line(record["weight"]), "status": record["status"],
            "figures": ", ".join(figures), "note": ""}  # fmt: skip


def _side(side: dict[str, Any] | None, key: str) -> str:
    return "-" if side is None else _number(side[key])


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def adapter_lines(section: dict[str, Any] | None) -> list[str]:
    if not section:
        return []
    lines = [adapter_heading(section)]
    for row in adapter_rows(section):
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"  {row['mark']} {row['name']}: {row['status']}, {row['figures']}{note}")
    return lines


def adapter_view(section: dict[str, Any] | None) -> dict[str, Any] | None:
    """The heading and rows the comment and the HTML page show, or None without adapters."""
    if not section:
        return None
    return {"heading": adapter_heading(section), "rows": adapter_rows(section)}
