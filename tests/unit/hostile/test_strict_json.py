"""Hostile JSON documents against the one strict decoder: each refused with its rule named."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core import strict_json
from bridge.core.errors import ProtocolError
from bridge.core.strict_json import StrictJsonError

DEEP = 100_000

# (case id, document, a fragment the error message must hold)
REFUSED: list[tuple[str, bytes, str]] = [
    ("deep-arrays-10k", b"[" * 10_000 + b"]" * 10_000, "nests arrays/objects more than"),
    ("deep-arrays-100k", b"[" * DEEP + b"]" * DEEP, "nests arrays/objects more than"),
    ("deep-objects-100k", b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nests arrays/objects more than"),
    ("deep-unclosed", b"[" * DEEP, "nests arrays/objects more than"),
    ("depth-33", b"[" * 33 + b"]" * 33, "more than 32 deep"),
    ("duplicate-key", b'{"site": "b", "command": "x", "site": "a"}', "duplicate key 'site'"),
    ("duplicate-nested", b'{"a": {"x": 1, "x": 2}}', "duplicate key 'x'"),
    ("lone-high-surrogate-value", b'{"name": "a\\ud800b"}', "'name' holds a lone UTF-16"),
    ("lone-low-surrogate-value", b'{"name": "\\udfff"}', "holds a lone UTF-16 surrogate"),
    ("lone-surrogate-key", b'{"\\ud83d": 1}', "holds a lone UTF-16 surrogate"),
    ("lone-surrogate-in-list", b'{"argv": ["ok", "\\udc80"]}', "'argv[1]' holds a lone"),
    ("surrogate-top-level", b'"\\ud800"', "the document holds a lone"),
    ("invalid-utf8", b'{"name": "\xff"}', "is not UTF-8 (byte 10)"),
    ("overlong-utf8", b'{"name": "\xc0\xaf"}', "is not UTF-8"),
    ("utf8-encoded-surrogate", b'{"name": "\xed\xa0\x80"}', "is not UTF-8"),
    ("int-2-pow-70", b'{"size": 1180591620717411303424}', "outside signed 64 bits"),
    ("int-2-pow-63", b'{"size": 9223372036854775808}', "outside signed 64 bits"),
    ("int-below-min", b'{"size": -9223372036854775809}', "outside signed 64 bits"),
    ("int-5000-digits", b'{"size": ' + b"9" * 5000 + b"}", "outside signed 64 bits"),
    ("nan", b'{"walltime": NaN}', "NaN is not a JSON number"),
    ("infinity", b'{"walltime": Infinity}', "Infinity is not a JSON number"),
    ("minus-infinity", b'{"walltime": -Infinity}', "-Infinity is not a JSON number"),
    ("float-overflow", b'{"walltime": 1e999}', "too large for a 64-bit float"),
    ("truncated", b'{"site": "a"', "is not valid JSON"),
    ("trailing-garbage", b'{"site": "a"} x', "is not valid JSON"),
    ("empty", b"", "is not valid JSON"),
    ("single-quotes", b"{'site': 'a'}", "is not valid JSON"),
]


@pytest.mark.parametrize(("document", "fragment"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_each_hostile_document_is_refused_with_its_rule(document: bytes, fragment: str) -> None:
    with pytest.raises(StrictJsonError) as caught:
        strict_json.loads(document)
    assert fragment in caught.value.message
    assert isinstance(caught.value, ProtocolError)  # the site entry answers it with an error frame


def test_the_path_of_a_bad_string_is_the_errors_field() -> None:
    with pytest.raises(StrictJsonError) as caught:
        strict_json.loads(b'{"inputs": [{"name": "ok"}, {"name": "\\ud800"}]}')
    assert caught.value.field == "inputs[1].name"


def test_an_oversized_document_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(StrictJsonError, match="is 1025 bytes; at most 1024"):
        strict_json.loads(b" " * 1025, max_size=1024)


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    text = json.dumps({"a": "[" * 10_000, "b": '\\"[[[', "c": [[["x"]]]})
    assert strict_json.loads(text)["a"] == "[" * 10_000


def test_the_limits_themselves_are_accepted() -> None:
    edge = {"max": 2**63 - 1, "min": -(2**63), "f": 1.5e308, "s": "\U0001f600 \u00e9"}
    assert strict_json.loads(json.dumps(edge)) == edge
    assert strict_json.loads(b"[" * 32 + b"]" * 32) is not None


def test_loads_object_refuses_other_values() -> None:
    with pytest.raises(StrictJsonError, match="must be a JSON object, not list"):
        strict_json.loads_object(b"[1]")


# Values the decoder must give back unchanged: bounded ints, finite floats, valid text.
_scalar = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text())  # fmt: skip
_values = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_values)
@settings(max_examples=300, deadline=None)
def test_every_valid_document_round_trips(value: Any) -> None:
    assert strict_json.loads(json.dumps(value)) == value
    assert strict_json.loads(json.dumps(value, ensure_ascii=False).encode()) == value


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_arbitrary_bytes_give_a_value_or_strict_json_error_only(data: bytes) -> None:
    try:
        strict_json.loads(data)
    except StrictJsonError as exc:
        assert exc.message


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_arbitrary_text_never_escapes_the_decoders_error(data: str) -> None:
    try:
        value = strict_json.loads(data)
    except StrictJsonError:
        return
    # Anything accepted is plain UTF-8 text all the way down.
    json.dumps(value, ensure_ascii=False).encode("utf-8")


@given(st.integers(min_value=33, max_value=200_000), st.sampled_from(["[", '{"k":']))
@settings(max_examples=30, deadline=None)
def test_any_depth_over_the_limit_is_refused_without_recursion(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    with pytest.raises(StrictJsonError, match="nests arrays/objects"):
        strict_json.loads(opener * depth + ("1" if opener != "[" else "") + closer * depth)


@given(st.integers(min_value=2**63, max_value=2**200) | st.integers(max_value=-(2**63) - 1))
@settings(max_examples=200, deadline=None)
def test_any_integer_outside_64_bits_is_refused(number: int) -> None:
    with pytest.raises(StrictJsonError, match="outside signed 64 bits"):
        strict_json.loads(f'{{"size": {number}}}')
