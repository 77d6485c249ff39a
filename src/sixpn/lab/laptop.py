"""A "laptop" on the lab's underlay: a WireGuard peer brought up by stock wg-quick (SPEC 8).

``sixpn lab peer NAME --org ORG`` does what a developer does on a laptop: ``sixpn wireguard
create`` (the real command: key pair made locally, only the public key sent, a 0600 wg-quick
file written), then ``wg-quick up FILE``, here inside a namespace of its own joined to the
lab's underlay bridge like a host, so the tunnel crosses the same wire as the mesh.

Two things a real laptop has that a namespace lacks, provided here and nowhere else:

- wg-quick's ``DNS =`` line calls ``resolvconf``. The lab puts a small ``resolvconf`` first on
  wg-quick's ``PATH`` that writes the nameservers into ``/etc/netns/<laptop>/resolv.conf``,
  which ``ip netns exec`` then gives every command in the laptop, as resolvconf would for
  ``/etc/resolv.conf``. The machine's real ``/etc/resolv.conf`` is never touched.
- The interface is named after the file (wg-quick's rule): ``sxl<lab id><n>``, unique on the
  machine because wireguard-go's control sockets share ``/var/run/wireguard`` across namespaces.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sixpn.lab import netns

if TYPE_CHECKING:
    from sixpn.lab.fabric import Lab

FIRST_ADDRESS = 100  # laptops get <underlay>.100 and up; hosts .11 to .42

RESOLVCONF = """#!/bin/sh
# resolvconf for a sixpn lab laptop (see sixpn/lab/laptop.py): wg-quick's DNS= lands in the
# laptop namespace's resolv.conf ($SIXPN_LAB_RESOLV_CONF), never in the machine's own.
set -e
case "$1" in
    -a) cat > "$SIXPN_LAB_RESOLV_CONF" ;;
    -d) rm -f "$SIXPN_LAB_RESOLV_CONF" ;;
    *) echo "lab resolvconf: unsupported: $*" >&2; exit 1 ;;
esac
"""


def bring_up(lab: Lab, name: str, org: str, network: str, region: str | None) -> dict[str, Any]:
    """Create peer ``name`` with ``sixpn wireguard create`` and bring it up in a new laptop
    namespace with ``wg-quick up``; its record (also kept in lab.json for ``down``)."""
    from sixpn.lab.fabric import UNDERLAY_NET, LabError

    state = lab.state
    assert state is not None
    if name in state.laptops:
        raise LabError(f"peer {name!r} already has a laptop in this lab")
    n = len(state.laptops) + 1
    ns = f"{netns.PREFIX}l{state.lab_id}-{name}"
    ifname = f"sxl{state.lab_id}{n:x}"
    folder = lab.root / "laptops"
    folder.mkdir(exist_ok=True)
    conf = folder / f"{ifname}.conf"
    region = region or next((h["region"] for h in state.hosts.values() if h["gateway"]), None)
    if region is None:
        raise LabError("the lab has no gateway host: a peer needs one (gateway = true)")
    create = [sys.executable, "-m", "sixpn", "wireguard", "create", org, region, name, str(conf)]
    created = subprocess.run(
        [*create, "--network", network],
        env=lab.cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if created.returncode != 0:
        raise LabError(f"sixpn wireguard create: {created.stderr.strip()}")

    address = f"{UNDERLAY_NET}.{FIRST_ADDRESS + n}"
    record = {"ns": ns, "ifname": ifname, "conf": str(conf), "underlay": address, "org": org}
    state.laptops[name] = record
    lab.add_namespace(ns)
    lab.plug_into_underlay(ns, f"l{state.lab_id}{n}", address)

    shim = folder / "bin" / "resolvconf"
    if not shim.exists():
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(RESOLVCONF)
        shim.chmod(0o755)
    etc = Path("/etc/netns") / ns
    etc.mkdir(parents=True, exist_ok=True)
    env = os.environ | {
        "PATH": f"{shim.parent}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "SIXPN_LAB_RESOLV_CONF": str(etc / "resolv.conf"),
        "WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go",
    }
    up = subprocess.run(
        netns.exec_argv(ns, ["wg-quick", "up", str(conf)]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    record["wg_quick"] = up.stderr.strip()
    if up.returncode != 0:
        raise LabError(f"wg-quick up {conf} in {ns}: {up.stderr.strip()[-800:]}")
    return {"name": name, **record, "created": created.stdout.strip()}
