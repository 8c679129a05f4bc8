"""The chain writer's fast canonical encoder gives exactly the bytes of the reference encoding
(`json.dumps(values, ensure_ascii=True, separators=(",", ":"))`, docs/audit.md) for every value
the writer passes: text of any characters, integers, NULL and UUIDs."""

from __future__ import annotations

import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from finpass_pipeline.audit.chain import SALT_BYTES, _encode_fast, fresh_salts

# Every code point class that encodes differently somewhere: controls, `"`, `\`, U+007F,
# non-ASCII (BMP and astral), and lone surrogates (a Python str can hold one).
TEXT = st.text(alphabet=st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x7F),
    st.characters(codec="utf-8"),
    st.sampled_from(["\ud800", "\udfff", "\u2028", "\ufeff", "😀"]),
), max_size=40)
VALUE = st.one_of(st.none(), TEXT, st.integers(min_value=-(2**63), max_value=2**63),
                  st.uuids())


def reference(values: list[object]) -> bytes:
    return json.dumps([str(v) if isinstance(v, uuid.UUID) else v for v in values],
                      ensure_ascii=True, separators=(",", ":")).encode()


@settings(max_examples=2000)
@given(st.lists(VALUE, max_size=12))
def test_fast_encoding_is_the_reference_encoding(values: list[object]) -> None:
    assert _encode_fast(values) == reference(values)


def test_each_escape_agrees() -> None:
    for code in [*range(0x20), 0x22, 0x5C, 0x7F, 0x80, 0xFF, 0x2028, 0xD800, 0x1F600]:
        text = f"a{chr(code)}b"
        assert _encode_fast([text]) == reference([text]), hex(code)


def test_salts_are_fresh_and_sized() -> None:
    salts = fresh_salts(1000)
    assert len(salts) == 1000
    assert {len(s) for s in salts} == {SALT_BYTES}
    assert len(set(salts)) == 1000
