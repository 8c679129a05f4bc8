"""`schema check` (events.compat): a model change that would refuse what a committed schema
accepts fails, naming the field; a widening passes.

The changes are real model changes (pydantic models derived from the current ones, exported the
way `schema export` does), checked against the committed `docs/schemas/`. That the models accept
the messages of every committed version is shown on messages too: test_wire_validity draws them
from each versioned schema (`payment.initiated.v1` included) and feeds them to `parse_event`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, StringConstraints, create_model

from finpass_pipeline.events import (
    PaymentInitiatedDataV1,
    PaymentInitiatedV1,
    event_versions,
)
from finpass_pipeline.events.compat import Incompatibility, check, check_directory, load_committed
from finpass_pipeline.events.schema_export import event_schemas, render, schema_of
from tests.support import REPO_ROOT

COMMITTED = REPO_ROOT / "docs" / "schemas"
V1 = "payment.initiated.v1"


def v1_variant(*, drop: tuple[str, ...] = (), **fields: Any) -> type[BaseModel]:
    """`payment.initiated` v1 with `data` fields dropped, retyped or added (`name=(type, default)`;
    `...` as the default makes it required)."""
    definitions: dict[str, Any] = {
        name: (info.annotation, info) for name, info in PaymentInitiatedDataV1.model_fields.items()
        if name not in drop
    }
    definitions.update(fields)
    data = create_model("PaymentInitiatedDataV1", __base__=BaseModel, **definitions)
    return create_model("PaymentInitiatedV1", __base__=PaymentInitiatedV1,
                        data=(data, ...))


def problems_with(model: type[BaseModel]) -> list[Incompatibility]:
    current = dict(event_schemas())
    current[V1] = schema_of(model)
    return check(load_committed(COMMITTED), current)


def test_the_models_accept_every_committed_schema() -> None:
    """Main is compatible with what it publishes: the gate CI runs."""
    result = check_directory(COMMITTED)
    assert result.incompatible == []
    assert result.notices == []
    versions = sum(len(v) for v in event_versions().values())
    assert result.checked == len(list(COMMITTED.glob("*.v*.schema.json"))) == versions


def test_a_removed_field_fails_naming_it() -> None:
    found = problems_with(v1_variant(drop=("payment_method",)))
    assert [(p.schema, p.path) for p in found] == [(V1, "data.payment_method")]
    assert "removed" in found[0].problem
    assert found[0].line().startswith("payment.initiated.v1: data.payment_method: removed")


def test_a_narrowed_type_fails_naming_it() -> None:
    shorter = Annotated[str, StringConstraints(max_length=100)] | None
    found = problems_with(v1_variant(description=(shorter, None)))
    assert [(p.path, p.problem) for p in found] == [("data.description", "maxLength 500 -> 100")]
    found = problems_with(v1_variant(payment_method=(int | None, None)))
    assert [p.path for p in found] == ["data.payment_method"]
    assert 'type ["string"] no longer accepted' in found[0].problem


def test_a_field_made_required_or_a_pattern_changed_fails() -> None:
    found = problems_with(v1_variant(description=(str, ...)))
    assert ("data.description", "now required") in [(p.path, p.problem) for p in found]
    lower = Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]
    found = problems_with(v1_variant(currency=(lower, ...)))
    assert [p.path for p in found] == ["data.currency"]
    assert found[0].problem.startswith('pattern "^[A-Z]{3}$" -> "^[a-z]{3}$"')


def test_an_added_optional_field_or_a_wider_limit_passes() -> None:
    assert problems_with(v1_variant(note=(str | None, None))) == []
    longer = Annotated[str, StringConstraints(max_length=1000)] | None
    assert problems_with(v1_variant(description=(longer, None))) == []


def test_a_version_dropped_fails() -> None:
    current = dict(event_schemas())
    del current[V1]
    found = check(load_committed(COMMITTED), current)
    assert [(p.schema, p.problem) for p in found] == [(V1, "this version is no longer accepted")]


def test_v2_is_not_a_compatible_change_of_v1() -> None:
    """Why payment.initiated v2 is a new version: checked as a change of v1, it fails."""
    current = dict(event_schemas())
    current[V1] = current["payment.initiated.v2"]
    paths = {p.path for p in check(load_committed(COMMITTED), current)}
    assert {"schema_version", "data.amount", "data.currency", "data.reference_id"} <= paths


def _cli(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "finpass_pipeline.cli", "schema", "check",
                           str(directory)], capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_command_fails_with_the_field_and_passes_on_main(tmp_path: Path) -> None:
    """The committed schemas are the contract: one that promises more than the models accept
    (here: a field the models lack) fails the command, exit 1, naming it."""
    ok = _cli(COMMITTED)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    versions = len(list(COMMITTED.glob("*.v*.schema.json")))
    assert f"ok: the models accept everything the {versions} committed schema version(s)" in (
        ok.stdout)
    shutil.copytree(COMMITTED, tmp_path / "schemas")
    path = tmp_path / "schemas" / f"{V1}.schema.json"
    promised = json.loads(path.read_text("utf-8"))
    promised["$defs"]["PaymentInitiatedDataV1"]["properties"]["channel"] = {"type": "string"}
    path.write_text(render(promised), encoding="utf-8")
    broken = _cli(tmp_path / "schemas")
    assert broken.returncode == 1
    assert "INCOMPATIBLE payment.initiated.v1: data.channel: removed" in broken.stdout
    assert "differs" not in broken.stderr  # the incompatible file is not also a notice
    missing = _cli(tmp_path / "nowhere")
    assert missing.returncode == 2 and "no such directory" in missing.stderr


@pytest.mark.parametrize("dropped", ["reference_id", "kyc_decision_token", "fee_amount"])
def test_any_v1_field_removed_is_named(dropped: str) -> None:
    found = problems_with(v1_variant(drop=(dropped,)))
    assert [p.path for p in found] == [f"data.{dropped}"]
