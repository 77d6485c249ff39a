#!/usr/bin/env bash
# Installs the Debian packages sixpn needs, only those that are missing (idempotent, quiet when
# there is nothing to do). --no-install-recommends: wireguard-tools' recommends would pull in a
# kernel image. Extra package names given as arguments are installed too.
set -euo pipefail

packages=(
  iproute2      # ip netns, veth: the lab and the agent's tests
  sqlite3       # inspecting the control plane's store by hand
  dnsutils      # dig: the DNS tests ask the real server with the real client
  wireguard-tools  # wg, wg-quick
  wireguard-go  # the userspace WireGuard, where the kernel has no module
  nftables      # nft: isolation
  iputils-ping  # ping from machines in the tests and the demo
  curl          # the demo's HTTP requests between machines
  iperf3        # data-path benchmark
  tcpdump       # the tests' capture of the underlay
  gcc           # builds the DNS server's C fast path at install time
  "$@"
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "sysdeps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
