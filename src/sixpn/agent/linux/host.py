"""``LinuxHost``: the agent's port to the kernel (``agent.ports.HostPort``), over the adapters.

``read`` assembles the actual :class:`HostState` from the kernel; ``apply`` performs one
``core.plan`` operation; ``teardown`` removes exactly what the agent owns in this namespace
(and the machine namespaces it made). The rule that holds: after applying
``plan(read(), desired)``, ``read()`` returns ``desired`` again, so the next plan is empty.

Choices where the state type is silent:

- ``nft_rules_ok`` covers the host's whole fixed data-path configuration: the table's rules
  *and* IPv6 forwarding in this namespace. Either drifting makes the planner emit
  ``ReplaceNftTable``, which rewrites the table and turns forwarding back on.
- if this host's interface is absent but another ``sxw*`` link exists (the host ID changed),
  ``read`` reports that one, so that the planner removes it.
- peers are set on this host's interface (``SetPeer`` carries no interface name).
"""

from __future__ import annotations

from pathlib import Path

from pyroute2 import IPRoute

from sixpn.agent.linux import links, nft, wg
from sixpn.core.addressing import SIXPN_PREFIX
from sixpn.core.hoststate import (
    MACHINE_NETNS_PREFIX,
    ROUTE_PROTO,
    WG_IF_PREFIX,
    HostState,
    MachineLink,
)
from sixpn.core.plan import (
    AddAddress,
    AddPairs,
    AddRoute,
    EnsureWg,
    Op,
    RemoveAddress,
    RemovePairs,
    RemovePeer,
    RemoveRoute,
    RemoveWg,
    ReplaceNftTable,
    SetPeer,
    UnwireMachine,
    WireMachine,
)
from sixpn.model.errors import SixpnError


class LinuxHost:
    """The data path of the host whose namespace this process runs in."""

    def __init__(
        self, wg_ifname: str, private_key_path: Path, backend: str, *, create_netns: bool = True
    ) -> None:
        self.wg_ifname = wg_ifname
        self.private_key_path = Path(private_key_path)
        self.backend = backend
        self.create_netns = create_netns

    # -- reading -----------------------------------------------------------------------------

    def read(self) -> HostState:
        ifname = self._present_wg()
        listen_port, peers = (wg.read(ifname) if ifname else None) or (0, frozenset())
        pairs, rules_ok = nft.read(self.wg_ifname)
        return HostState(
            wg_ifname=ifname,
            listen_port=listen_port,
            wg_peers=peers,
            service_addresses=links.read_service_addresses(),
            machines=links.read_machines(),
            routes=links.read_routes(),
            pairs=pairs,
            nft_rules_ok=rules_ok and links.forwarding_enabled(),
        )

    def _present_wg(self) -> str | None:
        with IPRoute() as ipr:
            names = [str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()]
        if self.wg_ifname in names:
            return self.wg_ifname
        others = sorted(n for n in names if n.startswith(WG_IF_PREFIX))
        return others[0] if others else None

    # -- applying ----------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        match op:
            case EnsureWg(ifname=ifname, listen_port=port):
                wg.ensure_interface(ifname, port, self.private_key_path, self.backend)
                links.enable_forwarding()
            case RemoveWg(ifname=ifname):
                wg.remove_interface(ifname)
            case SetPeer(peer=peer):
                wg.set_peer(self.wg_ifname, peer)
            case RemovePeer(public_key=key):
                wg.remove_peer(self.wg_ifname, key)
            case AddAddress(address=address):
                links.add_address(address)
            case RemoveAddress(address=address):
                links.remove_address(address)
            case WireMachine(link=link):
                links.wire_machine(link, create_netns=self.create_netns)
            case UnwireMachine(link=link):
                links.unwire_machine(link, delete_netns=self._made_here(link))
            case AddRoute(route=route):
                links.add_route(route)
            case RemoveRoute(route=route):
                links.remove_route(route)
            case ReplaceNftTable(pairs=pairs):
                nft.replace_table(self.wg_ifname, pairs)
                links.enable_forwarding()
            case AddPairs(networks=networks):
                nft.add_pairs(networks)
            case RemovePairs(networks=networks):
                nft.remove_pairs(networks)

    def _made_here(self, link: MachineLink) -> bool:
        return self.create_netns and link.netns.startswith(MACHINE_NETNS_PREFIX)

    # -- teardown ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove what the agent owns here; go on past failures, then raise the first one.

        Machine namespaces are removed only if they are wired to this host (another host's
        agent may run on the same machine and own other ``sixpn-m-*`` namespaces).
        """
        errors: list[SixpnError] = []

        def attempt(step: object, *args: object, **kwargs: object) -> None:
            assert callable(step)
            try:
                step(*args, **kwargs)
            except SixpnError as exc:
                errors.append(exc)

        attempt(nft.delete_table)
        for link in links.machine_aliases():
            attempt(links.unwire_machine, link, delete_netns=self._made_here(link))
        for ifname in links.machine_ifnames():  # links without our alias: partial wirings
            stray = MachineLink("?", "", ifname, SIXPN_PREFIX.network_address, SIXPN_PREFIX)
            attempt(links.unwire_machine, stray, delete_netns=False)
        with IPRoute() as ipr:
            names = [str(m.get_attr("IFLA_IFNAME")) for m in ipr.get_links()]
        for ifname in sorted({self.wg_ifname} | {n for n in names if n.startswith(WG_IF_PREFIX)}):
            attempt(wg.remove_interface, ifname)
        for route in links.read_routes():
            attempt(links.remove_route, route)
        for address in links.read_service_addresses():
            attempt(links.remove_address, address)
        assert ROUTE_PROTO  # routes are found by it in links.read_routes
        if errors:
            raise errors[0]
