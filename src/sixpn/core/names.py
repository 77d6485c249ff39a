"""The name grammar: what names, metadata and region codes may look like. Pure validation.

Every validator returns the value it accepted or raises
:class:`~sixpn.model.errors.InvalidInput` naming the field and saying what is wrong.

Decisions:

- Names of orgs, networks, apps, hosts, peers and process groups are DNS labels: 1 to 63
  lowercase letters, digits and dashes, starting with a letter, not ending with a dash. They are
  lowercase only because ``.internal`` names are built from them and DNS matching is
  case-insensitive (RFC 4343): ``Web`` and ``web`` would be two objects with one DNS name.
- Metadata keys are 1 to 63 characters of ``[a-z0-9_-]`` starting with a letter or digit; values
  are any string of at most 255 characters; at most 64 entries. A value is stored whatever it is,
  but only a value that is itself a lowercase label (:func:`metadata_value_is_addressable`) can
  be looked up through ``<value>.<key>.kv._metadata.<app>.internal``: DNS lowercases the question
  before matching, and a dot or a space cannot sit inside one label.
- Region codes are 2 to 8 lowercase letters or digits starting with a letter; the words that are
  special first labels of ``.internal`` names (:data:`RESERVED_REGION_CODES`) are refused, so that
  ``<region>.<app>.internal`` is never ambiguous. Whether a code is in the catalogue is checked by
  :mod:`sixpn.core.regions`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sixpn.model.errors import InvalidInput

NAME_MAX = 63
METADATA_MAX_ENTRIES = 64
METADATA_KEY_MAX = 63
METADATA_VALUE_MAX = 255

RESERVED_REGION_CODES = frozenset(
    {"global", "all", "vms", "regions", "nearest", "process", "vm", "kv"}
)

_NAME_CHARS_RE = re.compile(r"[a-z][a-z0-9-]*")
_METADATA_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_LOOKUP_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")
_REGION_RE = re.compile(r"[a-z][a-z0-9]{1,7}")


def validate_name(value: str, *, field: str, what: str | None = None) -> str:
    """Check a name of an org, network, app, host, peer or process group.

    ``what`` says which name it is in the message (``"app name"``); it defaults to ``field``.
    """
    label = what or field
    if not isinstance(value, str):
        raise InvalidInput(f"{label} {value!r}: must be a string", field=field)
    if not value:
        raise InvalidInput(f"{label}: must not be empty", field=field)
    if len(value) > NAME_MAX:
        raise InvalidInput(
            f"{label} {value!r}: must be at most {NAME_MAX} characters (it has {len(value)})",
            field=field,
        )
    if _NAME_CHARS_RE.fullmatch(value) is None:
        raise InvalidInput(
            f"{label} {value!r}: must be lowercase letters, digits and dashes, "
            "starting with a letter",
            field=field,
        )
    if value.endswith("-"):
        raise InvalidInput(f"{label} {value!r}: must not end with a dash", field=field)
    return value


def validate_metadata(md: Mapping[str, str], *, field: str = "metadata") -> dict[str, str]:
    """Check a machine's metadata; returns a plain dict copy.

    Errors about one entry name it in ``field`` as ``"<field>.<key>"``.
    """
    if not isinstance(md, Mapping):
        raise InvalidInput(f"{field}: must be a mapping of strings to strings", field=field)
    if len(md) > METADATA_MAX_ENTRIES:
        raise InvalidInput(
            f"{field}: at most {METADATA_MAX_ENTRIES} entries (it has {len(md)})", field=field
        )
    out: dict[str, str] = {}
    for key, value in md.items():
        if not isinstance(key, str):
            raise InvalidInput(f"{field} key {key!r}: must be a string", field=field)
        if not key or len(key) > METADATA_KEY_MAX:
            raise InvalidInput(
                f"{field} key {key!r}: must be 1 to {METADATA_KEY_MAX} characters", field=field
            )
        if _METADATA_KEY_RE.fullmatch(key) is None:
            raise InvalidInput(
                f"{field} key {key!r}: must be lowercase letters, digits, '_' and '-', "
                "starting with a letter or digit",
                field=field,
            )
        if not isinstance(value, str):
            raise InvalidInput(
                f"{field} value of {key!r}: must be a string (got {type(value).__name__})",
                field=f"{field}.{key}",
            )
        if len(value) > METADATA_VALUE_MAX:
            raise InvalidInput(
                f"{field} value of {key!r}: must be at most {METADATA_VALUE_MAX} characters "
                f"(it has {len(value)})",
                field=f"{field}.{key}",
            )
        out[key] = value
    return out


def metadata_value_is_addressable(value: str) -> bool:
    """Whether ``<value>.<key>.kv._metadata.<app>.internal`` can find this value."""
    return _LOOKUP_LABEL_RE.fullmatch(value) is not None


def validate_region_code(code: str, *, field: str = "region") -> str:
    """Check the shape of a region code (not whether the catalogue knows it)."""
    if not isinstance(code, str):
        raise InvalidInput(f"region code {code!r}: must be a string", field=field)
    if _REGION_RE.fullmatch(code) is None:
        raise InvalidInput(
            f"region code {code!r}: must be 2 to 8 lowercase letters or digits, "
            "starting with a letter",
            field=field,
        )
    if code in RESERVED_REGION_CODES:
        raise InvalidInput(
            f"region code {code!r}: reserved, it is a special label of .internal names "
            f"(reserved: {', '.join(sorted(RESERVED_REGION_CODES))})",
            field=field,
        )
    return code
