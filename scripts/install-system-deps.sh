#!/usr/bin/env bash
# Debian packages that the end-to-end tests start for real on 127.0.0.1: Prometheus and Alertmanager (SLO alerts),
# Chromium (the Dagster UI in a real browser) and PostgreSQL (a Postgres-backed Dagster instance).
# Installs only what is missing. Needs root for apt-get; without it, prints what to install and exits non-zero
# under CI=true (a missing component must fail CI, not be skipped).
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
[ -x /usr/bin/chromium ] || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: all present"
  exit 0
fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
  echo "system deps missing: ${need[*]} (run as root: apt-get install -y ${need[*]})" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
echo "system deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the services it installs; the tests start their own on free ports, so stop the packaged ones.
for svc in prometheus prometheus-alertmanager prometheus-node-exporter postgresql; do
  (command -v systemctl >/dev/null 2>&1 && systemctl stop "$svc" >/dev/null 2>&1) || true
  (command -v service >/dev/null 2>&1 && service "$svc" stop >/dev/null 2>&1) || true
done
echo "system deps: done"
