"""`finpass-pipeline report` without a database: usage errors and `--list`. (The reports on a
known data set: tests/integration/test_reports.py.)"""

from __future__ import annotations

import pytest

from finpass_pipeline.analyst.definitions import REPORTS
from tests.support.pipeline_support import report_cli


@pytest.mark.parametrize(("argv", "message"), [
    (["payments-captured", "--from", "yesterday"], "--from: 'yesterday' is not a time"),
    (["payments-captured", "--from", "2026-01-01T00:00:00"], "has no UTC offset"),
    (["payments-captured", "--from", "-1d", "--to", "-2d"], "must be before --to"),
    (["payments-captured", "--currency", "eur"], "--currency: 'eur' is not a currency code"),
    (["payments-captured", "--days", "3"], "unrecognized arguments: --days 3"),
    (["credentials-expiring", "--days", "0"], "--days: must be at least 1"),
    (["audit-user-timeline"], "needs --user-hash"),
    (["audit-user-timeline", "--user-hash", "xyz"], "is not a user_id_hash"),
    (["no-such-report"], "no report named 'no-such-report'"),
    ([], "name a report"),
])
def test_cli_bad_parameters_exit_2_with_one_line(
        argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Usage errors are caught before connecting: exit 2, one line on stderr."""
    code, out, err = report_cli(capsys, monkeypatch, "postgresql://nobody@127.0.0.1:1/none", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


def test_cli_list_describes_every_report(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """report --list names each report, its kind and its options with defaults."""
    code, out, _ = report_cli(capsys, monkeypatch, "postgresql://nobody@127.0.0.1:1/none", "--list")
    assert code == 0
    for report in REPORTS:
        assert f"{report.name}  ({report.kind})" in out
    assert "--threshold DECIMAL: minimum amount (default 10000)" in out
