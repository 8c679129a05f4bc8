"""Personal data at rest (finpass_pipeline.privacy): sealing, key wrapping and rotation, the
master key settings, and the redaction rules of erasure."""

from __future__ import annotations

import base64
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.apply import Applier, BatchState
from consumers.records import Incoming
from finpass_pipeline import settings as settings_module
from finpass_pipeline.audit.pseudonym import Pseudonymizer
from finpass_pipeline.events import parse_event, serialize_event
from finpass_pipeline.privacy.crypto import (
    DecryptionError,
    MasterKeyring,
    UnknownMasterKey,
    field_aad,
    new_data_key,
    open_sealed,
    parse_key,
    seal,
)
from finpass_pipeline.privacy.erasure import erased_form, pseudonym_of, redact_payload
from finpass_pipeline.settings import ConfigError, Settings
from tests.support.builders import ev, registered
from tests.support.pipeline_support import cli

AAD = field_aad("users", "email", "7f1c")


@given(st.text())
def test_seal_round_trip(text: str) -> None:
    """Any text sealed under a data key opens to itself, with a fresh nonce each time."""
    key = new_data_key()
    blob = seal(key, text, AAD)
    assert open_sealed(key, blob, AAD) == text
    assert seal(key, text, AAD) != blob


@pytest.mark.parametrize("position", [0, 5, 13, -1])
def test_tampering_is_detected(position: int) -> None:
    """One flipped bit anywhere (format, nonce, ciphertext, tag) and the value does not open."""
    key = new_data_key()
    blob = bytearray(seal(key, "alice@example.com", AAD))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionError):
        open_sealed(key, bytes(blob), AAD)


def test_a_value_moved_to_another_row_or_column_does_not_open() -> None:
    """The associated data binds a sealed value to its table, column and row."""
    key = new_data_key()
    blob = seal(key, "+49 30 1234", field_aad("users", "phone", "row-1"))
    for aad in (field_aad("users", "phone", "row-2"), field_aad("users", "email", "row-1")):
        with pytest.raises(DecryptionError):
            open_sealed(key, blob, aad)


def test_the_wrong_key_is_refused() -> None:
    """Another person's data key, or another master key, opens nothing."""
    blob = seal(new_data_key(), "secret", AAD)
    with pytest.raises(DecryptionError):
        open_sealed(new_data_key(), blob, AAD)
    data_key = new_data_key()
    kid, wrapped = MasterKeyring("m1", {"m1": os.urandom(32)}).wrap(data_key, "p" * 64)
    with pytest.raises(DecryptionError):
        MasterKeyring("m1", {"m1": os.urandom(32)}).unwrap(kid, wrapped, "p" * 64)
    with pytest.raises(DecryptionError):  # bound to the person it was wrapped for
        MasterKeyring("m1", {"m1": os.urandom(32)}).unwrap(kid, wrapped, "q" * 64)


def test_rotation_rewraps_under_the_new_master_key() -> None:
    """A key wrapped by m1 unwraps with a keyring holding m1 as an older key, is re-wrapped under
    the current m2, and then needs m1 no more; a keyring without m1 names the missing id."""
    m1, m2 = os.urandom(32), os.urandom(32)
    data_key, person = new_data_key(), "a" * 64
    old_kid, old_wrapped = MasterKeyring("m1", {"m1": m1}).wrap(data_key, person)
    rotating = MasterKeyring("m2", {"m1": m1, "m2": m2})
    assert rotating.unwrap(old_kid, old_wrapped, person) == data_key
    new_kid, new_wrapped = rotating.wrap(rotating.unwrap(old_kid, old_wrapped, person), person)
    assert new_kid == "m2"
    only_new = MasterKeyring("m2", {"m2": m2})
    assert only_new.unwrap(new_kid, new_wrapped, person) == data_key
    with pytest.raises(UnknownMasterKey, match="'m1'"):
        only_new.unwrap(old_kid, old_wrapped, person)


def test_master_key_settings() -> None:
    """FINPASS_PII_MASTER_KEY (base64 or hex, 32 bytes) with its id, older keys beside it; a
    missing key outside dev mode and a malformed one are configuration errors (never echoed)."""
    key = os.urandom(32)
    b64 = base64.b64encode(key).decode()
    ring = Settings(pii_master_key=b64, pii_master_key_id="m2",
                    pii_master_keys=f"m1:{os.urandom(32).hex()}").pii_keyring()
    assert (ring.current_id, ring.key_ids, ring.dev) == ("m2", frozenset({"m1", "m2"}), False)
    assert parse_key(key.hex(), "k") == key == parse_key(base64.urlsafe_b64encode(key).decode(),
                                                         "k")
    with pytest.raises(ConfigError, match="FINPASS_PII_MASTER_KEY is not set"):
        Settings().pii_keyring()
    with pytest.raises(ConfigError, match="must be 32 bytes") as bad:
        Settings(pii_master_key=base64.b64encode(b"short").decode()).pii_keyring()
    assert "c2hvcnQ" not in str(bad.value)
    with pytest.raises(ConfigError, match="entry 1 is not id:key"):
        Settings(pii_master_key=b64, pii_master_keys="nokey").pii_keyring()


def test_dev_mode_uses_the_dev_key_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a key in dev mode the dev keyring is used, and stderr says it protects nothing."""
    settings_module._dev_key_notice.cache_clear()
    ring = Settings(dev_mode=True).pii_keyring()
    assert ring.dev and ring.current_id == "dev"
    assert "dev PII master key" in capsys.readouterr().err


PZ = Pseudonymizer(b"unit-key", "k1")
DID = "did:example:erin"


def test_payload_redaction() -> None:
    """A stored payload naming an erased DID loses the DID (its pseudonym form instead), the
    actor's personal fields and the personal data fields; other DIDs stay."""
    raw = serialize_event(registered(DID, email="e@example.org", phone="+1 555",
                                     actor={"did": DID, "ip_address": "203.0.113.9",
                                            "user_agent": "UA/1", "session_id": "s-1"},
                                     note="friend of did:example:bo"))
    doc = json.loads(redact_payload(raw, {DID: PZ.hash(DID)}))
    assert doc["data"]["did"] == doc["actor"]["did"] == erased_form(PZ.hash(DID))
    assert "email" not in doc["data"] and "phone" not in doc["data"]
    assert doc["actor"]["session_id"] == "s-1"
    assert not {"ip_address", "user_agent", "device_fingerprint", "geolocation"} & set(
        doc["actor"])
    assert doc["data"]["note"] == "friend of did:example:bo"
    assert redact_payload(b"not json " + DID.encode(), {DID: "ab" * 32}) == (
        b"not json hmac:" + b"ab" * 32)
    assert pseudonym_of(PZ, erased_form(PZ.hash(DID))) == PZ.hash(DID) == pseudonym_of(PZ, DID)


def test_erasure_apply_audits_once_and_strips_later_actor_fields() -> None:
    """`user.erasure_requested` writes one USER_ERASURE_REQUESTED row and marks the person
    erased; an event about them applied after it carries no IP, user agent or device."""
    applier, state = Applier(PZ), BatchState()
    actor = {"did": DID, "ip_address": "203.0.113.9", "user_agent": "UA/1",
             "device_fingerprint": "fp-1", "geolocation": "DE"}
    for n, e in enumerate([registered(DID, email="e@example.org", actor=actor),
                           ev("user.erasure_requested", did=DID, reason="Art. 17", at=5,
                              actor=actor),
                           ev("user.seen", did=DID, at=9, actor=actor)]):
        raw = serialize_event(e)
        assert applier.apply(state, Incoming(parse_event(raw), "t.users", 0, n, raw)) == (
            "APPLIED")
    reg, erased, seen = state.audit
    assert erased.event_type == "USER_ERASURE_REQUESTED" and erased.action == "ERASE"
    assert erased.user_id_hash == PZ.hash(DID) and erased.ip_address is None
    assert reg.ip_address == "203.0.113.9"  # before the erasure: audit.redaction at merge
    assert (seen.ip_address, seen.user_agent, seen.device_fingerprint, seen.geolocation) == (
        None, None, None, None)
    assert state.erased == {PZ.hash(DID)} and [d for d, _, _ in state.erasures] == [DID]
    assert "Art. 17" not in (erased.details or "")


def test_consume_without_master_key_exits_2() -> None:
    """Outside dev mode the consumer refuses to start without FINPASS_PII_MASTER_KEY, in one
    line naming it (before it connects to anything)."""
    result = cli("consume", env={"FINPASS_HTTP_PORT": "0", "FINPASS_AUDIT_HASH_KEY": "k"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "finpass-pipeline: FINPASS_PII_MASTER_KEY is not set (required unless "
        "FINPASS_DEV_MODE=true)"]
