"""JUnit XML for GitLab and test-report actions: one testcase per policy check.

A failed error check is a ``<failure>``; a failed warning passes with its
message in ``<system-out>`` (JUnit has no warnings); a skipped check is
``<skipped>``. ElementTree escapes the markup; control and invisible
characters from hostile tensor names are spelled out (``diffai.text.escaped``),
and so are the two that XML 1.0 cannot carry at all.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from diffai.renderers.outcome import all_checks
from diffai.text import escaped

_NOT_XML = re.compile("[\ufffe\uffff]")


def render_junit(document: dict[str, Any]) -> str:
    checks = all_checks(document)
    suite = ET.Element("testsuite", _suite_counts(checks))
    for check in checks:
        suite.append(_testcase(check))
    root = ET.Element("testsuites", {"name": "diffai"})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def _suite_counts(checks: list[dict[str, Any]]) -> dict[str, str]:
    failures = sum(1 for c in checks if c["status"] == "fail" and c["severity"] == "error")
    skipped = sum(1 for c in checks if c["status"] == "skip")
    return {"name": "diffai policy", "tests": str(len(checks)), "failures": str(failures),
            "errors": "0", "skipped": str(skipped)}  # fmt: skip


def _testcase(check: dict[str, Any]) -> ET.Element:
    scope, _, rule = check["rule"].rpartition(".")
    case = ET.Element(
        "testcase", {"classname": _xml(f"diffai.{scope or 'policy'}"), "name": _xml(rule)}
    )
    message = _xml(check["message"])
    if check["status"] == "skip":
        ET.SubElement(case, "skipped", {"message": message})
    elif check["status"] == "fail" and check["severity"] == "error":
        failure = ET.SubElement(case, "failure", {"message": message, "type": _xml(check["rule"])})
        failure.text = _details(check)
    elif check["status"] == "fail":
        ET.SubElement(case, "system-out").text = f"warning: {message}\n{_details(check)}"
    return case


def _details(check: dict[str, Any]) -> str:
    lines = [f"observed: {check.get('observed')}", f"threshold: {check.get('threshold')}"]
    lines += [f"tensor: {name}" for name in check.get("tensors", [])]
    lines += [f"output: {name}" for name in check.get("outputs", [])]
    return "\n".join(_xml(line) for line in lines)


def _xml(value: str) -> str:
    return _NOT_XML.sub(lambda m: f"\\u{ord(m[0]):04x}", escaped(value))
