"""Prometheus view of the DNS server's plain-integer counters, read only when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sixpn.dns.server import DnsServer

RCODE_NAMES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


class DnsCollector(Collector):
    def __init__(self, server: DnsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        c = self.server.counters
        yield CounterMetricFamily("sixpn_dns_queries", "DNS queries received", value=c.queries)
        yield CounterMetricFamily(
            "sixpn_dns_dropped",
            "Queries dropped (unreadable, or unsendable answer)",
            value=c.dropped,
        )
        yield CounterMetricFamily(
            "sixpn_dns_forwarded", "Queries forwarded upstream", value=c.forwarded
        )
        answers = CounterMetricFamily(
            "sixpn_dns_answers", "Answers sent, by rcode", labels=["rcode"]
        )
        for code, count in enumerate(c.rcodes):
            if count:
                answers.add_metric([RCODE_NAMES.get(code, str(code))], count)
        yield answers
        yield CounterMetricFamily(
            "sixpn_dns_failures",
            "Unexpected exceptions on the UDP path (logged; it goes on serving)",
            value=c.failures,
        )
        tcp = self.server.tcp
        yield GaugeMetricFamily("sixpn_dns_tcp_connections", "Open TCP connections", value=len(tcp))
        at_cap = CounterMetricFamily(
            "sixpn_dns_tcp_closed_at_cap",
            "TCP connections closed at the cap: the least recently active one, to make room"
            " (oldest), or the new one, every open one being answered (new)",
            labels=["which"],
        )
        at_cap.add_metric(["oldest"], tcp.evicted)
        at_cap.add_metric(["new"], tcp.refused)
        yield at_cap
        zone = self.server.zone.counters()
        yield GaugeMetricFamily("sixpn_dns_networks", "Networks in the zone", value=zone.networks)
        yield GaugeMetricFamily("sixpn_dns_machines", "Machines in the zone", value=zone.machines)
        yield GaugeMetricFamily(
            "sixpn_dns_cached_answers", "Encoded answers kept", value=zone.cached
        )
        fwd = self.server.forwarder
        if fwd is not None:
            yield CounterMetricFamily(
                "sixpn_dns_forward_servfail",
                "Forwarded queries answered SERVFAIL",
                value=fwd.counters.servfail,
            )
