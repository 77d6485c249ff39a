"""The key layout of the store. Every key the control plane writes is built here.

Entity keys (streamed to agents, first segment = kind):
    org/<org>                       network/<org>/<net>           app/<org>/<app>
    host/<host>                     hoststatus/<host>
    machine/<org>/<app>/<id>        peer/<org>/<peer>
Internal keys (never streamed):
    counter/network, counter/host   last ID claimed by a replica (blocks of 64, control/ids.py)
    netid/<net32>                   "<org>/<net>": which network owns an ID
    mid/<id>                        the machine's entity key (lookup by ID; IDs are never reused)
    mfield/<net32>/<host32>/<f32>   machine ID: a field is unique per (network, host)
    pslot/<net32>/<host32>          last peer slot handed out on that gateway: never reused
    guard/<entity key>              a parent being deleted: creating children under it fails
    hostkey/<sha256 of key>         the host using a WireGuard public key: one key, one host
    gwkey/<host>/<sha256 of key>    "<org>/<peer>": one public key is one peer on a gateway
    peerroutes                      every peer's routed prefixes, fleet-wide (JSON)
    gwindex                         the two above were built for every peer (control/gwindex.py)
    peerstat/<org>/<peer>           the peer's counters as its gateway last reported them
    gwreport/<host>                 when that gateway last reported its peers' counters
    token/<sha256 hex>              a credential's record, keyed by the hash of its secret
    tokenid/<id>                    the hash of the token with that public ID (revocation)
"""

from __future__ import annotations

import hashlib

STREAMED_KINDS = frozenset({"org", "network", "app", "host", "hoststatus", "machine", "peer"})

COUNTER_NETWORK = "counter/network"
COUNTER_HOST = "counter/host"


def kind_of(key: str) -> str | None:
    """The entity kind of a key, or None for internal keys."""
    kind = key.split("/", 1)[0]
    return kind if kind in STREAMED_KINDS else None


def org(name: str) -> str:
    return f"org/{name}"


def network(org: str, name: str) -> str:
    return f"network/{org}/{name}"


def networks_of(org: str) -> str:
    return f"network/{org}/"


def netid(net_id: int) -> str:
    return f"netid/{net_id:08x}"


def app(org: str, name: str) -> str:
    return f"app/{org}/{name}"


def apps_of(org: str) -> str:
    return f"app/{org}/"


def host(name: str) -> str:
    return f"host/{name}"


HOSTS = "host/"


def host_status(name: str) -> str:
    return f"hoststatus/{name}"


def machine(org: str, app: str, machine_id: str) -> str:
    return f"machine/{org}/{app}/{machine_id}"


def machines_of(org: str, app: str | None = None) -> str:
    return f"machine/{org}/" if app is None else f"machine/{org}/{app}/"


MACHINES = "machine/"


def machine_id(machine_id: str) -> str:
    return f"mid/{machine_id}"


def machine_field(net_id: int, host_id: int, field: int) -> str:
    return f"mfield/{net_id:08x}/{host_id:08x}/{field:08x}"


def machine_fields_of(net_id: int, host_id: int) -> str:
    return f"mfield/{net_id:08x}/{host_id:08x}/"


def peer(org: str, name: str) -> str:
    return f"peer/{org}/{name}"


def peers_of(org: str) -> str:
    return f"peer/{org}/"


PEERS = "peer/"


def peer_slot(net_id: int, host_id: int) -> str:
    return f"pslot/{net_id:08x}/{host_id:08x}"


def peer_status(org: str, name: str) -> str:
    return f"peerstat/{org}/{name}"


def gateway_report(host: str) -> str:
    return f"gwreport/{host}"


def host_key(public_key: str) -> str:
    return f"hostkey/{hashlib.sha256(public_key.encode()).hexdigest()}"


def gateway_key(host: str, public_key: str) -> str:
    return f"gwkey/{host}/{hashlib.sha256(public_key.encode()).hexdigest()}"


PEER_ROUTES = "peerroutes"
OLD_GATEWAY_ROUTES = "gwroutes/"  # per gateway, before routes were unique fleet-wide
GATEWAY_INDEX = "gwindex"
GATEWAY_INDEX_VERSION = "2"  # "1": routes were indexed per gateway (gwroutes/<host>)


def guard(entity_key: str) -> str:
    return f"guard/{entity_key}"


def token(digest: str) -> str:
    return f"token/{digest}"


TOKENS = "token/"


def token_id(public_id: str) -> str:
    return f"tokenid/{public_id}"
