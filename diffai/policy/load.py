"""Reading policy and metrics files: every problem becomes one ``PolicyError`` line.

A policy error reads ``policy.yaml:4: regression_test.max_relativ_change: unknown
key, did you mean max_relative_change?``: the file as given, the line, the key
path, the problem. Lines come from the YAML node tree, which the same single
parse also turns into Python values.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from diffai.errors import PolicyError
from diffai.policy.metrics import MetricsFile
from diffai.policy.model import Policy, build_policy
from diffai.policy.schema import KeyPath, Problem, format_path, schema_problems, shown
from diffai.text import one_line


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a number like YAML 1.2 (1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


#: A policy is a few hundred bytes and a YAML metrics file a few kilobytes; the pure-Python
#: YAML parser takes up to 50 seconds a megabyte. JSON metrics (evaluation harness results
#: with their configs) run larger, and parse a thousand times faster.
MAX_YAML_BYTES = 64 << 10
MAX_JSON_BYTES = 16 << 20
#: A policy holds dozens of values; far more can only come from aliases nested in aliases
#: (a "billion laughs"), which schema validation would expand and its messages print.
MAX_VALUES = 100_000


@dataclass(frozen=True)
class Lines:
    """Where a key and its value start in the file (1-based)."""

    key: int
    value: int


def load_policy(path: str | Path) -> Policy:
    """The policy in a YAML file, checked against the shipped schema."""
    source = str(path)
    lines, document = parse_yaml_mapping(source, "policy", "policy keys")
    _raise_first_problem(source, lines, document)
    return build_policy(document, source)


def parse_yaml_mapping(source: str, what: str, keys: str) -> tuple[_LineMap, dict[str, Any]]:
    """A YAML configuration file (a policy, a name map): a mapping of ``keys`` at the top."""
    lines, document = _parse_yaml(source, _read_text(source, what, MAX_YAML_BYTES))
    if lines is None:
        raise PolicyError(f'{source}: the {what} file is empty; start it with "version: 1"')
    if not isinstance(document, dict):
        raise PolicyError(
            f"{source}:{lines.root_line}: expected a mapping of {keys} at the top level, "
            f"got {shown(document)}"
        )
    return lines, document


def load_metrics(path: str | Path) -> MetricsFile:
    """The evaluation metrics in a JSON or YAML file, as a mapping that remembers its file."""
    source = str(path)
    is_json = source.endswith(".json")
    text = _read_text(source, "metrics", MAX_JSON_BYTES if is_json else MAX_YAML_BYTES)
    values = _parse_json(source, text) if is_json else _parse_yaml_metrics(source, text)
    if values is None:
        raise PolicyError(f"{source}: the metrics file is empty")
    if not isinstance(values, dict):
        raise PolicyError(
            f"{source}: expected a mapping of metric names to values, got {shown(values)}"
        )
    return MetricsFile(values, source=source)


def _parse_yaml_metrics(source: str, text: str) -> Any:
    """The values, refusing a repeated key: the loader keeps the last, so the file would
    say two things and the gate silently believe one."""
    lines, values = _parse_yaml(source, text)
    if lines is not None and lines.duplicates:
        raise _problem_error(source, lines, lines.duplicates[0])
    return values


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values the node tree holds once every alias is expanded (a cycle: too many)."""
    if id(node) not in sizes:
        sizes[id(node)] = MAX_VALUES + 1  # until measured, so a cycle reads as too big
        children = node.value if isinstance(node, yaml.CollectionNode) else []
        flat = [n for child in children for n in (child if isinstance(child, tuple) else (child,))]
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in flat)
    return sizes[id(node)]


def _read_text(source: str, what: str, limit: int) -> str:
    """The file's text; never more than ``limit`` bytes read, never a FIFO or device opened.

    A policy can come from the pull request's own tree, where a symlink to
    ``/dev/zero`` would otherwise be read until memory runs out.
    """
    try:
        _check_regular_file(source, what)
        with open(source, "rb") as handle:
            raw = handle.read(limit + 1)
        if len(raw) > limit:
            raise PolicyError(f"{source}: over {limit:,} bytes, too big for a {what} file")
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise PolicyError(f"{source}: no such {what} file") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{source}: not a text file (not UTF-8)") from None
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read: {exc.strerror or exc}") from exc


def _check_regular_file(source: str, what: str) -> None:
    mode = os.stat(source).st_mode
    if stat.S_ISDIR(mode):
        raise PolicyError(f"{source}: is a folder, not a {what} file")
    if not stat.S_ISREG(mode):
        raise PolicyError(f"{source}: not a regular file (a FIFO or a device?)")


def _parse_yaml(source: str, text: str) -> tuple[_LineMap | None, Any]:
    """The lines of every key (read before construction resolves merge keys) and the values."""
    loader = _loader(source, text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        if _expanded_size(node, {}) > MAX_VALUES:
            raise PolicyError(
                f"{source}: YAML aliases expand the file beyond {MAX_VALUES:,} values"
            )
        lines = _LineMap(node)
        return lines, loader.construct_document(node)
    except RecursionError:
        raise PolicyError(f"{source}: nested too deeply to be a policy or metrics file") from None
    except (ValueError, OverflowError) as exc:  # a 5,000-digit number, a 13th month ...
        raise PolicyError(f"{source}: invalid YAML value: {_first_line(exc)}") from exc
    except yaml.MarkedYAMLError as exc:
        line = f":{exc.problem_mark.line + 1}" if exc.problem_mark else ""
        problem = f"{exc.context}, {exc.problem}" if exc.context else exc.problem
        raise PolicyError(f"{source}{line}: invalid YAML: {problem}") from exc
    finally:
        loader.dispose()


def _loader(source: str, text: str) -> _Loader:
    """The loader refuses a NUL or other control character before it parses anything."""
    try:
        return _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        problem = f"unacceptable character #x{exc.character:04x} ({exc.reason})"
        raise PolicyError(f"{source}:{line}: invalid YAML: {problem}") from exc


def _parse_json(source: str, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(source, pairs))
    except RecursionError:
        raise PolicyError(f"{source}: nested too deeply to be a metrics file") from None
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except ValueError as exc:  # int() refuses numbers of over 4,300 digits
        raise PolicyError(f"{source}: invalid JSON value: {_first_line(exc)}") from exc


def _unique_keys(source: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object, refusing a repeated key (``json`` keeps the last one silently)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise PolicyError(f"{source}: duplicate key {one_line(repr(key))} in the metrics file")
        seen.add(key)
    return dict(pairs)


def _first_line(exc: Exception) -> str:
    """Python's own message up to its advice (``use sys.set_int_max_str_digits() ...``)."""
    return str(exc).split(";")[0].splitlines()[0] if str(exc) else type(exc).__name__


def _raise_first_problem(
    source: str, lines: _LineMap, document: dict[str, Any], problems: list[Problem] | None = None
) -> None:
    """Raise the problem nearest the top of the file, so fixing them in order works.

    Missing keys come last: a misspelt key is reported as unknown *and* as
    missing, and the unknown key is the one that says what to fix.
    """
    problems = lines.duplicates + (schema_problems(document) if problems is None else problems)
    if problems:
        first = min(problems, key=lambda p: (p.absent, lines.line_of(p)))
        raise _problem_error(source, lines, first)


def _problem_error(source: str, lines: _LineMap, problem: Problem) -> PolicyError:
    """``policy.yaml:4: regression_test.max_relativ_change: unknown key, ...``"""
    path = format_path(problem.path)
    return PolicyError(f"{source}:{lines.line_of(problem)}: {path}: {problem.text}")


class _LineMap:
    """The lines of every key path in a YAML node tree, and its duplicate keys."""

    def __init__(self, root: yaml.Node) -> None:
        line = root.start_mark.line + 1
        self.lines: dict[KeyPath, Lines] = {(): Lines(line, line)}
        self.duplicates: list[Problem] = []
        self._seen: set[int] = set()  # an alias is walked once: no cycles, no alias bombs
        self._walk(root, ())

    @property
    def root_line(self) -> int:
        return self.lines[()].value

    def line_of(self, problem: Problem) -> int:
        """The problem's own line, else (a missing key) the line of the nearest enclosing key."""
        path = problem.path
        if path in self.lines:
            found = self.lines[path]
            return found.key if problem.at_key else found.value
        while path not in self.lines:
            path = path[:-1]
        return self.lines[path].value

    def _walk(self, node: yaml.Node, path: KeyPath) -> None:
        if id(node) in self._seen:
            return
        self._seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                line = item.start_mark.line + 1
                self.lines[(*path, index)] = Lines(line, line)
                self._walk(item, (*path, index))
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                self._entry(key_node, value_node, (*path, str(key_node.value)))

    def _entry(self, key_node: yaml.Node, value_node: yaml.Node, path: KeyPath) -> None:
        if path in self.lines:
            text = f"duplicate key (first at line {self.lines[path].key})"
            self.duplicates.append(Problem(path, text, at_key=True))
        self.lines[path] = Lines(key_node.start_mark.line + 1, value_node.start_mark.line + 1)
        self._walk(value_node, path)
