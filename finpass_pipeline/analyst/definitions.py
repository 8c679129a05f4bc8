"""The analyst reports: name, description, SQL and typed parameters of each (one registry).

Every report is one call of a function in schema `analyst` (schema/V10__analyst_surface.sql),
so psql, BI tools and `finpass-pipeline report` all run the same SQL. Parameters are passed in
the order the SQL names them ($1, $2, ...). `kind` says which latency goal a report is held to
by `finpass-pipeline report-bench`: "lookup" (point/range lookups, p95 <= 50 ms) or "aggregate"
(p95 <= 500 ms).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

Kind = Literal["lookup", "aggregate"]
ParamType = Literal["timestamp", "int", "decimal", "text", "currency", "hash", "status"]

LOOKUP_GOAL_MS = 50.0
AGGREGATE_GOAL_MS = 500.0
USER_STATUSES = ("ACTIVE", "SUSPENDED", "TERMINATED")
RELATIVE_TIME = re.compile(r"^-(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class ParamError(ValueError):
    """A report parameter is missing or malformed; the message names the option."""


@dataclass(frozen=True)
class Param:
    """One report parameter: `--name` on the command line, one positional argument in SQL."""

    name: str
    type: ParamType
    help: str
    default: Any = None
    """A value, a callable of `now` returning one, or None (NULL: "no filter" / "all")."""
    required: bool = False
    minimum: int | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_value(self, now: datetime) -> Any:
        return self.default(now) if callable(self.default) else self.default

    def describe_default(self) -> str:
        if self.required:
            return "required"
        if isinstance(self.default, Relative):
            return f"default {self.default.text}"
        return "default: none" if self.default is None else f"default {self.default}"

    def parse(self, raw: str, now: datetime) -> Any:
        """The typed value of a command-line string; raises ParamError naming the option."""
        try:
            return _PARSERS[self.type](self, raw.strip(), now)
        except ParamError:
            raise
        except (ValueError, InvalidOperation) as e:
            raise ParamError(f"{self.option}: {e}") from None


@dataclass(frozen=True)
class Relative:
    """A default relative to the time the report runs: `Relative("-30d")`."""

    text: str

    def __call__(self, now: datetime) -> datetime:
        return parse_time(self.text, now)


@dataclass(frozen=True)
class Report:
    name: str
    description: str
    kind: Kind
    sql: str
    params: tuple[Param, ...]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def parse_time(text: str, now: datetime) -> datetime:
    """`now`, `-30d` / `-12h` / `-15m`, a date (UTC midnight) or an ISO 8601 time with offset."""
    if text == "now":
        return now
    rel = RELATIVE_TIME.match(text)
    if rel:
        return now - timedelta(**{_UNITS[rel[2]]: int(rel[1])})
    if len(text) == 10:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset (add Z or +01:00, or give a date)")
    return value


def _timestamp(p: Param, raw: str, now: datetime) -> datetime:
    try:
        return parse_time(raw, now)
    except ValueError as e:
        raise ParamError(f"{p.option}: {e}" if "offset" in str(e) else
                         f"{p.option}: {raw!r} is not a time (use 2026-01-31, "
                         "2026-01-31T12:00:00Z, now, -30d, -12h)") from None


def _int(p: Param, raw: str, now: datetime) -> int:
    if not re.fullmatch(r"\d{1,9}", raw):
        raise ParamError(f"{p.option}: {raw!r} is not a whole number >= 0")
    value = int(raw)
    if p.minimum is not None and value < p.minimum:
        raise ParamError(f"{p.option}: must be at least {p.minimum} (got {value})")
    return value


def _decimal(p: Param, raw: str, now: datetime) -> Decimal:
    value = Decimal(raw)
    if not value.is_finite() or value < 0:
        raise ParamError(f"{p.option}: {raw!r} is not an amount >= 0")
    return value


def _text(p: Param, raw: str, now: datetime) -> str:
    if not raw or len(raw) > 255:
        raise ParamError(f"{p.option}: must be 1 to 255 characters")
    return raw


def _currency(p: Param, raw: str, now: datetime) -> str:
    if not re.fullmatch(r"[A-Z]{3}", raw):
        raise ParamError(f"{p.option}: {raw!r} is not a currency code (three capitals, e.g. EUR)")
    return raw


def _hash(p: Param, raw: str, now: datetime) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", raw):
        raise ParamError(f"{p.option}: {raw!r} is not a user_id_hash (64 lower-case hex digits)")
    return raw


def _status(p: Param, raw: str, now: datetime) -> str:
    if raw not in USER_STATUSES:
        raise ParamError(f"{p.option}: {raw!r} is not one of {', '.join(USER_STATUSES)}")
    return raw


_PARSERS: dict[str, Callable[[Param, str, datetime], Any]] = {
    "timestamp": _timestamp, "int": _int, "decimal": _decimal, "text": _text,
    "currency": _currency, "hash": _hash, "status": _status,
}


def _from(default: str) -> Param:
    return Param("from", "timestamp", "start of the window (inclusive)", Relative(default))


TO = Param("to", "timestamp", "end of the window (exclusive)", Relative("now"))
CURRENCY = Param("currency", "currency", "only this currency (e.g. EUR)")


def _limit(default: int = 1000) -> Param:
    return Param("limit", "int", "at most this many rows (0: no limit)", default)


REPORTS: tuple[Report, ...] = (
    Report("users-kyc-verified", "Users whose KYC was verified in the window, oldest first.",
           "lookup", "SELECT * FROM analyst.users_kyc_verified($1, $2, $3)",
           (_from("-30d"), TO, _limit())),
    Report("users-inactive",
           "Users with no activity (last_seen, else registration) since --since, longest "
           "inactive first.", "lookup", "SELECT * FROM analyst.users_inactive($1, $2, $3)",
           (Param("since", "timestamp", "inactive since", Relative("-90d")),
            Param("status", "status", "only users in this status"), _limit())),
    Report("users-search",
           "Find users by pseudonym: a whole user_id_hash (exact) or a prefix of >= 8 hex "
           "digits. Analysts cannot look a person up by DID, email or phone.", "lookup",
           "SELECT * FROM analyst.search_users($1, $2)",
           (Param("query", "text", "user_id_hash or a prefix of it", required=True),
            _limit(50))),
    Report("users-stats",
           "Users per status and in total: KYC-verified count and rate, seen and registered "
           "in the last --active-days.", "aggregate",
           "SELECT * FROM analyst.user_statistics($1)",
           (Param("active_days", "int", "what 'recently' means, in days", 30, minimum=1),)),
    Report("credentials-expired",
           "Credentials past expires_at or marked EXPIRED, most recently expired first.",
           "lookup", "SELECT * FROM analyst.credentials_expired($1)", (_limit(),)),
    Report("credentials-expiring", "VALID credentials expiring within --days, soonest first.",
           "lookup", "SELECT * FROM analyst.credentials_expiring($1, $2)",
           (Param("days", "int", "horizon in days", 30, minimum=1), _limit())),
    Report("credentials-renewal",
           "VALID credentials expiring within --days (or already past expiry) or issued more "
           "than --max-age-days ago, by renew_by.", "lookup",
           "SELECT * FROM analyst.credentials_needing_renewal($1, $2, $3)",
           (Param("days", "int", "expiry horizon in days", 30, minimum=1),
            Param("max_age_days", "int", "maximum age in days", 365, minimum=1), _limit())),
    Report("credentials-stats", "Credentials by status, by type and by issuer.", "aggregate",
           "SELECT * FROM analyst.credential_statistics()", ()),
    Report("payments-attention",
           "PENDING/AUTHORIZED payments older than --stuck-hours (oldest first) and payments "
           "FAILED within --failed-hours (newest first).", "lookup",
           "SELECT * FROM analyst.payments_needing_attention($1, $2, $3)",
           (Param("stuck_hours", "int", "stuck after this many hours", 24, minimum=1),
            Param("failed_hours", "int", "failures within this many hours", 24, minimum=1),
            _limit())),
    Report("payments-analytics",
           "Payments created in the window per UTC day, status and currency: count, sum of "
           "amount and of total_amount.", "aggregate",
           "SELECT * FROM analyst.payment_analytics($1, $2, $3)",
           (_from("-30d"), TO, CURRENCY)),
    Report("payments-captured",
           "Captured payments (status CAPTURED) by captured_at in the window, per currency: "
           "count, amount, fees, taxes, total.", "aggregate",
           "SELECT * FROM analyst.captured_totals($1, $2, $3)", (_from("-30d"), TO, CURRENCY)),
    Report("payments-high-value",
           "Payments created in the window with amount >= --threshold (in their own "
           "currency), largest first.", "lookup",
           "SELECT * FROM analyst.high_value_payments($1, $2, $3, $4, $5)",
           (Param("threshold", "decimal", "minimum amount", Decimal("10000")), _from("-30d"),
            TO, CURRENCY, _limit())),
    Report("audit-suspicious",
           "In the window: users with >= --min-failures failed logins, users with REJECTED "
           "outcomes, IPs with >= --burst-per-minute events in one minute.", "aggregate",
           "SELECT * FROM analyst.suspicious_activity($1, $2, $3, $4, $5)",
           (_from("-24h"), TO,
            Param("min_failures", "int", "failed logins per user", 5, minimum=1),
            Param("burst_per_minute", "int", "events per IP per minute", 30, minimum=1),
            _limit())),
    Report("audit-compliance",
           "Audit events in the window by event_type, severity and outcome (rollup for whole "
           "UTC days, live for the rest: exact).", "aggregate",
           "SELECT * FROM analyst.compliance_report($1, $2)", (_from("-30d"), TO)),
    Report("audit-user-timeline",
           "One user's audit rows (by user_id_hash) in recording order.", "lookup",
           "SELECT * FROM analyst.user_timeline($1, $2, $3, $4)",
           (Param("user_hash", "hash", "the user's user_id_hash", required=True),
            _from("-400d"), TO, _limit())),
    Report("audit-correlation-trail",
           "Every audit row of one correlation_id, in order, with the payment, credential or "
           "user row each one touched.", "lookup",
           "SELECT * FROM analyst.correlation_trail($1)",
           (Param("correlation_id", "text", "the correlation_id", required=True),)),
)
BY_NAME = {r.name: r for r in REPORTS}


def resolve(report: Report, given: dict[str, str | None], now: datetime) -> list[Any]:
    """SQL arguments for `report`: parsed options, defaults for the rest.

    Raises:
        ParamError: a required option is missing, a value is malformed, or from >= to.
    """
    values: dict[str, Any] = {}
    for p in report.params:
        raw = given.get(p.name)
        if raw is None:
            if p.required:
                raise ParamError(f"report {report.name} needs {p.option}")
            values[p.name] = p.default_value(now)
        else:
            values[p.name] = p.parse(raw, now)
    if values.get("limit") == 0:
        values["limit"] = None  # LIMIT NULL: every row
    start, end = values.get("from"), values.get("to")
    if start is not None and end is not None and start >= end:
        raise ParamError(f"--from ({start.isoformat()}) must be before --to ({end.isoformat()})")
    return [values[p.name] for p in report.params]
