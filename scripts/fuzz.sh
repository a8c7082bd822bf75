#!/usr/bin/env bash
# Coverage-guided fuzzing of the pure core (cargo fuzz / libFuzzer), bounded in time.
# Usage: scripts/fuzz.sh [seconds per target, default 60] [target ...]
# Targets: jwk document rotate_args stored_state dump_payload. Seeds: fuzz/seeds/<target>
# (RFC 7517/8037 example keys and documents; real DUMPs of key sets for dump_payload). A crash is written to fuzz/artifacts/<target>/ and fails
# the run; turn it into a regression test (fuzz/regressions + tests in src).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"; shift || true
targets=("$@"); [ "${#targets[@]}" -gt 0 ] || targets=(jwk document rotate_args stored_state dump_payload)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd fuzz
for t in "${targets[@]}"; do
  corpus="$(mktemp -d)"
  echo "== fuzzing $t for ${secs}s"
  # -s none: no sanitizer, so it runs on the stable toolchain; Rust's own checks (bounds,
  # overflow in debug assertions) and the targets' asserts still turn bugs into crashes.
  cargo fuzz run -s none --debug-assertions "$t" "$corpus" "seeds/$t" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -print_final_stats=1 2>&1 \
    | grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread)" || true
  [ ! -d "artifacts/$t" ] || [ -z "$(ls -A "artifacts/$t" 2>/dev/null)" ] || { echo "crash in $t: fuzz/artifacts/$t"; exit 1; }
done
echo "fuzz: no crash"
