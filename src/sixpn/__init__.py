"""sixpn: a self-hostable private IPv6 network fabric (6PN) for a fleet of hosts."""

__version__ = "0.1.0"
