# sixpn: `make test` and `make demo` set up everything they need on a fresh Debian machine (root).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for the test suite (the machine has 2 cores; tests mostly wait on I/O).
JOBS ?= 4

.PHONY: all deps sysdeps venv test check lint format typecheck demo clean

all: check

sysdeps:
	@scripts/sysdeps.sh

$(STAMP): pyproject.toml setup.py src/sixpn/dns/_fastpath.c
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || scripts/sysdeps.sh python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

deps: sysdeps venv

test: deps
	$(BIN)/pytest -n $(JOBS) --dist loadfile -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy src

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: deps lint typecheck
	$(BIN)/pytest -n $(JOBS) --dist loadfile -q

# The lab demo (SPEC 8; docs/lab.md): brings the default lab up in /var/lib/sixpn-lab, shows
# what the fabric does, and takes it down (`make demo DEMO_ARGS=--keep` leaves it up).
demo: deps
	$(BIN)/sixpn lab demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# DNS benchmark (SPEC 9): sixpn against Unbound and Knot DNS serving the same records (10k
# machines in the store), same run (root; see bench/README.md), ~7 min.
# `make bench-dns BENCH_ARGS=--quick` for a smoke run.
.PHONY: bench-dns
bench-dns: venv
	@scripts/sysdeps.sh unbound knot dnsperf dnsutils util-linux
	$(BIN)/python bench/dns_bench.py $(BENCH_ARGS)

# Data-path benchmark (SPEC 9): sixpn's fabric against plain wireguard-go between two
# namespaces of its own, and propagation times, same run (root; see bench/README.md), ~10 min.
# `make bench-datapath BENCH_ARGS=--quick` for a smoke run.
.PHONY: bench-datapath
bench-datapath: venv
	@scripts/sysdeps.sh iperf3 wireguard-go wireguard-tools nftables iputils-ping util-linux
	$(BIN)/python bench/datapath_bench.py $(BENCH_ARGS)

# The throughput verdict alone, with enough rounds to tell ~96% from 95% on a 2-core machine
# (200 rounds of 10 s, no paced run, no propagation lab: ~80 minutes; docs/benchmarks.md).
.PHONY: bench-datapath-confirm
bench-datapath-confirm:
	$(MAKE) bench-datapath BENCH_ARGS="--rounds 200 --seconds 10 --paced-rate 0 --pings 50 --creates 0"

# Where the data path's CPU goes, fabric against plain wireguard-go: perf record -a -g during
# paced and full-rate iperf3 runs of both setups, alternated (root; ~3-5 minutes;
# bench/datapath_perf.py, docs/benchmarks.md). BENCH_ARGS=--variant-no-rps adds the fabric
# without receive steering.
.PHONY: bench-datapath-perf
bench-datapath-perf: venv
	@scripts/sysdeps.sh linux-perf iperf3 wireguard-go wireguard-tools nftables iputils-ping util-linux
	$(BIN)/python bench/datapath_perf.py $(BENCH_ARGS)

# Agent resync benchmark: one full read of a host's kernel state by the agent, by machines per
# host, against iproute2 + nft + wg reading the same, same run (root; see bench/README.md).
.PHONY: bench-resync
bench-resync: venv
	@scripts/sysdeps.sh wireguard-go wireguard-tools nftables iproute2 util-linux
	$(BIN)/python bench/resync_bench.py $(BENCH_ARGS)

# TCP forwarder benchmark: `sixpn forward` against socat on loopback, same run: one stream's
# throughput, connections per second, CPU per MB and per connection (see bench/README.md).
.PHONY: bench-forward
bench-forward: venv
	@scripts/sysdeps.sh socat util-linux
	$(BIN)/python bench/forward_bench.py $(BENCH_ARGS)

# WireGuard peers on one gateway (SPEC 9 scale): installing 1, 100 and 5,000 peers with the
# agent's adapter against `wg setconf`, one peer added/removed at 5,000, memory, and a lab's
# API call -> installed -> a laptop's first ping (root; see bench/README.md), ~15 min.
# `make bench-peers BENCH_ARGS=--quick` for a smoke run.
.PHONY: bench-peers
bench-peers: venv
	@scripts/sysdeps.sh wireguard-go wireguard-tools nftables iproute2 iputils-ping util-linux
	$(BIN)/python bench/peers_bench.py $(BENCH_ARGS)

# PostgreSQL through the fabric and `sixpn forward` against the same query inside the VPC, same
# run: a lab with `sixpn lab vpc`, pgbench from three places (root; see bench/README.md), ~2 min.
# `make bench-vpc BENCH_ARGS=--quick` for a smoke run.
.PHONY: bench-vpc
bench-vpc: venv
	@scripts/sysdeps.sh postgresql postgresql-client openresolv wireguard-go wireguard-tools nftables iproute2 iputils-ping
	$(BIN)/python bench/vpc_bench.py $(BENCH_ARGS)

# Control plane on SQLite and on etcd (1 and 2 replicas over a 3-member cluster): machine creates
# at 1/8/32 clients, 400 concurrent org creates before and after per-replica ID blocks, write to
# change-stream follower, failover gaps (etcd leader or a replica killed), same run (see
# bench/README.md), ~5 min. `make bench-ha BENCH_ARGS=--quick` for a smoke run (~1 min).
.PHONY: bench-ha
bench-ha: venv
	@scripts/sysdeps.sh etcd-server etcd-client
	$(BIN)/python bench/ha_bench.py $(BENCH_ARGS)

# Scale (SPEC 9): generated fleets of 1k, 10k and 100k machines (bench/fleetgen.py, written into
# SQLite): the DNS full build and its resident memory, DNS and agent cost per change, in fresh
# processes against a real server (see bench/README.md), ~3-4 min.
# `make bench-scale BENCH_ARGS=--quick` for a smoke run (1k and 10k, ~40 s).
.PHONY: bench-scale
bench-scale: venv
	$(BIN)/python bench/scale_bench.py $(BENCH_ARGS)

# Propagation at rate (SPEC 9): in a 5-host lab while other clients change machines at 200/s,
# from the API call to every host's DNS answering and to the first packet to a new machine, and no
# change lost or out of order; CDF plot to docs/img/propagation.png (root; see bench/README.md),
# ~1.5 min. `make bench-propagation BENCH_ARGS=--quick` for a smoke run (~20 s; its plot stays in
# bench/out).
PROP_PLOT ?= docs/img/propagation.png
.PHONY: bench-propagation
bench-propagation: venv
	@scripts/sysdeps.sh wireguard-go wireguard-tools nftables iproute2 iputils-ping util-linux
	$(BIN)/python bench/propagation_bench.py $(if $(findstring --quick,$(BENCH_ARGS)),,--plot $(PROP_PLOT)) $(BENCH_ARGS)

# The control plane's CPU per machine create/stop/destroy at 200 changes/s with 6 change-stream
# followers, no lab: a real server on SQLite against the same at git HEAD (or BASELINE=REV),
# alternated, 3 rounds (see bench/README.md), ~2.5 min.
BASELINE ?= HEAD
.PHONY: bench-controlplane
bench-controlplane: venv
	$(BIN)/python bench/controlplane_cpu.py --baseline $(BASELINE) --rounds 3 --seconds 15 $(BENCH_ARGS)

# Faults (SPEC 10): in a 3-host lab, each fault injected for real (control plane killed, an agent
# killed mid-batch, a cable pulled for 30 s, an address moved, a host rebooted), the time until
# every check passes again and the packets two steady flows lost (root; see bench/README.md),
# ~6 min. `make bench-faults BENCH_ARGS=--quick` for a smoke run (~1 min).
.PHONY: bench-faults
bench-faults: venv
	@scripts/sysdeps.sh wireguard-go wireguard-tools nftables iproute2 iputils-ping dnsutils util-linux
	$(BIN)/python bench/faults_bench.py $(BENCH_ARGS)

# Every benchmark above in sequence (`make bench-<name>` each, output in bench/out/all-<stamp>/),
# then one summary table of SPEC 9's targets (figure, anchor, verdict), plots (matplotlib, into
# docs/img) and a section appended to docs/benchmarks.md (see bench/README.md): over an hour.
# `make bench BENCH_ARGS="--only dns,scale"` to choose; `BENCH_ARGS="--quick --no-docs"` for a
# smoke run that leaves docs/ alone.
.PHONY: bench
bench: venv
	$(BIN)/python bench/bench_all.py $(BENCH_ARGS)
