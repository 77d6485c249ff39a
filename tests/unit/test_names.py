"""The name grammar: good names pass unchanged, bad ones fail naming the field and the problem."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixpn.core.names import (
    RESERVED_REGION_CODES,
    metadata_value_is_addressable,
    validate_metadata,
    validate_name,
    validate_region_code,
)
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("good", ["a", "web", "web-1", "my-app-2", "x" * 63, "a--b", "db9"])
def test_good_names(good: str) -> None:
    assert validate_name(good, field="name") == good


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("", "must not be empty"),
        ("Web_1", "must be lowercase letters, digits and dashes, starting with a letter"),
        ("Web", "lowercase"),
        ("1web", "starting with a letter"),
        ("-web", "starting with a letter"),
        ("web-", "must not end with a dash"),
        ("web.app", "lowercase letters, digits and dashes"),
        ("wéb", "lowercase letters, digits and dashes"),
        ("x" * 64, "at most 63 characters"),
    ],
)
def test_bad_names(bad: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name(bad, field="name", what="app name")
    assert info.value.field == "name"
    assert problem in info.value.message
    assert info.value.message.startswith("app name")


def test_bad_name_message_exactly() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_name("Web_1", field="name", what="app name")
    assert info.value.message == (
        "app name 'Web_1': must be lowercase letters, digits and dashes, starting with a letter"
    )
    assert info.value.to_dict()["field"] == "name"


def test_name_what_defaults_to_field() -> None:
    with pytest.raises(InvalidInput, match=r"^network 'X'"):
        validate_name("X", field="network")
    with pytest.raises(InvalidInput, match="must be a string"):
        validate_name(3, field="network")  # type: ignore[arg-type]


@given(st.from_regex(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True))
def test_generated_labels_pass(name: str) -> None:
    assert validate_name(name, field="name") == name


def test_good_metadata() -> None:
    md = {"role": "primary", "9lives": "", "a_b-c": "x" * 255, "tier": "Not A Label!"}
    assert validate_metadata(md) == md
    assert validate_metadata({}) == {}
    assert validate_metadata({f"k{i}": "v" for i in range(64)}) == {f"k{i}": "v" for i in range(64)}


@pytest.mark.parametrize(
    ("md", "field", "problem"),
    [
        ({"": "v"}, "metadata", "1 to 63 characters"),
        ({"k" * 64: "v"}, "metadata", "1 to 63 characters"),
        ({"Role": "v"}, "metadata", "lowercase letters, digits"),
        ({"_role": "v"}, "metadata", "starting with a letter or digit"),
        ({"ro le": "v"}, "metadata", "'ro le'"),
        ({"role": "x" * 256}, "metadata.role", "at most 255 characters"),
        ({"role": 5}, "metadata.role", "must be a string"),
        ({3: "v"}, "metadata", "must be a string"),
        ({f"k{i}": "v" for i in range(65)}, "metadata", "at most 64 entries"),
    ],
)
def test_bad_metadata(md: dict[Any, Any], field: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_metadata(md)
    assert info.value.field == field
    assert problem in info.value.message


def test_metadata_field_name_is_used() -> None:
    with pytest.raises(InvalidInput) as info:
        validate_metadata({"Bad": "v"}, field="config.metadata")
    assert info.value.field == "config.metadata"
    with pytest.raises(InvalidInput):
        validate_metadata(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_metadata_value_is_addressable() -> None:
    assert metadata_value_is_addressable("primary")
    assert metadata_value_is_addressable("db_1-a")
    assert not metadata_value_is_addressable("")
    assert not metadata_value_is_addressable("Primary")
    assert not metadata_value_is_addressable("a.b")
    assert not metadata_value_is_addressable("x" * 64)


@pytest.mark.parametrize("good", ["fra", "iad", "ab", "eu1", "homelab8"])
def test_good_region_codes(good: str) -> None:
    assert validate_region_code(good) == good


@pytest.mark.parametrize("bad", ["", "f", "FRA", "1ab", "fra-1", "toolongxx", "fr a"])
def test_bad_region_code_shapes(bad: str) -> None:
    with pytest.raises(InvalidInput, match="2 to 8 lowercase letters or digits") as info:
        validate_region_code(bad)
    assert info.value.field == "region"


@pytest.mark.parametrize("word", sorted(RESERVED_REGION_CODES))
def test_reserved_region_codes(word: str) -> None:
    with pytest.raises(InvalidInput, match="reserved") as info:
        validate_region_code(word, field="regions[0]")
    assert info.value.field == "regions[0]"
    assert repr(word) in info.value.message


def test_reserved_words_are_the_special_labels() -> None:
    assert {
        "global",
        "all",
        "vms",
        "regions",
        "nearest",
        "process",
        "vm",
        "kv",
    } == RESERVED_REGION_CODES
