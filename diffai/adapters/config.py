"""``adapter_config.json``, read strictly: what PEFT needs to turn lora_A and lora_B into ΔW.

Only the keys that decide the effective update are interpreted (``KEYS``); every
one of them is type-checked, and a feature that would change ΔW's formula in a
way diffai does not compute (DoRA, LoRA biases, layer replication ...) is refused
by name (``UNSUPPORTED``) rather than compared wrongly. Other keys (PEFT adds some
in every release) are kept for the report, not judged.

``rank_pattern``/``alpha_pattern`` keys are regular expressions in PEFT
(``re.match(rf"(.*\\.)?({key})$", module)``); diffai evaluates them only when they
use no syntax beyond letters, digits, ``_``, ``-`` and ``.`` (any character), so a
hostile pattern cannot make the match take exponential time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffai.errors import MalformedModel
from diffai.formats.strictjson import DuplicateKey, InvalidJson, loads_strict

MAX_CONFIG_BYTES = 1 << 20
#: Real adapters use ranks up to a few hundred; two r x r float64 Gram matrices of this
#: rank take 256 MiB, the most one module's closed form may hold.
MAX_RANK = 4096
SAFE_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,256}")

#: Config switches that change ΔW beyond B·A·scale: refused while set.
UNSUPPORTED = {
    "use_dora": "DoRA adapters (use_dora) rescale the merged weight by a magnitude vector",
    "lora_bias": "LoRA biases (lora_bias) add a bias update",
    "layer_replication": "layer_replication changes the base model's layers",
    "target_parameters": "target_parameters adapts parameters, not modules",
    "use_qalora": "QALoRA (use_qalora) pools the input before lora_A",
    "trainable_token_indices": "trainable_token_indices adds token embeddings",
}


@dataclass(frozen=True)
class AdapterConfig:
    path: str
    r: int
    lora_alpha: float
    use_rslora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    base_model: str | None = None

    def rank_and_alpha(self, module: str) -> tuple[int, float]:
        """PEFT's per-module rank and alpha: the first matching pattern key wins."""
        rank = _pattern_value(self.rank_pattern, module, self.r)
        return rank, _pattern_value(self.alpha_pattern, module, self.lora_alpha)

    def targets(self, module: str) -> bool:
        """PEFT's rule for a list: the name, or a dotted suffix of it. A string is a regular
        expression (or ``all-linear``) that diffai does not evaluate: it counts as a match."""
        if not isinstance(self.target_modules, list):
            return True
        return any(module == t or module.endswith(f".{t}") for t in self.target_modules)

    def scale(self, rank: int, alpha: float) -> float:
        """alpha/r, or alpha/√r with rank-stabilised LoRA."""
        return alpha / (math.sqrt(rank) if self.use_rslora else rank)

    def summary(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "use_rslora": self.use_rslora,
            "fan_in_fan_out": self.fan_in_fan_out,
            "rank_pattern": self.rank_pattern,
            "alpha_pattern": self.alpha_pattern,
            "target_modules": self.target_modules,
            "modules_to_save": self.modules_to_save,
            "base_model_name_or_path": self.base_model,
        }


def _pattern_value(pattern: dict[str, Any], module: str, default: Any) -> Any:
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_config(path: Path) -> AdapterConfig:
    document = _document(path)
    for key, problem in UNSUPPORTED.items():
        if document.get(key) not in (None, False, [], {}):
            raise MalformedModel(path, f"key {key!r}: {problem}, which diffai does not compute")
    values = {name: _checked(path, document, name, spec) for name, spec in KEYS.items()}
    return AdapterConfig(path=str(path), **values)


def _document(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise MalformedModel(path, f"is {size:,} bytes, over the 1 MiB limit of an adapter config")
    try:
        document = loads_strict(path.read_bytes())
    except (UnicodeDecodeError, InvalidJson) as exc:
        raise MalformedModel(path, f"is not valid JSON: {exc}") from exc
    except DuplicateKey as exc:
        raise MalformedModel(path, f"repeats the key {exc.key!r}") from exc
    if not isinstance(document, dict):
        raise MalformedModel(path, "is not a JSON object")
    if document.get("peft_type") != "LORA":
        raise MalformedModel(
            path,
            f"key 'peft_type': {document.get('peft_type')!r:.40} is not 'LORA', the only "
            "PEFT adapter type diffai reads",
        )
    return document


# --- the schema: one checker per key ---------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _rank(value: Any) -> bool:
    return _is_int(value) and 1 <= value <= MAX_RANK


def _alpha(value: Any) -> bool:
    return _is_number(value) and value != 0 and abs(value) < 1e12


def _pattern_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def valid(value: Any) -> bool:
        return isinstance(value, dict) and all(
            SAFE_PATTERN.fullmatch(k) and check(v) for k, v in value.items()
        )

    return valid


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _target(value: Any) -> bool:
    return value is None or isinstance(value, str) or _names(value)


@dataclass(frozen=True)
class _Key:
    json_key: str
    valid: Callable[[Any], bool]
    expected: str
    default: Any = None
    required: bool = False


RANKS = f"an integer from 1 to {MAX_RANK}"
PATTERN = "an object whose keys use only letters, digits, '_', '-' and '.'"
KEYS: dict[str, _Key] = {
    "r": _Key("r", _rank, RANKS, required=True),
    "lora_alpha": _Key("lora_alpha", _alpha, "a finite non-zero number", required=True),
    "use_rslora": _Key("use_rslora", lambda v: isinstance(v, bool), "true or false", False),
    "fan_in_fan_out": _Key("fan_in_fan_out", lambda v: isinstance(v, bool), "true or false", False),
    "rank_pattern": _Key("rank_pattern", _pattern_of(_rank), f"{PATTERN} and values {RANKS}", {}),
    "alpha_pattern": _Key("alpha_pattern", _pattern_of(_alpha), f"{PATTERN} and numbers", {}),
    "target_modules": _Key("target_modules", _target, "a list of module names or a regex"),
    "modules_to_save": _Key(
        "modules_to_save", lambda v: v is None or _names(v), "a list of module names"
    ),
    "base_model": _Key(
        "base_model_name_or_path", lambda v: v is None or isinstance(v, str), "a string"
    ),
}


def _checked(path: Path, document: dict[str, Any], name: str, spec: _Key) -> Any:
    if spec.json_key not in document or document[spec.json_key] is None:
        if spec.required:
            raise MalformedModel(path, f"key {spec.json_key!r} is missing")
        return spec.default
    value = document[spec.json_key]
    if not spec.valid(value):
        raise MalformedModel(
            path, f"key {spec.json_key!r} must be {spec.expected}, got {_shown(value)}"
        )
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
