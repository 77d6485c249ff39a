"""The wg-quick file of a WireGuard peer (SPEC section 5). Pure: values in, text out.

The file, for stock ``wg-quick up FILE`` on Linux::

    [Interface]
    PrivateKey = <the peer's private key>
    Address = <peer address>/120
    DNS = <net48>::3

    [Peer]
    PublicKey = <the gateway's public key>
    AllowedIPs = <net48>::/48
    Endpoint = <gateway address>:<port>
    PersistentKeepalive = 15

Rules that hold here: every value is checked before it is written (keys are WireGuard keys,
addresses and prefixes parse, the endpoint is ADDRESS:PORT), so no input can add a line or a
section to the file; AllowedIPs is the network's /48 and nothing else (a peer never routes
anything else through the gateway, so it cannot shadow the peer's own networks); without a
private key (``--public-key``, bring your own key) the PrivateKey line is a comment saying what
to put there, and ``wg-quick`` refuses the file until it is filled in.

Two options for a peer that is a server rather than a laptop (the instance inside an external
network, SPEC 6): ``use_dns=False`` turns the DNS line into a comment (wg-quick's DNS= takes
over the machine's resolver through ``resolvconf``: an EC2 instance must keep resolving its
RDS endpoint with the VPC's resolver), and ``mtu`` adds an ``MTU =`` line (wg-quick otherwise
derives it from the outgoing interface: 8921 on an EC2 instance's 9001-byte interface, larger
than the internet path to the gateway).
"""

from __future__ import annotations

from ipaddress import AddressValueError, IPv6Address, IPv6Network, NetmaskValueError

from sixpn.core.wireguard import validate_endpoint, validate_key
from sixpn.model.errors import InvalidInput

PEER_PREFIX_LEN = 120  # a peer's interface address is inside its /120 (SPEC section 2)
DEFAULT_KEEPALIVE = 15
MIN_MTU, MAX_MTU = 1280, 9000  # IPv6's minimum; a jumbo frame less the tunnel's overhead


def _address(value: IPv6Address | str, field: str) -> IPv6Address:
    try:
        return IPv6Address(value)
    except (AddressValueError, ValueError) as exc:
        raise InvalidInput(f"{field} {value!r}: not an IPv6 address", field=field) from exc


def _network(value: IPv6Network | str, field: str) -> IPv6Network:
    try:
        return IPv6Network(value)
    except (AddressValueError, NetmaskValueError, ValueError) as exc:
        raise InvalidInput(f"{field} {value!r}: not an IPv6 prefix", field=field) from exc


def _comment(text: str) -> list[str]:
    return [f"# {line}".rstrip() for line in text.splitlines()]


def render_wg_quick(
    private_key: str | None,
    address: IPv6Address | str,
    dns: IPv6Address | str,
    gateway_public_key: str,
    allowed_ips: IPv6Network | str,
    endpoint: str,
    keepalive: int = DEFAULT_KEEPALIVE,
    *,
    header: str = "",
    public_key: str | None = None,
    use_dns: bool = True,
    mtu: int | None = None,
) -> str:
    """The wg-quick file (see the module docstring), ending with a newline.

    ``private_key`` None: the PrivateKey line is a commented placeholder naming ``public_key``.
    ``header``: comment lines put before ``[Interface]`` (which peer, which network).
    ``use_dns`` False: the DNS line is a comment; ``mtu``: an ``MTU =`` line.
    """
    if private_key is not None:
        validate_key(private_key, field="private_key")
    if public_key is not None:
        validate_key(public_key, field="public_key")
    validate_key(gateway_public_key, field="gateway_public_key")
    validate_endpoint(endpoint)
    if isinstance(keepalive, bool) or not isinstance(keepalive, int) or not 0 <= keepalive <= 65535:
        raise InvalidInput(
            f"keepalive {keepalive!r}: must be 0 to 65535 seconds", field="keepalive"
        )
    if mtu is not None and (
        isinstance(mtu, bool) or not isinstance(mtu, int) or not MIN_MTU <= mtu <= MAX_MTU
    ):
        raise InvalidInput(f"mtu {mtu!r}: must be {MIN_MTU} to {MAX_MTU}", field="mtu")
    peer_address = _address(address, "address")
    dns_address = _address(dns, "dns")
    allowed = _network(allowed_ips, "allowed_ips")

    lines = _comment(header)
    lines.append("[Interface]")
    if private_key is not None:
        lines.append(f"PrivateKey = {private_key}")
    else:
        whose = f" of public key {public_key}" if public_key else ""
        lines.append(f"# PrivateKey = <your private key{whose}: sixpn never sees it>")
    lines.append(f"Address = {peer_address}/{PEER_PREFIX_LEN}")
    if use_dns:
        lines.append(f"DNS = {dns_address}")
    else:
        lines.append(f"# DNS = {dns_address}  (left out: .internal names resolve there)")
    if mtu is not None:
        lines.append(f"MTU = {mtu}")
    lines += [
        "",
        "[Peer]",
        f"PublicKey = {gateway_public_key}",
        f"AllowedIPs = {allowed}",
        f"Endpoint = {endpoint}",
        f"PersistentKeepalive = {keepalive}",
    ]
    return "\n".join(lines) + "\n"
