"""Loading policy files: the shipped schema, the Policy tree, and every error message, exactly."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from diffai.errors import DiffaiError, PolicyError
from diffai.policy import (
    MetricRule,
    Override,
    TensorRules,
    default_policy,
    load_metrics,
    load_policy,
    policy_schema,
)
from diffai.policy.schema import MESSAGES
from tests.test_policy_rules import policy_loader

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "policy.md"


@pytest.fixture
def policy_file(tmp_path, monkeypatch):
    return policy_loader(tmp_path, monkeypatch)


def guide_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.+?)```", GUIDE.read_text(), re.S)


def schemas(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A schema and every subschema in it."""
    yield schema
    children = [*schema.get("properties", {}).values(), *schema.get("$defs", {}).values()]
    children += schema.get("anyOf", []) + ([schema["items"]] if "items" in schema else [])
    for child in children:
        yield from schemas(child)


def test_the_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = policy_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_key_has_a_description_for_editors() -> None:
    defs = policy_schema()["$defs"]
    mappings = [s for s in schemas(policy_schema()) if "additionalProperties" in s]
    for schema in mappings:
        for key, sub in schema.get("properties", {}).items():  # functional.inputs: any name
            target = defs[sub["$ref"].rsplit("/", 1)[1]] if "$ref" in sub else sub
            assert target.get("description"), key


def test_every_mapping_refuses_unknown_keys() -> None:
    mappings = [s for s in schemas(policy_schema()) if "object" in s.get("type", ())]
    named = [s for s in mappings if "properties" in s]
    assert len(mappings) == 10 and len(named) == 9  # functional.inputs maps any input name
    assert all(s["additionalProperties"] is False for s in named)


def test_every_schema_keyword_that_can_fail_has_a_translation() -> None:
    structural = {"$schema", "$id", "$ref", "$defs", "title", "description", "properties", "items"}
    handled = {"additionalProperties", "required", *MESSAGES}
    used = {key for schema in schemas(policy_schema()) for key in schema}
    assert used - structural == handled


def test_the_guide_example_policy_loads(policy_file) -> None:
    policy = policy_file(guide_blocks("yaml")[0])
    regression = policy.regression_test
    assert regression.rules == TensorRules(max_relative_change=0.05, min_cosine_similarity=0.995)
    assert regression.ignore == ("*.num_batches_tracked",)
    assert regression.overrides == (
        Override(
            match="classifier.*",
            rules=TensorRules(
                max_relative_change=0.5, min_cosine_similarity=0.995, severity="warning"
            ),
        ),
    )
    assert regression.metrics.rules == (
        MetricRule(
            metric="accuracy", threshold=0.8, max_degradation=0.01, max_relative_degradation=0.02
        ),
    )
    assert regression.metrics.baseline == Path("eval/baseline.json")
    budgets = policy.deployment_readiness
    assert (budgets.min_readiness, budgets.max_size_increase_mb) == (0.8, 50)
    assert (budgets.max_parameter_increase, budgets.max_quantization_error) == (0.05, 0.02)
    assert budgets.require_no_anomalies is True
    assert policy.source == "policy.yaml"


def test_an_empty_policy_is_the_default_policy(policy_file) -> None:
    policy = policy_file("version: 1\nregression_test:\ndeployment_readiness:\n")
    assert policy == default_policy().__class__(source="policy.yaml")
    default = default_policy()
    assert default.source == "default"
    assert default.regression_test.rules == TensorRules(
        fail_on_nan=True, fail_on_inf=True, allow_added=True,
        allow_removed=False, allow_shape_change=False, allow_dtype_change=False,
    )  # fmt: skip
    assert default.regression_test.ignore == ("*.num_batches_tracked",)


def test_the_policy_is_frozen(policy_file) -> None:
    policy = policy_file("version: 1\n")
    with pytest.raises(AttributeError):
        policy.source = "other"  # type: ignore[misc]


POLICY_ERRORS = [
    pytest.param(
        "version: 1\nregression_test:\n  fail_on_nan: true\n  max_relativ_change: 0.05\n",
        "policy.yaml:4: regression_test.max_relativ_change: unknown key, "
        "did you mean max_relative_change?",
        id="typo",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  min_cosine_similarity: abc\n",
        "policy.yaml:3: regression_test.min_cosine_similarity: expected a number, got 'abc'",
        id="wrong-type",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  max_relative_change: 5%\n",
        "policy.yaml:3: regression_test.max_relative_change: expected a number, got '5%'",
        id="percent-sign",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  min_cosine_similarity: 1.5\n",
        "policy.yaml:3: regression_test.min_cosine_similarity: 1.5 is above the maximum 1",
        id="above-maximum",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  max_relative_change: -0.1\n",
        "policy.yaml:3: regression_test.max_relative_change: -0.1 is below the minimum 0",
        id="below-minimum",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  max_relative_change: .nan\n",
        "policy.yaml:3: regression_test.max_relative_change: expected a finite number, got nan",
        id="nan-threshold",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  fail_on_nan: 'yes please'\n",
        "policy.yaml:3: regression_test.fail_on_nan: expected true or false, got 'yes please'",
        id="not-a-switch",
    ),
    pytest.param(
        "version: 1\nregression_test: 5\n",
        "policy.yaml:2: regression_test: expected a mapping, got 5",
        id="section-not-a-mapping",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  ignore: '*.bias'\n",
        "policy.yaml:3: regression_test.ignore: expected a list, got '*.bias'",
        id="ignore-not-a-list",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  overrides:\n    - severity: warning\n"
        "      max_relative_change: 0.5\n",
        "policy.yaml:4: regression_test.overrides[0].match: required key is missing",
        id="override-without-match",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  overrides:\n    - match: a\n      severity: warn\n",
        "policy.yaml:5: regression_test.overrides[0].severity: expected error or warning, "
        "got 'warn'",
        id="bad-severity",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  overrides:\n    - match: a\n    - match: b\n"
        "      max_relative_chnge: 0.5\n",
        "policy.yaml:6: regression_test.overrides[1].max_relative_chnge: unknown key, "
        "did you mean max_relative_change?",
        id="typo-in-second-override",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  overrides:\n    - mach: 'head.*'\n",
        "policy.yaml:4: regression_test.overrides[0].mach: unknown key, did you mean match?",
        id="misspelt-required-key",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  overrides:\n    - match: ''\n",
        "policy.yaml:4: regression_test.overrides[0].match: must not be empty",
        id="empty-glob",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  metrics:\n    rules:\n      - metric: accuracy\n"
        "        greater_is_better: true\n",
        "policy.yaml:5: regression_test.metrics.rules[0]: set at least one of threshold, "
        "max_degradation or max_relative_degradation",
        id="metric-rule-without-limit",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  metrics:\n    rules:\n      - metric: loss\n"
        "        greater_is_better: false\n        max_degradaton: 0.1\n",
        "policy.yaml:7: regression_test.metrics.rules[0].max_degradaton: unknown key, "
        "did you mean max_degradation?",
        id="metric-rule-typo",
    ),
    pytest.param(
        "version: 1\nmax_relative_change: 0.05\n",
        "policy.yaml:2: max_relative_change: unknown key here, it belongs under regression_test",
        id="key-at-the-wrong-level",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  min_readiness: 0.8\n",
        "policy.yaml:3: regression_test.min_readiness: unknown key here, "
        "it belongs under deployment_readiness",
        id="budget-under-regression-test",
    ),
    pytest.param(
        "version: 1\nfoo: 1\n",
        "policy.yaml:2: foo: unknown key (valid keys: version, regression_test, "
        "deployment_readiness)",
        id="unknown-key-without-a-neighbour",
    ),
    pytest.param(
        "version: 1\ndeployment_readiness:\n  min_readiness: 80\n",
        "policy.yaml:3: deployment_readiness.min_readiness: 80 is above the maximum 1",
        id="readiness-as-percent",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  max_relative_change: 0.05\n  max_relative_change: 0.1\n",
        "policy.yaml:4: regression_test.max_relative_change: duplicate key (first at line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        "version: 1\nregression_test:\n  min_cosine_similarity: 2\n  max_relativ_chnge: 1\n",
        "policy.yaml:3: regression_test.min_cosine_similarity: 2 is above the maximum 1",
        id="first-problem-in-the-file-wins",
    ),
    pytest.param(
        "regression_test:\n  max_relative_change: 0.05\n",
        "policy.yaml:1: version: required key is missing",
        id="no-version",
    ),
    pytest.param("version: 2\n", "policy.yaml:1: version: expected 1, got 2", id="version-2"),
    pytest.param(
        "version: 1\nregression_test:\n  max_relative_change: [0.05\n",
        "policy.yaml:4: invalid YAML: while parsing a flow sequence, expected ',' or ']', "
        "but got '<stream end>'",
        id="yaml-syntax",
    ),
    pytest.param(
        "version: 1\nregression_test:\n max_abs_diff: 0.05\n  min_cosine_similarity: 1\n",
        "policy.yaml:4: invalid YAML: mapping values are not allowed here",
        id="yaml-indentation",
    ),
    pytest.param(
        "version: 1\n---\nversion: 1\n",
        "policy.yaml:2: invalid YAML: expected a single document in the stream, "
        "but found another document",
        id="two-documents",
    ),
    pytest.param(
        "version: 1\nx: !!python/object/apply:os.system ['true']\n",
        "policy.yaml:2: invalid YAML: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
        id="python-tag-is-never-executed",
    ),
    pytest.param(
        "", 'policy.yaml: the policy file is empty; start it with "version: 1"', id="empty"
    ),
    pytest.param(
        "# only a comment\n",
        'policy.yaml: the policy file is empty; start it with "version: 1"',
        id="only-comments",
    ),
    pytest.param(
        "- version: 1\n",
        "policy.yaml:1: expected a mapping of policy keys at the top level, got a list",
        id="top-level-list",
    ),
    pytest.param(
        "max_relative_change\n",
        "policy.yaml:1: expected a mapping of policy keys at the top level, "
        "got 'max_relative_change'",
        id="top-level-scalar",
    ),
]


@pytest.mark.parametrize(("text", "message"), POLICY_ERRORS)
def test_policy_errors_name_the_line_and_the_key(policy_file, text: str, message: str) -> None:
    with pytest.raises(PolicyError) as raised:
        policy_file(text)
    assert str(raised.value) == message
    assert isinstance(raised.value, DiffaiError)


def test_a_missing_policy_file(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PolicyError) as raised:
        load_policy("ci/policy.yaml")
    assert str(raised.value) == "ci/policy.yaml: no such policy file"


def test_a_folder_is_not_a_policy_file(tmp_path) -> None:
    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path)
    assert str(raised.value) == f"{tmp_path}: is a folder, not a policy file"


def test_a_binary_file_is_not_a_policy_file(tmp_path) -> None:
    (tmp_path / "p.yaml").write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(PolicyError, match=r"p\.yaml: not a text file \(not UTF-8\)$"):
        load_policy(tmp_path / "p.yaml")


def test_exponent_numbers_are_numbers(policy_file) -> None:
    # PyYAML follows YAML 1.1, where 1e-3 is a string; people write it anyway.
    policy = policy_file("version: 1\ndeployment_readiness:\n  max_quantization_error: 1e-3\n")
    assert policy.deployment_readiness.max_quantization_error == 0.001
    Path("m.yaml").write_text("loss: 2.5E+1\nname: 1e3x\n")
    assert load_metrics("m.yaml") == {"loss": 25.0, "name": "1e3x"}


def test_the_guide_examples_are_what_diffai_does(policy_file) -> None:
    _example, functional, default, _modeline = guide_blocks("yaml")
    assert policy_file(default) == policy_file("version: 1\n")
    run = policy_file(functional).regression_test.functional
    assert run.inputs["sr"].value == 16000 and run.overrides[0].rules.severity == "warning"
    messages = {str(p.values[1]) for p in POLICY_ERRORS} | {"policy.yaml: no such policy file"}
    block = re.search(r"```\n(policy\.yaml:.+?)```", GUIDE.read_text(), re.S).group(1)
    shown = block.splitlines()
    assert len(shown) > 10
    assert set(shown) <= messages


def test_the_guide_documents_every_key() -> None:
    guide = GUIDE.read_text()
    keys = {key for schema in schemas(policy_schema()) for key in schema.get("properties", {})}
    assert {key for key in keys if f"`{key}`" not in guide} == set()


def alias_bomb(levels: int) -> str:
    lines = [
        "version: 1",
        'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join([*lines, "regression_test:", f"  ignore: *l{levels - 1}", ""])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(alias_bomb(9),
                     "policy.yaml: YAML aliases expand the file beyond 100,000 values",
                     id="billion-laughs"),
        pytest.param("version: 1\nregression_test: &r\n  x: *r\n",
                     "policy.yaml: YAML aliases expand the file beyond 100,000 values", id="cycle"),
        pytest.param("version: 1\nx: " + "[" * 600 + "]" * 600 + "\n",
                     "policy.yaml: nested too deeply to be a policy or metrics file", id="deep"),
    ],
)  # fmt: skip
def test_hostile_yaml_is_refused_quickly(policy_file, text, message) -> None:
    with pytest.raises(PolicyError) as raised:
        policy_file(text)
    assert str(raised.value) == message


def test_anchors_and_merge_keys_still_work(policy_file) -> None:
    policy = policy_file("""\
        version: 1
        regression_test:
          overrides:
            - &head {match: "head.*", severity: warning, max_relative_change: 0.5}
            - {<<: *head, match: "classifier.*"}
    """)  # fmt: skip
    assert [o.rules.severity for o in policy.regression_test.overrides] == ["warning", "warning"]
