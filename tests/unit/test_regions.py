"""The region catalogue and great-circle distances."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixpn.core.regions import (
    BUILTIN_REGIONS,
    RegionCatalogue,
    great_circle_km,
    nearest_order,
)
from sixpn.model.entities import Region
from sixpn.model.errors import InvalidInput

pytestmark = pytest.mark.unit

CAT = RegionCatalogue.default()

# fmt: off
FLY_CODES = [
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra",
    "gdl", "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord",
    "otp", "phx", "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
]
# fmt: on


def test_builtin_catalogue() -> None:
    assert list(CAT.codes()) == FLY_CODES
    assert [r.code for r in CAT] == FLY_CODES
    assert len(CAT) == len(BUILTIN_REGIONS) == 35
    assert "fra" in CAT
    assert "xyz" not in CAT
    assert 3 not in CAT
    assert CAT.get("fra").name.startswith("Frankfurt")


def test_unknown_region() -> None:
    with pytest.raises(InvalidInput) as info:
        CAT.get("xyz")
    assert info.value.field == "region"
    assert info.value.message.startswith("unknown region 'xyz' (known: ams, arn, atl,")


def test_with_extra_adds_and_overrides() -> None:
    home = Region("home", "Basement", 10.0, 20.0)
    moved = Region("fra", "Frankfurt (moved)", 50.0, 8.0)
    cat = CAT.with_extra([home, moved])
    assert cat.get("home") == home
    assert cat.get("fra") == moved
    assert CAT.get("fra") != moved  # the original is unchanged
    assert list(cat.codes()) == sorted([*FLY_CODES, "home"])


@pytest.mark.parametrize(
    ("region", "field"),
    [
        (Region("global", "x", 0.0, 0.0), "region"),
        (Region("FRA", "x", 0.0, 0.0), "region"),
        (Region("abc", "x", 91.0, 0.0), "latitude"),
        (Region("abc", "x", 0.0, -181.0), "longitude"),
    ],
)
def test_bad_regions_refused(region: Region, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        CAT.with_extra([region])
    assert info.value.field == field


def test_duplicate_codes_refused() -> None:
    with pytest.raises(InvalidInput, match="twice"):
        RegionCatalogue([Region("abc", "x", 0, 0), Region("abc", "y", 1, 1)])


@pytest.mark.parametrize(
    ("a", "b", "km", "tolerance"),
    [
        ("fra", "ams", 360, 30),
        ("iad", "lhr", 5900, 100),
        ("sjc", "lax", 490, 30),
        ("syd", "nrt", 7800, 100),
        ("cdg", "lhr", 344, 20),
    ],
)
def test_distances(a: str, b: str, km: float, tolerance: float) -> None:
    d = great_circle_km(CAT.get(a), CAT.get(b))
    assert abs(d - km) <= tolerance, d
    assert great_circle_km(CAT.get(b), CAT.get(a)) == pytest.approx(d)


def test_antipodes_and_self() -> None:
    north, south = Region("np", "N", 90.0, 0.0), Region("sp", "S", -90.0, 0.0)
    assert great_circle_km(north, south) == pytest.approx(3.141592653589793 * 6371.0088)
    assert great_circle_km(north, north) == 0.0


coords = st.builds(
    Region,
    code=st.from_regex(r"[a-z]{3}", fullmatch=True),
    name=st.just("r"),
    latitude=st.floats(-90, 90),
    longitude=st.floats(-180, 180),
)


@given(coords, coords, coords)
def test_distance_is_a_metric(x: Region, y: Region, z: Region) -> None:
    dxy, dyz, dxz = great_circle_km(x, y), great_circle_km(y, z), great_circle_km(x, z)
    assert 0 <= dxy <= 3.1416 * 6371.0088
    assert dxy == pytest.approx(great_circle_km(y, x))
    assert dxz <= dxy + dyz + 1e-6


def test_nearest_order_from_fra() -> None:
    order = [r.code for r in nearest_order(CAT.get("fra"), CAT)]
    assert order[0] == "fra"
    assert order[1:4] == ["ams", "cdg", "lhr"]
    assert order[-1] == "syd"
    assert sorted(order) == FLY_CODES


def test_nearest_order_ties_broken_by_code() -> None:
    origin = Region("ooo", "origin", 0.0, 0.0)
    east, west = Region("zed", "E", 0.0, 10.0), Region("abc", "W", 0.0, -10.0)
    far = Region("bbb", "far", 0.0, 50.0)
    assert nearest_order(origin, [far, east, west]) == [west, east, far]
    assert nearest_order(origin, [west, far, east]) == [west, east, far]


@given(st.lists(coords, max_size=12), coords)
def test_nearest_order_is_sorted(regions: list[Region], origin: Region) -> None:
    order = nearest_order(origin, regions)
    keys = [(great_circle_km(origin, r), r.code) for r in order]
    assert keys == sorted(keys)
    assert sorted(order, key=id) == sorted(regions, key=id)
