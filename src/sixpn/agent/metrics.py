"""Prometheus metrics of the agent (reconciliation, applied revision, peers, machines) and of
the DNS server it runs, read from plain counters only when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sixpn.agent.reconciler import Reconciler
from sixpn.core.hoststate import HostState


class AgentCollector(Collector):
    def __init__(self, reconciler: Reconciler, last: Callable[[], HostState | None]) -> None:
        self.reconciler = reconciler
        self.last = last

    def collect(self) -> Iterator[Metric]:
        s = self.reconciler.stats
        yield CounterMetricFamily("sixpn_agent_reconciles", "Reconcile runs", value=s.runs)
        yield CounterMetricFamily(
            "sixpn_agent_reconcile_failures", "Reconcile runs that failed", value=s.failures
        )
        yield CounterMetricFamily(
            "sixpn_agent_operations", "Kernel operations applied", value=s.ops_applied
        )
        yield CounterMetricFamily(
            "sixpn_agent_reconciles_unchanged",
            "Changes that left this host's desired state as applied (no kernel read)",
            value=s.unchanged,
        )
        yield GaugeMetricFamily(
            "sixpn_agent_reconcile_seconds", "Duration of the last reconcile", value=s.last_duration
        )
        yield GaugeMetricFamily(
            "sixpn_agent_applied_revision",
            "Store revision of the last applied desired state",
            value=s.applied_revision,
        )
        state = self.last()
        if state is not None:
            yield GaugeMetricFamily(
                "sixpn_agent_peers", "WireGuard peers", value=len(state.wg_peers)
            )
            yield GaugeMetricFamily(
                "sixpn_agent_machines", "Machines wired on this host", value=len(state.machines)
            )
