"""Records built for all tensors at once: the dicts one record at a time gives (the layers':
tests/test_layer_records.py)."""

from __future__ import annotations

import math

from diffai.change import RelativeChange
from diffai.comparison import TensorComparison
from diffai.pairing.renames import Rename
from diffai.report import diff_record, stats_record, tensor_records
from tests.test_report_records import change, side


def test_every_tensor_record_is_the_one_its_parts_give() -> None:
    renamed = Rename("old.weight", "exact", 1.0)
    tensors = [
        TensorComparison("a.weight", "changed", side(), side(max=math.inf), change(l2=math.nan)),
        TensorComparison("b.weight", "added", None, side(mean=None, std=None), None),
        TensorComparison("c.weight", "renamed", side(), side(), change(), rename=renamed),
    ]
    changes = {"a.weight": RelativeChange(0.25, "module")}
    records = tensor_records(tensors, changes)
    assert [r["name"] for r in records] == ["a.weight", "b.weight", "c.weight"]
    for record, tensor in zip(records, tensors, strict=True):
        assert record["baseline"] == stats_record(tensor.baseline)
        assert record["candidate"] == stats_record(tensor.candidate)
        assert record["diff"] == diff_record(tensor.diff, changes.get(tensor.name))
    assert records[0]["candidate"]["max"] is None and records[0]["diff"]["l2"] is None
    # What a record holds, written out: the lines above hold it to its parts' functions.
    dense = {"shape": [2, 3], "dtype": "f32", "stored_dtype": "f32", "elements": 6,
             "bytes": 24, "mean": 0.5, "std": 1.0, "min": -1.0, "max": 2.0, "nan": 0,
             "inf": 0, "zeros": 1}  # fmt: skip
    assert records[0] == {
        "name": "a.weight", "status": "changed", "role": "weight", "baseline": dense,
        "candidate": {**dense, "max": None},
        "diff": {"max_abs": 0.1, "mean_abs": 0.05, "l2": None, "relative_l2": 0.1,
                 "cosine": 0.99, "changed": 6, "changed_fraction": 1.0, "baseline_l2": 2.0,
                 "candidate_l2": 2.1, "relative_change": 0.25, "relative_basis": "module"},
    }  # fmt: skip
    assert list(records[0]) == ["name", "status", "role", "baseline", "candidate", "diff"]
    assert list(records[0]["baseline"]) == list(dense)
    assert records[1]["baseline"] is None and records[1]["diff"] is None
    assert list(records[2])[-1] == "rename"
    assert records[2]["rename"] == {"from": "old.weight", "match": "exact", "confidence": 1.0}
    assert "rename" not in records[0]
