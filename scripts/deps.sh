#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build the module and run its tests.
# Idempotent: skips apt when everything is already there.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
command -v clang >/dev/null || need+=(clang)
command -v cc >/dev/null || need+=(gcc)
# scripts/valgrind.sh and bench/instructions.py (callgrind).
command -v valgrind >/dev/null || need+=(valgrind)
# The README quick start (run by tests/docs.rs) and scripts/server-bin.sh's downloads; make
# builds Redis 8.0 from source there.
command -v curl >/dev/null || need+=(curl)
command -v make >/dev/null || need+=(make)
# Monitoring tests run the real programs.
command -v promtool >/dev/null || need+=(prometheus)
command -v prometheus-redis-exporter >/dev/null || need+=(prometheus-redis-exporter)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
# python/tests/test_status.py loads jwks-endpoint's status page in a headless browser.
command -v chromium >/dev/null || need+=(chromium)
# The README's quick start installs the Python package into a virtualenv.
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)

if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts a redis-server service on 6379 when the package is installed; the
# scripts here start their own servers, so it is not needed. The other servers the suite runs
# on (Redis 8.0, Valkey 8.0 and 9.1) come from scripts/server-bin.sh, the first time a leg
# needs them.
