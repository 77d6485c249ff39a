"""`sixpn forward` (SPEC 6): ``address`` parses LISTEN and TARGET, ``relay`` moves the bytes.

Importers use this package's names; the split is by concept (pure parsing vs. sockets).
"""

from sixpn.forward.address import Endpoint, check_limits, parse_listen, parse_target
from sixpn.forward.relay import DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS, Forwarder, serve

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_CONNECTIONS",
    "Endpoint",
    "Forwarder",
    "check_limits",
    "parse_listen",
    "parse_target",
    "serve",
]
