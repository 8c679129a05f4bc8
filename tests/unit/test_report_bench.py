"""How `report-bench` names the indexes a plan uses, and its index -> reports summary."""

from __future__ import annotations

from typing import Any

from finpass_pipeline.dev.report_bench import CaseResult, _summary, _usage, index_reports


def _scan(index: str, relation: str) -> dict[str, Any]:
    return {"Node Type": "Index Scan", "Index Name": index, "Relation Name": relation}


def _case(report: str, indexes: list[str]) -> CaseResult:
    return CaseResult(report, "", "lookup", 0, 1.0, 1.0, 50.0, "Append", indexes, [])


def test_a_partitions_index_is_named_by_its_parent_index() -> None:
    # Partition index names are generated: two created_at indexes are ..._idx and ..._idx1.
    plan = {"Node Type": "Append", "Plans": [
        _scan("audit_events_y2026m11_created_at_idx1", "audit_events_y2026m11"),
        _scan("audit_events_y2026m12_created_at_idx1", "audit_events_y2026m12"),
        _scan("idx_payments_amount", "payments")]}
    parents = {"audit_events_y2026m11_created_at_idx1": "idx_audit_events_unchained",
               "audit_events_y2026m12_created_at_idx1": "idx_audit_events_unchained"}
    assert _summary(plan, parents)[1] == ["idx_audit_events_unchained", "idx_payments_amount"]
    # Without the catalog's answer, only the partition is generalised.
    assert _summary(plan)[1] == ["audit_events_*_created_at_idx1", "idx_payments_amount"]


def test_index_reports_lists_each_report_once_and_the_unused_indexes() -> None:
    results = [_case("audit-suspicious", ["idx_a", "idx_b"]),
               _case("audit-suspicious", ["idx_a"]), _case("audit-compliance", ["idx_a"])]
    assert index_reports(results) == {"idx_a": ["audit-compliance", "audit-suspicious"],
                                      "idx_b": ["audit-suspicious"]}
    text = _usage(results, {"idx_a": "audit_events", "idx_b": "audit_events",
                            "idx_c": "payments"})
    assert "| idx_a | audit-compliance, audit-suspicious |" in text
    assert text.endswith("no report used: idx_c (payments).")
