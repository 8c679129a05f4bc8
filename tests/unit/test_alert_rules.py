"""docs/alerts/finpass.rules.yml is a valid Prometheus rules file (issue "Running it"): the
Prometheus rule-file structure, every expression parsed by an independent PromQL parser
(promql-parser, GreptimeDB's Rust implementation), and every `finpass_*` series it names is
one the consumer exposes."""

from __future__ import annotations

import re
from typing import Any

import promql_parser
import pytest
import yaml

from finpass_pipeline.metrics import ConsumerMetrics
from tests.support import REPO_ROOT

RULES = REPO_ROOT / "docs" / "alerts" / "finpass.rules.yml"
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
REQUIRED = {"FinpassConsumerDown", "FinpassConsumerLagHigh", "FinpassParkedTooLong",
            "FinpassDeadLetterRate", "FinpassTransientRetries"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text("utf-8"))
    assert set(doc) == {"groups"}
    out: list[dict[str, Any]] = []
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        out.extend(group["rules"])
    return out


def exposed_series() -> set[str]:
    """Every sample name the consumer's registry can expose (with _bucket, _count, ...)."""
    names: set[str] = set()
    for family in ConsumerMetrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names


def test_the_rules_cover_what_operators_must_hear_about() -> None:
    assert {r["alert"] for r in rules()} >= REQUIRED


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_each_rule_is_well_formed_and_parses(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
    assert DURATION.match(rule["for"])
    assert rule["labels"]["severity"] in {"page", "warning"}
    assert rule["annotations"]["summary"]
    promql_parser.parse(rule["expr"])  # raises ValueError on a syntax error


def test_every_series_named_exists() -> None:
    exposed = exposed_series()
    named = {n for r in rules() for n in re.findall(r"\bfinpass_[a-z_]+", r["expr"])}
    assert named and named <= exposed, named - exposed


def test_the_parser_refuses_a_broken_expression() -> None:
    """The check above can fail: a missing bracket is a parse error."""
    with pytest.raises(ValueError, match="brackets"):
        promql_parser.parse("rate(finpass_events_dead_lettered_total[5m")
