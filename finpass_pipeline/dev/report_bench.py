"""`finpass-pipeline report-bench`: latency and plan of every analyst report on the current data.

Each case runs one report with representative parameters (taken from the data: a real DID
prefix, email, user_id_hash and correlation_id) once to warm up, then `--runs` times, timed on
the client (query, transfer and decoding). It prints p50/p95 against the goal of the report's
kind (lookup p95 <= 50 ms, aggregate p95 <= 500 ms) and the EXPLAIN ANALYZE of the query: its top
plan node, the indexes it used and every sequential scan of a big table (users, credentials,
payments, audit_events and its partitions) with the number of rows that scan actually read. A
SECURITY DEFINER function is not inlined, so its body is explained instead, with the generic plan
it actually runs with; one called inside a report (ip_bursts_between in audit-suspicious) has its
body's generic plan added, unexecuted. An audit partition's index is named by its parent index.
It ends with which reports use each index, and the indexes of the big tables none uses: every
index beyond the seed's must serve a report or a statement of the pipeline (docs/indexes.md).
Load data first with `finpass-pipeline datagen`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from finpass_pipeline.analyst.definitions import (
    AGGREGATE_GOAL_MS,
    BY_NAME,
    LOOKUP_GOAL_MS,
    REPORTS,
    Report,
    resolve,
)
from finpass_pipeline.analyst.reports import connect, fetch
from finpass_pipeline.errors import FinpassError
from finpass_pipeline.settings import Settings

BIG_TABLES = frozenset({"users", "credentials", "credential_status", "payments", "audit_events"})

# (report, label, options); {placeholders} come from _samples().
CASES: list[tuple[str, str, dict[str, str]]] = [
    ("users-kyc-verified", "last 30 days", {}),
    ("users-inactive", "since 90 days", {}),
    ("users-search", "exact pseudonym", {"query": "{user_hash}"}),
    ("users-search", "pseudonym prefix", {"query": "{hash_prefix}"}),
    ("users-stats", "", {}),
    ("credentials-expired", "", {}),
    ("credentials-expiring", "30 days", {}),
    ("credentials-renewal", "30 days / 365 days", {}),
    ("credentials-stats", "", {}),
    ("payments-attention", "24 h / 24 h", {}),
    ("payments-analytics", "last 30 days", {}),
    ("payments-analytics", "last 365 days", {"from": "-365d"}),
    ("payments-captured", "last 30 days", {}),
    ("payments-captured", "last 365 days", {"from": "-365d"}),
    ("payments-high-value", ">= 10000, last 30 days", {}),
    ("audit-suspicious", "last 24 h", {}),
    ("audit-suspicious", "last 7 days", {"from": "-7d"}),
    ("audit-compliance", "last 30 days", {}),
    ("audit-compliance", "last 365 days", {"from": "-365d"}),
    ("audit-user-timeline", "busy user", {"user_hash": "{user_hash}"}),
    ("audit-correlation-trail", "payment checkout", {"correlation_id": "{correlation_id}"}),
]


@dataclass
class CaseResult:
    report: str
    label: str
    kind: str
    rows: int
    p50_ms: float
    p95_ms: float
    goal_ms: float
    top_node: str
    indexes: list[str]
    big_seq_scans: list[str]
    nested: list[str] = field(default_factory=list)
    """SECURITY DEFINER functions called inside the report whose bodies were explained too."""

    @property
    def ok(self) -> bool:
        return self.p95_ms <= self.goal_ms


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 20 runs is the 19th fastest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def _samples(conn: asyncpg.Connection) -> dict[str, str]:
    """Representative lookup keys, taken from the data itself."""
    user_hash = await conn.fetchval(
        "SELECT user_id_hash FROM audit_events WHERE created_at > now() - interval '1 day'"
        " AND user_id_hash IS NOT NULL ORDER BY created_at DESC LIMIT 1")
    correlation = await conn.fetchval(
        "SELECT correlation_id FROM audit_events WHERE created_at > now() - interval '2 days'"
        " AND event_type = 'PAYMENT_CAPTURED' ORDER BY created_at DESC LIMIT 1")
    if user_hash is None or correlation is None:
        raise RuntimeError("no data to benchmark: load some with `finpass-pipeline datagen`")
    return {"user_hash": str(user_hash), "hash_prefix": str(user_hash)[:10],
            "correlation_id": str(correlation)}


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node]
    for child in node.get("Plans", []):
        found.extend(_walk(child))
    return found


_PARTITION = re.compile(r"^(audit_events)_y\d{4}m\d{2}(.*)$")


def _base(name: str) -> str:
    """A monthly audit partition (or its index) under its parent's name: `audit_events_*...`."""
    match = _PARTITION.match(name)
    return f"{match[1]}_*{match[2]}" if match else name


_WRAPPERS = ("Limit", "Sort", "Incremental Sort", "Result", "Subquery Scan")


def _summary(plan: dict[str, Any], parents: Mapping[str, str] | None = None
             ) -> tuple[str, list[str], list[str]]:
    """The first node below Limit/Sort/Subquery wrappers (InitPlans skipped), the indexes used,
    and every sequential scan of a big table with the rows it actually read. `parents` names a
    partition's index by its parent index (`_parents`); others keep the `audit_events_*` form."""
    parents = parents or {}

    def index(name: str) -> str:
        return parents.get(name) or _base(name)

    top = plan
    while top["Node Type"] in _WRAPPERS:
        children = [c for c in top.get("Plans", [])
                    if c.get("Parent Relationship") not in ("InitPlan", "SubPlan")]
        if not children:
            break
        top = children[0]
    label = top["Node Type"]
    if top.get("Index Name"):
        label += f" using {index(top['Index Name'])}"
    elif top.get("Relation Name"):
        label += f" on {_base(top['Relation Name'])}"
    nodes = _walk(plan)
    indexes = sorted({index(n["Index Name"]) for n in nodes if n.get("Index Name")})
    read: dict[str, int] = {}
    for n in nodes:
        name = _base(n.get("Relation Name", ""))
        if n["Node Type"] == "Seq Scan" and name.split("_*")[0] in BIG_TABLES:
            rows = (n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * max(
                1, n.get("Actual Loops", 1))
            read[name] = read.get(name, 0) + int(rows)
    seq = [f"{name} ({rows} rows read)" for name, rows in sorted(read.items())]
    return label, indexes, seq


async def _parents(conn: asyncpg.Connection) -> dict[str, str]:
    """Partition index -> the partitioned table's index it belongs to (audit_events: the
    partitions' index names are generated, e.g. `..._created_at_idx1`, and say nothing)."""
    rows = await conn.fetch(
        "SELECT c.relname AS child, p.relname AS parent FROM pg_inherits AS h"
        " JOIN pg_class AS c ON c.oid = h.inhrelid JOIN pg_class AS p ON p.oid = h.inhparent"
        " WHERE c.relkind = 'i'")
    return {r["child"]: r["parent"] for r in rows}


async def _explain_body(conn: asyncpg.Connection, function: str, args: list[Any] | None
                        ) -> dict[str, Any]:
    """The plan of analyst.`function`'s body, generic as it runs; executed with `args`, or
    only planned when `args` is None (a call inside a report: its arguments are expressions)."""
    body, arg_names, arg_types = await conn.fetchrow(
        "SELECT prosrc, proargnames[1:pronargs],"
        " ARRAY(SELECT format_type(t, NULL) FROM unnest(proargtypes) AS t)"
        " FROM pg_proc WHERE oid = $1::regproc", f"analyst.{function}")
    for i, arg in enumerate(arg_names, start=1):
        body = re.sub(rf"\b{arg}\b", f"${i}", body)
    await conn.execute(f"PREPARE _bench_body({', '.join(arg_types)}) AS {body}")
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        if args is None:
            # NULL arguments would let executor start-up prune every partition from the plan.
            await conn.execute("SET enable_partition_pruning = off")
        values = args if args is not None else [None] * len(arg_types)
        literals = ", ".join("NULL" if a is None else f"'{a}'" for a in values)
        options = "ANALYZE, FORMAT JSON" if args is not None else "FORMAT JSON"
        raw = await conn.fetchval(f"EXPLAIN ({options}) EXECUTE _bench_body({literals})")
    finally:
        await conn.execute("RESET enable_partition_pruning")
        await conn.execute("RESET plan_cache_mode")
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        await conn.execute("DEALLOCATE _bench_body")
    body_plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return body_plan


async def _explain(conn: asyncpg.Connection, report: Report, args: list[Any]
                   ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The report's plan, and the plans of the SECURITY DEFINER functions it calls inside."""
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {report.sql}", *args)
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    if plan["Node Type"] == "Function Scan":
        # Not inlined (SECURITY DEFINER): explain the body with the generic plan it runs with.
        name = re.search(r"analyst\.(\w+)\(", report.sql)
        assert name is not None  # noqa: S101  (every report calls one analyst function)
        return await _explain_body(conn, name[1], args), {}
    definers = {r["proname"] for r in await conn.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = 'analyst'::regnamespace"
        " AND prosecdef")}
    called = sorted({n["Function Name"] for n in _walk(plan)
                     if n["Node Type"] == "Function Scan" and n.get("Function Name") in definers})
    return plan, {f: await _explain_body(conn, f, None) for f in called}


async def _big_table_indexes(conn: asyncpg.Connection) -> dict[str, str]:
    """Every index of the big tables (a partitioned table's own, not its partitions') -> table."""
    rows = await conn.fetch(
        "SELECT c.relname AS index, t.relname AS table FROM pg_index AS i"
        " JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_class AS t ON t.oid = i.indrelid"
        " WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY($1::text[])",
        sorted(BIG_TABLES))
    return {r["index"]: r["table"] for r in rows}


def index_reports(results: list[CaseResult]) -> dict[str, list[str]]:
    """Index -> the reports whose plans use it, both sorted by name."""
    found: dict[str, set[str]] = {}
    for r in results:
        for name in r.indexes:
            found.setdefault(name, set()).add(r.report)
    return {name: sorted(found[name]) for name in sorted(found)}


def _usage(results: list[CaseResult], indexes: Mapping[str, str]) -> str:
    """The index -> reports summary, and the big tables' indexes no report used (Markdown)."""
    used = index_reports(results)
    lines = ["| index | reports whose plan uses it |", "|---|---|"]
    lines += [f"| {name} | {', '.join(reports)} |" for name, reports in used.items()]
    unused = sorted((t, i) for i, t in indexes.items() if i not in used)
    lines.append("")
    lines.append("Indexes of " + ", ".join(sorted(BIG_TABLES)) + " no report used: "
                 + (", ".join(f"{i} ({t})" for t, i in unused) or "none") + ".")
    return "\n".join(lines)


async def bench(dsn: str, runs: int
                ) -> tuple[dict[str, int], list[CaseResult], dict[str, str]]:
    """Every case of CASES, `runs` times each; also the row count of each big table and every
    index of the big tables (index -> table)."""
    conn = await connect(dsn)
    try:
        samples = await _samples(conn)
        parents = await _parents(conn)
        counts = {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}"))
                  for t in ("users", "credentials", "payments", "audit_events")}
        results = []
        for name, label, options in CASES:
            report = BY_NAME[name]
            given: dict[str, str | None] = {k: v.format(**samples) for k, v in options.items()}
            args = resolve(report, given, datetime.now(UTC))
            _, rows = await fetch(conn, report, args)  # warm-up
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                _, rows = await fetch(conn, report, args)
                timings.append((time.perf_counter() - started) * 1000)
            plan, nested = await _explain(conn, report, args)
            top, indexes, seq = _summary(plan, parents)
            for function, body in nested.items():
                _, more, more_seq = _summary(body, parents)
                indexes = sorted({*indexes, *more})
                seq += [f"{s.split(' (')[0]} (in {function}, planned)" for s in more_seq]
            goal = LOOKUP_GOAL_MS if report.kind == "lookup" else AGGREGATE_GOAL_MS
            results.append(CaseResult(name, label, report.kind, len(rows),
                                      percentile(timings, 0.5), percentile(timings, 0.95),
                                      goal, top, indexes, seq, sorted(nested)))
        return counts, results, await _big_table_indexes(conn)
    finally:
        await conn.close()


def _markdown(results: list[CaseResult]) -> str:
    lines = ["| report | case | kind | rows | p50 ms | p95 ms | goal | plan: top node "
             "| indexes used | seq scans of big tables (rows read) |",
             "|---|---|---|--:|--:|--:|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r.report} | {r.label} | {r.kind} | {r.rows} | {r.p50_ms:.1f} | {r.p95_ms:.1f} "
            f"| {'ok' if r.ok else 'MISSED'} ≤ {r.goal_ms:.0f} "
            f"| {r.top_node}{''.join(f' + {f}' for f in r.nested)} "
            f"| {', '.join(r.indexes) or '-'} | {', '.join(r.big_seq_scans) or 'none'} |")
    return "\n".join(lines)


def run_cli(args: Any, settings: Settings) -> int:
    """`finpass-pipeline report-bench`: prints a table (and a Markdown copy); 1 if a goal fails."""
    from rich.console import Console
    from rich.table import Table

    try:
        counts, results, indexes = asyncio.run(bench(settings.database_url, args.runs))
    except (OSError, asyncpg.PostgresError, RuntimeError) as e:
        raise FinpassError(f"report-bench failed: {e}") from e
    table = Table(title=f"analyst reports, {args.runs} runs each (client-side wall time)")
    for col in ("report", "case", "kind", "rows", "p50 ms", "p95 ms", "goal", "plan",
                "indexes used", "big seq scan"):
        table.add_column(col, justify="right" if "ms" in col or col == "rows" else "left")
    for r in results:
        table.add_row(r.report, r.label, r.kind, str(r.rows), f"{r.p50_ms:.1f}",
                      f"{r.p95_ms:.1f}",
                      f"[green]ok[/green] ≤{r.goal_ms:.0f}" if r.ok
                      else f"[red]MISSED[/red] ≤{r.goal_ms:.0f}",
                      r.top_node + "".join(f" + {f}" for f in r.nested),
                      ", ".join(r.indexes) or "-",
                      ", ".join(r.big_seq_scans) or "-")
    console = Console(width=260)
    console.print("dataset: " + " · ".join(f"{t} {n:,}" for t, n in counts.items()))
    console.print(table)
    console.print(f"{len(REPORTS)} reports, {len(results)} cases; "
                  f"{sum(r.ok for r in results)} within goal")
    print("\n" + _markdown(results))
    print("\n" + _usage(results, indexes))
    return 0 if all(r.ok for r in results) else 1
