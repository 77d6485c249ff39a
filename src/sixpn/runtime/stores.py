"""Which store a command runs on: SQLite (the embedded default) or an etcd cluster.

``sixpn server --db PATH`` or ``--etcd URL[,URL...]`` (with ``--etcd-prefix``, TLS files and a
user), and ``sixpn store copy --from SPEC --to SPEC`` where a SPEC is ``sqlite:PATH`` or
``etcd:URL[,URL...]``. The etcd password comes from the environment (``SIXPN_ETCD_PASSWORD``),
never from a command line that ``ps`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sixpn.model.errors import InvalidInput
from sixpn.store import Store
from sixpn.store.etcd import EtcdStore
from sixpn.store.sqlite import SqliteStore

DEFAULT_ETCD_PREFIX = "/sixpn/"


@dataclass(frozen=True)
class EtcdOptions:
    endpoints: tuple[str, ...]
    prefix: str = DEFAULT_ETCD_PREFIX
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    user: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class StoreSpec:
    """A store to open: a SQLite file, or an etcd cluster."""

    db: Path | None = None
    etcd: EtcdOptions | None = None

    def __post_init__(self) -> None:
        if (self.db is None) == (self.etcd is None):
            raise InvalidInput("a store is a SQLite file or an etcd cluster (one of the two)")

    def describe(self) -> str:
        if self.etcd is not None:
            return f"etcd:{','.join(self.etcd.endpoints)} (prefix {self.etcd.prefix})"
        return f"sqlite:{self.db}"


def endpoints(urls: str, *, field: str = "etcd") -> tuple[str, ...]:
    """``URL[,URL...]`` as a tuple; InvalidInput when none is given."""
    found = tuple(u.strip() for u in urls.split(",") if u.strip())
    if not found:
        raise InvalidInput(f"{field}: no etcd endpoint in {urls!r}", field=field)
    return found


def parse_spec(text: str, etcd: EtcdOptions | None = None, *, field: str = "store") -> StoreSpec:
    """``sqlite:PATH`` or ``etcd:URL[,URL...]`` (the other etcd options from ``etcd``)."""
    kind, sep, rest = text.partition(":")
    if sep and kind == "sqlite" and rest:
        return StoreSpec(db=Path(rest))
    if sep and kind == "etcd" and rest:
        base = etcd or EtcdOptions(endpoints=())
        return StoreSpec(
            etcd=EtcdOptions(
                endpoints(rest, field=field),
                base.prefix,
                base.ca_file,
                base.cert_file,
                base.key_file,
                base.user,
                base.password,
            )
        )
    raise InvalidInput(f"{field} {text!r}: expected sqlite:PATH or etcd:URL[,URL...]", field=field)


async def open_store(spec: StoreSpec) -> Store:
    if spec.etcd is not None:
        e = spec.etcd
        return await EtcdStore.open(
            list(e.endpoints),
            prefix=e.prefix,
            ca_file=e.ca_file,
            cert_file=e.cert_file,
            key_file=e.key_file,
            user=e.user,
            password=e.password,
        )
    assert spec.db is not None
    spec.db.parent.mkdir(parents=True, exist_ok=True)
    return await SqliteStore.open(spec.db)
