"""``LinuxHost``: the agent's port to the kernel (``agent.ports.HostPort``), over the adapters.

``read`` assembles the actual :class:`HostState` from the kernel; ``apply`` performs one
``core.plan`` operation; ``teardown`` removes exactly what the agent owns in this namespace
(and the machine namespaces it made). The rule that holds: after applying
``plan(read(), desired)``, ``read()`` returns ``desired`` again, so the next plan is empty.

Choices where the state type is silent:

- ``nft_rules_ok`` covers the host's whole fixed data-path configuration: the table's rules,
  IPv6 forwarding in this namespace and the routing rule of routed peering (6PN's packets
  look up ``PEERING_TABLE`` first). Any of them drifting makes the planner emit
  ``ReplaceNftTable``, which rewrites the table and puts the other two back.
- if this host's interface is absent but another ``sxw*`` link exists (the host ID changed),
  ``read`` reports that one, so that the planner removes it.
- peers are set on this host's interface (``SetPeers`` carries no interface name), one
  ``wg set`` per batch (``wg.set_peers``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import assert_never

from sixpn.agent.linux import hostnet, links, nft, wg
from sixpn.agent.ports import PeerStats
from sixpn.core.hoststate import (
    MACHINE_NETNS_PREFIX,
    WG_IF_PREFIX,
    HostState,
    MachineLink,
)
from sixpn.core.plan import (
    AddAddress,
    AddPairs,
    AddPeered,
    AddRoute,
    AddSources,
    EnsureWg,
    Op,
    RemoveAddress,
    RemovePairs,
    RemovePeered,
    RemovePeers,
    RemoveRoute,
    RemoveSources,
    RemoveStrayLink,
    RemoveWg,
    ReplaceNftTable,
    SetPeers,
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

    def start(self) -> None:
        """Receive steering on this host's interface if it exists already: the setting lives
        only as long as the interface, and an agent restart keeps the interface (and the
        traffic through it), so an interface made by an older agent would never get it."""
        if self.wg_ifname in self._wg_links():
            wg.steer_receive(self.wg_ifname)

    # -- reading -----------------------------------------------------------------------------

    def read(self) -> HostState:
        with links.snapshot("reading the host's links") as kernel:
            ifname = self._present_wg(kernel.names(WG_IF_PREFIX))
            machines = kernel.machines()
            aliases = frozenset(kernel.machine_aliases())
            strays = kernel.stray_machine_links()
            routes = kernel.routes()
            service_addresses = kernel.service_addresses()
        listen_port, peers = (wg.read(ifname) if ifname else None) or (0, frozenset())
        table = nft.read(self.wg_ifname)
        return HostState(
            wg_ifname=ifname,
            listen_port=listen_port,
            wg_peers=peers,
            service_addresses=service_addresses,
            machines=machines,
            routes=routes,
            pairs=table.pairs,
            sources=table.sources,
            peered=table.peered,
            nft_rules_ok=(
                table.rules_ok and hostnet.forwarding_enabled() and hostnet.peering_rule_present()
            ),
            partial_machines=aliases - machines,
            stray_links=strays,
        )

    def peer_stats(self) -> list[PeerStats]:
        return [
            PeerStats(
                row["public_key"],
                row["endpoint"],
                row["latest_handshake"],
                row["rx_bytes"],
                row["tx_bytes"],
            )
            for row in wg.peer_stats(self.wg_ifname)
        ]

    def _present_wg(self, present: list[str]) -> str | None:
        if self.wg_ifname in present:
            return self.wg_ifname
        return present[0] if present else None

    # -- applying ----------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        match op:
            case EnsureWg(ifname=ifname, listen_port=port):
                wg.ensure_interface(ifname, port, self.private_key_path, self.backend)
                hostnet.enable_forwarding()
                hostnet.ensure_peering_rule()
            case RemoveWg(ifname=ifname):
                wg.remove_interface(ifname)
            case SetPeers(peers=peers):
                wg.set_peers(self.wg_ifname, peers)
            case RemovePeers(public_keys=keys):
                wg.remove_peers(self.wg_ifname, keys)
            case AddAddress(address=address):
                hostnet.add_address(address)
            case RemoveAddress(address=address):
                hostnet.remove_address(address)
            case WireMachine(link=link):
                links.wire_machine(link, create_netns=self.create_netns)
            case UnwireMachine(link=link):
                links.unwire_machine(link, delete_netns=self._made_here(link))
            case RemoveStrayLink(ifname=ifname):
                links.delete_machine_link(ifname)
            case AddRoute(route=route):
                hostnet.add_route(route)
            case RemoveRoute(route=route):
                hostnet.remove_route(route)
            case ReplaceNftTable(pairs=pairs, sources=sources, peered=peered):
                nft.replace_table(self.wg_ifname, pairs, sources, peered)
                hostnet.enable_forwarding()
                hostnet.ensure_peering_rule()
            case AddPairs(networks=networks):
                nft.add_pairs(networks)
            case RemovePairs(networks=networks):
                nft.remove_pairs(networks)
            case AddSources(sources=sources):
                nft.add_sources(sources)
            case RemoveSources(sources=sources):
                nft.remove_sources(sources)
            case AddPeered(peerings=peerings):
                nft.add_peered(peerings)
            case RemovePeered(peerings=peerings):
                nft.remove_peered(peerings)
            case _:
                assert_never(op)

    def _made_here(self, link: MachineLink) -> bool:
        """Whether unwiring ``link`` removes its namespace: only one the agent makes itself
        (``sixpn-m-*``); an orchestrator's namespace is never removed, whatever is in it."""
        return self.create_netns and link.netns.startswith(MACHINE_NETNS_PREFIX)

    # -- teardown ----------------------------------------------------------------------------

    def teardown(self) -> None:
        """Remove what the agent owns here; go on past failures, then raise the first one.

        Machine namespaces are removed only if they are wired to this host (another host's
        agent may run on the same machine and own other ``sixpn-m-*`` namespaces).
        """
        steps: list[Callable[[], None]] = []
        for link in links.machine_aliases():
            steps.append(partial(links.unwire_machine, link, delete_netns=self._made_here(link)))
        steps.append(links.delete_machine_links)  # any left: partial wirings without an alias
        for ifname in sorted({self.wg_ifname, *self._wg_links()}):
            steps.append(partial(wg.remove_interface, ifname))
        steps += [partial(hostnet.remove_route, r) for r in hostnet.read_routes()]
        steps += [partial(hostnet.remove_address, a) for a in hostnet.read_service_addresses()]
        steps.append(hostnet.remove_peering_rule)
        steps.append(nft.delete_table)  # last: isolation holds while machines are still wired
        errors: list[SixpnError] = []
        for step in steps:
            try:
                step()
            except SixpnError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _wg_links(self) -> list[str]:
        with links.snapshot("listing WireGuard links") as kernel:
            return kernel.names(WG_IF_PREFIX)
