"""The Linux adapters of the host agent: the only code that touches the kernel.

They act on the network namespace the agent runs in ("the host's namespace"), entering a
machine's namespace only to wire it. Everything they create carries a name the agent owns
(``core.hoststate``): ``sx*`` links, ``sixpn-m-*`` namespaces, routes with ``ROUTE_PROTO``, the
``inet sixpn`` nftables table, ``fdaa::/16`` addresses on ``lo``. Foreign exceptions (netlink,
subprocess) are translated once, here, into ``sixpn.model.errors``.
"""
