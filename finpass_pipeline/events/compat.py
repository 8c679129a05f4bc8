"""`finpass-pipeline schema check`: do the models still accept every message the published schemas
accept?

A schema committed in `docs/schemas/<event_type>.v<N>.schema.json` is a promise to producers: any
message it accepts is applied. A change to the models that narrows it (a field removed, a new
required field, a shorter `maxLength`, a changed pattern, a value dropped from an enum, a type
narrowed, a version no longer accepted) would turn messages that producers already send into dead
letters. `check` compares the committed schemas with a fresh export of the models and names each
such field; a change that only widens (an optional field added, a longer limit, a new version)
passes. A new incompatible shape is a new `schema_version` with an upcaster (`events.codec`).

The comparison is structural, over the JSON Schema subset our export produces (`type`, `const`,
`enum`, `anyOf`/`oneOf`, `$ref`, string, number, object and array keywords). It is sound where it
says "compatible" for that subset and conservative elsewhere: a `pattern` that differs at all is
reported, since regular-language inclusion is not worth deciding here. One widening it does not
count as narrowing: a new optional field is accepted although a producer might already send a
field of that name as an unknown (kept) field with another type; pick names producers don't use.

Written by hand, not taken from a library: the Python JSON Schema diff tools we found either
report every textual difference (so an added optional field fails) or are unmaintained; the rules
above are ~150 lines and tested against model changes in tests/unit/test_schema_compat.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finpass_pipeline.events.schema_export import event_schemas, render

VERSIONED = re.compile(r"^(?P<type>[a-z_]+\.[a-z_]+)\.v(?P<version>[0-9]+)$")
"""Names of the per-version schemas, the ones `check` holds the models to."""

Schema = dict[str, Any]


@dataclass(frozen=True)
class Incompatibility:
    """One way the models refuse what a published schema accepts."""

    schema: str
    """`payment.initiated.v1`"""
    path: str
    """Where, in the message: `data.amount`, `actor.ip_address`, or `` for the whole event."""
    problem: str

    def line(self) -> str:
        where = f"{self.schema}: {self.path}" if self.path else self.schema
        return f"{where}: {self.problem}"


@dataclass
class CheckResult:
    incompatible: list[Incompatibility]
    notices: list[str]
    checked: int


def load_committed(directory: Path) -> dict[str, Schema]:
    """The per-version schemas committed in `directory`, by name (`payment.initiated.v1`)."""
    schemas: dict[str, Schema] = {}
    for path in sorted(directory.glob("*.schema.json")):
        name = path.name.removesuffix(".schema.json")
        if VERSIONED.match(name):
            schemas[name] = json.loads(path.read_text("utf-8"))
    return schemas


def check_directory(directory: Path) -> CheckResult:
    """`check` of the models against the schemas committed in `directory`, plus notices for
    files that differ compatibly or are not committed yet (run `schema export`)."""
    committed = load_committed(directory)
    current = event_schemas()
    result = CheckResult(check(committed, current), [], len(committed))
    for name, schema in current.items():
        path = directory / f"{name}.schema.json"
        if not path.exists():
            result.notices.append(f"{path} is not committed yet (run `finpass-pipeline schema "
                                  f"export {directory}`)")
        elif path.read_text("utf-8") != render(schema) and not any(
                i.schema == name for i in result.incompatible):
            result.notices.append(f"{path} differs from the models, compatibly (run "
                                  f"`finpass-pipeline schema export {directory}`)")
    return result


def check(committed: dict[str, Schema], current: dict[str, Schema]) -> list[Incompatibility]:
    """Every narrowing from each committed per-version schema to the current one of that name."""
    found: list[Incompatibility] = []
    for name, old in committed.items():
        if not VERSIONED.match(name):
            continue
        new = current.get(name)
        if new is None:
            found.append(Incompatibility(name, "", "this version is no longer accepted"))
            continue
        found.extend(Incompatibility(name, path, problem)
                     for path, problem in _Compare(old, new).narrowings(old, new, ""))
    return found


_TYPE_WIDER = {"integer": {"integer", "number"}}


class _Compare:
    """Does `new` accept every instance `old` accepts? Yields (path, problem) where it doesn't."""

    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self.roots = (old_root, new_root)
        self.seen: set[tuple[str, str]] = set()

    def _resolve(self, node: Schema, which: int) -> tuple[Schema, str | None]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node, None
        target: Any = self.roots[which]
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return target, ref

    def narrowings(self, old: Schema, new: Schema, path: str) -> Iterator[tuple[str, str]]:
        old, old_ref = self._resolve(old, 0)
        new, new_ref = self._resolve(new, 1)
        if old_ref is not None and new_ref is not None:
            if (old_ref, new_ref) in self.seen:  # recursive definitions: compared once
                return
            self.seen.add((old_ref, new_ref))
        old_branches = _branches(old)
        new_branches = _branches(new)
        if len(old_branches) > 1 or len(new_branches) > 1:
            for branch in old_branches:
                yield from self._some_branch_accepts(branch, new_branches, path)
            return
        yield from self._single(old, new, path)

    def _some_branch_accepts(self, old: Schema, candidates: list[Schema],
                             path: str) -> Iterator[tuple[str, str]]:
        tried: list[tuple[bool, int, list[tuple[str, str]]]] = []
        old_types = _types(self._resolve(old, 0)[0])
        for candidate in candidates:
            problems = list(self.narrowings(old, candidate, path))
            if not problems:
                return
            # Report against the branch of the same type (the string one for a string...).
            other_type = not _types(self._resolve(candidate, 1)[0]) & old_types
            tried.append((other_type, len(problems), problems))
        yield from min(tried, key=lambda t: (t[0], t[1]))[2] if tried else [
            (path, "no longer accepted")]

    def _single(self, old: Schema, new: Schema, path: str) -> Iterator[tuple[str, str]]:
        old_values = _values(old)
        new_values = _values(new)
        if new_values is not None:
            if old_values is None:
                yield path, f"now limited to {_show(new_values)}"
            elif missing := [v for v in old_values if v not in new_values]:
                yield path, f"no longer accepts {_show(missing)}"
            return
        old_types, new_types = _types(old), _types(new)
        if new_types:
            if not old_types:
                yield path, f"now limited to type {_show(sorted(new_types))}"
                return
            widened = set().union(*(_TYPE_WIDER.get(t, {t}) for t in new_types))
            if lost := sorted(t for t in old_types if t not in new_types and not (
                    t == "integer" and "number" in widened)):
                yield path, f"type {_show(lost)} no longer accepted"
                return
        yield from self._bounds(old, new, path)
        if "object" in (new_types or old_types) or "properties" in old:
            yield from self._object(old, new, path)
        if ("items" in old or "items" in new) and "items" in new:
            yield from self.narrowings(old.get("items", {}), new["items"], f"{path}[]")

    def _bounds(self, old: Schema, new: Schema, path: str) -> Iterator[tuple[str, str]]:
        for key, tighter in (("maxLength", _lower), ("maxItems", _lower), ("maximum", _lower),
                             ("exclusiveMaximum", _lower), ("minLength", _higher),
                             ("minItems", _higher), ("minimum", _higher),
                             ("exclusiveMinimum", _higher), ("maxProperties", _lower)):
            if key in new and tighter(old.get(key), new[key]):
                yield path, f"{key} {old.get(key, 'none')} -> {new[key]}"
        for key in ("pattern", "format", "multipleOf"):
            if key in new and new[key] != old.get(key):
                yield path, f"{key} {_show(old.get(key, 'none'))} -> {_show(new[key])}"

    def _object(self, old: Schema, new: Schema, path: str) -> Iterator[tuple[str, str]]:
        old_props: Schema = old.get("properties", {})
        new_props: Schema = new.get("properties", {})
        for name, old_prop in old_props.items():
            where = f"{path}.{name}" if path else name
            if name not in new_props:
                yield where, "removed (the field was accepted and stored)"
            else:
                yield from self.narrowings(old_prop, new_props[name], where)
        old_required = set(old.get("required", []))
        for name in new.get("required", []):
            if name not in old_required:
                yield (f"{path}.{name}" if path else name), "now required"
        old_extra, new_extra = old.get("additionalProperties", True), new.get(
            "additionalProperties", True)
        if new_extra is False and old_extra is not False:
            yield path, "unknown fields no longer accepted"
        elif isinstance(new_extra, dict) and old_extra is not False:
            yield from self.narrowings(old_extra if isinstance(old_extra, dict) else {},
                                       new_extra, f"{path}.*" if path else "*")
        if "propertyNames" in new:
            yield from self.narrowings(old.get("propertyNames", {}), new["propertyNames"],
                                       f"{path} (field names)")


def _branches(node: Schema) -> list[Schema]:
    for key in ("anyOf", "oneOf"):
        if key in node:
            return list(node[key])
    return [node]


def _values(node: Schema) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    if "enum" in node:
        return list(node["enum"])
    return None


def _types(node: Schema) -> set[str]:
    kind = node.get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)


def _lower(old: Any, new: Any) -> bool:
    return old is None or new < old


def _higher(old: Any, new: Any) -> bool:
    return old is None or new > old


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
