"""Properties of the manifest reader over generated input: it never raises, never lies."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from shipwreck_contracts.manifest import Manifest, ManifestError, parse_manifest
from shipwreck_contracts.values import APP_NAME_PATTERN

# TOML forbids DEL and lone surrogates inside strings; everything else json.dumps escapes in
# a way TOML reads back, so generated documents mostly parse and reach the validation.
_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x7f"),
    max_size=20,
)


def _quote(text: str) -> str:
    # ensure_ascii would write astral characters as surrogate pairs, which TOML refuses.
    return json.dumps(text, ensure_ascii=False)


_scalar = st.one_of(
    _text.map(_quote),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["true", "false", "1979-05-27T07:32:00Z", "07:32:00"]),
    st.sampled_from(['"hello"', '"python3"', '"node"', '"/health"', '"a.example.com"', "8080"]),
)
_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.dictionaries(_text.map(_quote), inner, max_size=3).map(
            lambda table: "{" + ", ".join(f"{k} = {v}" for k, v in table.items()) + "}"
        ),
    ),
    max_leaves=6,
)
# Each known key with a value that is valid for it, so that many documents get past the
# first error and exercise the rest of the reader (and some are accepted).
_valid = {
    "app": {"name": '"hello"', "version": '"1.0"', "author": '"Ada"', "endpoint": '"https://x"'},
    "config": {
        "lang": '"python3"',
        "run": '"python3 main.py"',
        "port": "8080",
        "domain": '"a.example.com"',
        "test": '""',
        "healthcheck": '"/health"',
    },
    "env-vars": {"A": '"1"', "test-var": '"x"'},
    "env": {"PATH": '"/bin"'},
    "extra": {"x": "1"},
}


@st.composite
def _documents(draw: st.DrawFn) -> bytes:
    sections = ["app", "config"] if draw(st.integers(0, 3)) else []
    sections += draw(st.lists(st.sampled_from(sorted(_valid)), unique=True, max_size=3))
    lines: list[str] = []
    for section in dict.fromkeys(sections):
        lines.append(f"[{section}]")
        for key, valid in _valid[section].items():
            choice = draw(st.sampled_from(["valid", "valid", "valid", "generated", "absent"]))
            if choice != "absent":
                value = valid if choice == "valid" else draw(_value)
                lines.append(f"{_quote(key)} = {value}")
        unknown = draw(st.lists(_text, max_size=2, unique=True))
        lines.extend(
            f"{_quote(key)} = {draw(_value)}" for key in unknown if key not in _valid[section]
        )
    return "\n".join(lines).encode()


def _is_result(result: object) -> bool:
    if isinstance(result, Manifest):
        return True
    return (
        isinstance(result, list)
        and bool(result)
        and all(isinstance(error, ManifestError) for error in result)
    )


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert _is_result(parse_manifest(data))


@settings(max_examples=300, deadline=None)
@given(data=_documents())
def test_arbitrary_values_in_known_fields_never_raise(data: bytes) -> None:
    assert _is_result(parse_manifest(data))


@settings(max_examples=300, deadline=None)
@given(data=_documents())
def test_an_accepted_manifest_meets_its_own_constraints(data: bytes) -> None:
    result = parse_manifest(data)
    if isinstance(result, Manifest):
        # Converting through builtins re-checks every msgspec.Meta constraint of the Structs.
        assert msgspec.convert(msgspec.to_builtins(result), Manifest) == result
        assert result.config.port is None or 1 <= result.config.port <= 65535


@given(name=st.from_regex(APP_NAME_PATTERN, fullmatch=True))
def test_every_dns_label_is_accepted_as_an_app_name(name: str) -> None:
    data = f'[app]\nname = "{name}"\n[config]\nlang = "node"\nrun = "node x.js"\n'.encode()
    result = parse_manifest(data)
    assert isinstance(result, Manifest)
    assert result.app.name == name
