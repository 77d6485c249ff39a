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
  openresolv    # resolvconf: wg-quick's DNS= line in the lab's laptops (the real one)
  wireguard-go  # the userspace WireGuard, where the kernel has no module
  nftables      # nft: isolation
  iputils-ping  # ping from machines in the tests and the demo
  curl          # the demo's HTTP requests between machines
  iperf3        # data-path benchmark
  tcpdump       # the tests' capture of the underlay
  gcc           # builds the DNS server's C fast path at install time
  postgresql    # the server of `sixpn lab vpc` (its "RDS"; clusters of its own, see below)
  postgresql-client  # psql: machines query that database in the tests and the demo
  etcd-server   # etcd (3.4 on Debian 12): the etcd store's tests start real clusters of their own
  etcd-client   # etcdctl: inspecting an etcd store by hand; the store's auth test sets users
  "$@"
)

# wireguard-go from 0.0.20230223 on hands the kernel's TUN offloads (TSO/GRO) whole TCP segments
# and batches its UDP I/O; Debian 12's 0.0.20220316 moves one packet per system call, at a fifth
# of the throughput here (docs/benchmarks.md). On Debian 12 the newer one is Debian 13's package
# (it needs only libc6 >= 2.34), fetched through this machine's own Debian mirror.
WG_GO_MIN=0.0.20230223

export DEBIAN_FRONTEND=noninteractive

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

wireguard_go_is_old() {
  local have
  have=$(dpkg-query -W -f='${Version}' wireguard-go 2>/dev/null) || return 1
  dpkg --compare-versions "$have" lt "$WG_GO_MIN"
}

# Debian 13's wireguard-go on Debian 12, with a private apt configuration: the system's sources,
# lists and caches are left as they were.
newer_wireguard_go() {
  local codename mirror tmp
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [ "$codename" != bookworm ]; then
    echo "sysdeps: wireguard-go is older than $WG_GO_MIN (slow); install a newer one by hand" >&2
    return 0
  fi
  mirror=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' |
    awk -v r="$codename" '$1 == r { print $2; exit }')
  [ -n "$mirror" ] || { echo "sysdeps: no Debian mirror for $codename in apt's sources" >&2; return 1; }
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  echo "deb $mirror trixie main" >"$tmp/sources.list"
  local opts=(-o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$tmp/lists" -o Dir::Cache="$tmp/cache" -o APT::Sandbox::User=root)
  echo "sysdeps: wireguard-go from Debian 13 (TUN offloads; Debian 12's is $(dpkg-query -W -f='${Version}' wireguard-go))"
  if apt-get "${opts[@]}" update -qq && (cd "$tmp" && apt-get "${opts[@]}" download -qq wireguard-go); then
    apt-get install -y -qq --no-install-recommends "$tmp"/wireguard-go_*.deb >/dev/null
  else
    echo "sysdeps: could not fetch Debian 13's wireguard-go; keeping the slower one" >&2
  fi
  rm -rf "$tmp"
}

# `sixpn lab vpc` runs PostgreSQL clusters of its own (initdb into a directory per lab): the
# "main" cluster the server package creates on install (and starts on port 5432 where systemd
# runs) is not needed. postgresql-common's postinst skips it when its createcluster.conf says
# create_main_cluster = false; that file is installed through ucf, which keeps one that exists
# already when UCF_FORCE_CONFFOLD is set (the package's version goes next to it, .ucf-dist).
# So: only when postgresql-common is not installed yet and the file does not exist, write it
# first. An installed postgresql-common or an existing file is the administrator's: left alone.
no_main_cluster() {
  local conf=/etc/postgresql-common/createcluster.conf
  if installed postgresql-common || [ -e "$conf" ]; then
    return 1
  fi
  mkdir -p "${conf%/*}"
  cat >"$conf" <<'CONF'
# Written by sixpn's scripts/sysdeps.sh before postgresql-common was installed: no "main"
# cluster on install (sixpn's lab makes clusters of its own). The package's template, for the
# other settings: /usr/share/postgresql-common/createcluster.conf.
create_main_cluster = false
CONF
}

missing=()
for pkg in "${packages[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
wanted=("${missing[@]}")
installed wireguard-go && wireguard_go_is_old && wanted+=("wireguard-go>=$WG_GO_MIN")
[ ${#wanted[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing Debian packages: ${wanted[*]} (run as root, or install them)" >&2
  exit 1
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "sysdeps: installing ${missing[*]}"
  if [[ " ${missing[*]} " == *" postgresql "* ]] && no_main_cluster; then
    export UCF_FORCE_CONFFOLD=1
    echo "sysdeps: no main PostgreSQL cluster on install (/etc/postgresql-common/createcluster.conf)"
  fi
  apt-get update -qq
  # Servers among these (etcd, PostgreSQL) are for the tests and the lab, which start their
  # own: Debian's policy-rc.d hook keeps their packages from starting a system-wide one on a
  # machine with systemd. Only when the machine has no such hook of its own; removed after.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# sixpn sysdeps.sh: no service starts while it installs\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if installed wireguard-go && wireguard_go_is_old; then
  newer_wireguard_go
fi
