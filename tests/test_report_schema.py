"""The report schema is the package's public contract: shipped, valid, open where it must grow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import diffai
from diffai.report import report_schema

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_the_schema_ships_in_the_package_with_its_id_and_version() -> None:
    schema = diffai.report_schema()
    assert schema["$id"] == "https://diffai.dev/schema/report-v1.json"
    assert schema["properties"]["schema_version"] == {"const": 1}
    jsonschema.Draft202012Validator.check_schema(schema)


def _example_report(run_cli, tmp_path) -> dict[str, Any]:
    report = tmp_path / "report.json"
    result = run_cli(
        EXAMPLES / "baseline.safetensors", EXAMPLES / "candidate.safetensors", "--report", report
    )
    assert result.code == 1, result.err
    return json.loads(report.read_text())


def test_reports_of_the_example_models_validate(run_cli, tmp_path, validate_report) -> None:
    validate_report(_example_report(run_cli, tmp_path))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(("candidate", "dtype"), "q8_0", id="a-gguf-quantization-type"),
        pytest.param(("candidate", "dtype"), "qint8", id="a-torch-quantized-dtype"),
        pytest.param(("status",), "renamed", id="a-status-added-later"),
    ],
)
def test_dtype_and_status_are_open_strings(run_cli, tmp_path, field, value) -> None:
    """Adding a dtype or status value must not break a consumer validating by this schema."""
    document = _example_report(run_cli, tmp_path)
    tensor = document["tensors"][0]
    target = tensor
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    jsonschema.Draft202012Validator(report_schema()).validate(document)


def test_an_empty_dtype_is_still_refused(run_cli, tmp_path) -> None:
    document = _example_report(run_cli, tmp_path)
    document["tensors"][0]["candidate"]["dtype"] = ""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(report_schema()).validate(document)
