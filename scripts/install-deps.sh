#!/usr/bin/env bash
# Installs what the local stack needs from Debian's packages: etcd, Patroni, PostgreSQL 15, Redis + Sentinel, pgBackRest,
# HAProxy and PgBouncer (the routing layer), iproute2, nftables, iptables, and Chromium for the HTML report's browser test. Idempotent; needs root. Debian's postinst scripts may start default
# PostgreSQL/Redis instances where an init system runs; they are stopped so they do not hold faultline's ports
# (faultline's servers listen on the namespaces' own addresses anyway).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh: run as root (sudo scripts/install-deps.sh)" >&2
  exit 3
fi

packages=(etcd-server etcd-client patroni postgresql postgresql-contrib redis-server redis-sentinel pgbackrest
          haproxy pgbouncer
          iproute2 nftables iptables procps util-linux ca-certificates
          # The tests open the HTML report in a real headless browser.
          chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Default instances started by the packages (where an init system exists) are not part of faultline's stack.
for svc in postgresql redis-server redis-sentinel etcd patroni haproxy pgbouncer; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
echo "stack packages present: $(patroni --version 2>/dev/null), $(etcd --version 2>/dev/null | head -1), $(redis-server --version | cut -d' ' -f3)"
