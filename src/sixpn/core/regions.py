"""The region catalogue and the distances between regions. Pure.

The built-in catalogue uses Fly.io's region codes with their cities' coordinates; an operator may
add regions or move a built-in one (:meth:`RegionCatalogue.with_extra`). Distances are
great-circle distances between region coordinates (haversine on a sphere of the Earth's mean
radius); ``top<N>.nearest.of.<app>.internal`` and the choice of a peer's gateway region use them.
Rule that holds: orderings by distance are total, ties are broken by region code, so every host
computes the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from sixpn.core.names import validate_region_code
from sixpn.model.entities import Region
from sixpn.model.errors import InvalidInput

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)

BUILTIN_REGIONS: tuple[Region, ...] = (
    Region("ams", "Amsterdam, Netherlands", 52.3676, 4.9041),
    Region("arn", "Stockholm, Sweden", 59.3293, 18.0686),
    Region("atl", "Atlanta, Georgia (US)", 33.7490, -84.3880),
    Region("bog", "Bogotá, Colombia", 4.7110, -74.0721),
    Region("bom", "Mumbai, India", 19.0760, 72.8777),
    Region("bos", "Boston, Massachusetts (US)", 42.3601, -71.0589),
    Region("cdg", "Paris, France", 48.8566, 2.3522),
    Region("den", "Denver, Colorado (US)", 39.7392, -104.9903),
    Region("dfw", "Dallas, Texas (US)", 32.7767, -96.7970),
    Region("ewr", "Secaucus, NJ (US)", 40.7895, -74.0565),
    Region("eze", "Ezeiza, Argentina", -34.8150, -58.5348),
    Region("fra", "Frankfurt, Germany", 50.1109, 8.6821),
    Region("gdl", "Guadalajara, Mexico", 20.6597, -103.3496),
    Region("gig", "Rio de Janeiro, Brazil", -22.9068, -43.1729),
    Region("gru", "São Paulo, Brazil", -23.5505, -46.6333),
    Region("hkg", "Hong Kong, Hong Kong", 22.3193, 114.1694),
    Region("iad", "Ashburn, Virginia (US)", 39.0438, -77.4874),
    Region("jnb", "Johannesburg, South Africa", -26.2041, 28.0473),
    Region("lax", "Los Angeles, California (US)", 34.0522, -118.2437),
    Region("lhr", "London, United Kingdom", 51.5074, -0.1278),
    Region("mad", "Madrid, Spain", 40.4168, -3.7038),
    Region("mia", "Miami, Florida (US)", 25.7617, -80.1918),
    Region("nrt", "Tokyo, Japan", 35.6762, 139.6503),
    Region("ord", "Chicago, Illinois (US)", 41.8781, -87.6298),
    Region("otp", "Bucharest, Romania", 44.4268, 26.1025),
    Region("phx", "Phoenix, Arizona (US)", 33.4484, -112.0740),
    Region("qro", "Querétaro, Mexico", 20.5888, -100.3899),
    Region("scl", "Santiago, Chile", -33.4489, -70.6693),
    Region("sea", "Seattle, Washington (US)", 47.6062, -122.3321),
    Region("sin", "Singapore, Singapore", 1.3521, 103.8198),
    Region("sjc", "San Jose, California (US)", 37.3382, -121.8863),
    Region("syd", "Sydney, Australia", -33.8688, 151.2093),
    Region("waw", "Warsaw, Poland", 52.2297, 21.0122),
    Region("yul", "Montreal, Canada", 45.5017, -73.5673),
    Region("yyz", "Toronto, Canada", 43.6532, -79.3832),
)


def _check_region(region: Region) -> None:
    validate_region_code(region.code)
    if not -90.0 <= region.latitude <= 90.0:
        raise InvalidInput(
            f"region {region.code!r}: latitude {region.latitude} is not in [-90, 90]",
            field="latitude",
        )
    if not -180.0 <= region.longitude <= 180.0:
        raise InvalidInput(
            f"region {region.code!r}: longitude {region.longitude} is not in [-180, 180]",
            field="longitude",
        )


def _index(regions: Iterable[Region]) -> dict[str, Region]:
    out: dict[str, Region] = {}
    for region in regions:
        _check_region(region)
        if region.code in out:
            raise InvalidInput(f"region {region.code!r} is given twice", field="region")
        out[region.code] = region
    return out


class RegionCatalogue:
    """The regions a fabric knows, by code. Immutable; iterates in code order."""

    __slots__ = ("_by_code",)

    def __init__(self, regions: Iterable[Region]) -> None:
        self._by_code = dict(sorted(_index(regions).items()))

    @classmethod
    def default(cls) -> RegionCatalogue:
        """The built-in catalogue (Fly.io's regions)."""
        return cls(BUILTIN_REGIONS)

    def with_extra(self, regions: Iterable[Region]) -> RegionCatalogue:
        """A new catalogue with ``regions`` added; one with a known code replaces that region."""
        merged = dict(self._by_code)
        merged.update(_index(regions))
        return RegionCatalogue(merged.values())

    def get(self, code: str) -> Region:
        """The region with this code; InvalidInput naming the known codes if there is none."""
        try:
            return self._by_code[code]
        except (KeyError, TypeError):
            raise InvalidInput(
                f"unknown region {code!r} (known: {', '.join(self._by_code)})", field="region"
            ) from None

    def codes(self) -> tuple[str, ...]:
        return tuple(self._by_code)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self._by_code

    def __iter__(self) -> Iterator[Region]:
        return iter(self._by_code.values())

    def __len__(self) -> int:
        return len(self._by_code)

    def __repr__(self) -> str:
        return f"RegionCatalogue({', '.join(self._by_code)})"


def great_circle_km(a: Region, b: Region) -> float:
    """Great-circle distance in km between two regions' coordinates (haversine)."""
    lat1, lon1 = math.radians(a.latitude), math.radians(a.longitude)
    lat2, lon2 = math.radians(b.latitude), math.radians(b.longitude)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    # min() guards asin against rounding just above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def nearest_order(origin: Region, regions: Iterable[Region]) -> list[Region]:
    """``regions`` sorted by distance from ``origin``, ties broken by region code."""
    return sorted(regions, key=lambda r: (great_circle_km(origin, r), r.code))
