"""`bench-phases`' in-memory part: every phase measured, on messages the planner accepts."""

from __future__ import annotations

from finpass_pipeline.dev import phases


def test_every_phase_is_measured_on_valid_messages() -> None:
    records = phases.messages(300, 30, 7, "finpass.")
    assert len(records) == 300
    best = phases.phases(records, 2, "finpass.")
    assert list(best) == [
        "decode (parse, validate, topic and key checks)", "plan", "content digest", "subjects",
        "apply + audit row", "chain (digests, hashes, COPY records)", "domain row records"]
    assert all(v >= 0 for v in best.values()) and best["decode (parse, validate, topic and "
                                                        "key checks)"] > 0
    # The messages are the consumer's kind: none is a dead letter.
    from consumers.planner import Planner

    planner = Planner("finpass.")
    assert all(planner.decode(r).reason is None for r in records)
