"""`finpass-pipeline prune --older-than`: the windows it accepts and the ones it refuses.
(Pruning a real database: tests/integration/test_prune.py.)"""

from __future__ import annotations

from datetime import timedelta

import pytest

from finpass_pipeline.prune import parse_window


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
    (" 7d ", timedelta(days=7)),
])
def test_window_parses(text: str, expected: timedelta) -> None:
    assert parse_window(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0d", "must be longer than zero"), ("30", "is not a duration"),
    ("-1d", "is not a duration"), ("1w", "is not a duration"), ("", "is not a duration"),
])
def test_bad_window_is_refused_with_the_accepted_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_window(text)
