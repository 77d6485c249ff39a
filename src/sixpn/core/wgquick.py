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
"""

from __future__ import annotations

from ipaddress import AddressValueError, IPv6Address, IPv6Network, NetmaskValueError

from sixpn.core.wireguard import validate_endpoint, validate_key
from sixpn.model.errors import InvalidInput

PEER_PREFIX_LEN = 120  # a peer's interface address is inside its /120 (SPEC section 2)
DEFAULT_KEEPALIVE = 15


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
) -> str:
    """The wg-quick file (see the module docstring), ending with a newline.

    ``private_key`` None: the PrivateKey line is a commented placeholder naming ``public_key``.
    ``header``: comment lines put before ``[Interface]`` (which peer, which network).
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
    lines += [
        f"Address = {peer_address}/{PEER_PREFIX_LEN}",
        f"DNS = {dns_address}",
        "",
        "[Peer]",
        f"PublicKey = {gateway_public_key}",
        f"AllowedIPs = {allowed}",
        f"Endpoint = {endpoint}",
        f"PersistentKeepalive = {keepalive}",
    ]
    return "\n".join(lines) + "\n"
