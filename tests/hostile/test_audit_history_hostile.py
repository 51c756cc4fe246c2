"""The audit issue's hidden history block, as someone with write access could leave it.

Each file in ``audit_history/`` is an issue body whose block diffai did not write:
malformed JSON, keys and types it never writes, numbers JSON forbids, links off the
repository's runs, names that would break a log line, a block too big or too deep. Each
must be refused as a whole with a reason (the caller then starts a fresh history with a
warning), within the size bound and without a crash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diffai.ci.history import BadHistory, decode_block

CASES = sorted((Path(__file__).parent / "audit_history").glob("*.md"))
RUN_URL_PREFIX = "https://github.com/octo/models/actions/runs/"


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_a_block_diffai_did_not_write_is_refused_with_a_reason(case: Path) -> None:
    with pytest.raises(BadHistory) as refused:
        decode_block(case.read_text(encoding="utf-8"), RUN_URL_PREFIX)
    assert str(refused.value) and "\n" not in str(refused.value)
