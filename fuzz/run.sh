#!/usr/bin/env bash
# Runs every cargo-fuzz target in this directory for a bounded time.
#
# Usage: fuzz/run.sh [SECONDS_PER_TARGET] [extra libFuzzer options...]
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600 -jobs=2
#
# Installs cargo-fuzz from crates.io if it is missing. On a stable toolchain
# it sets RUSTC_BOOTSTRAP=1 so that the nightly-only flags cargo-fuzz passes
# to rustc (-Zsanitizer=address, ...) are accepted. The corpus of each target
# is seeded with the protocol test vectors. Exits non-zero if any target
# found a crash; the reproducer is left in fuzz/artifacts/<target>/.
set -euo pipefail

secs="${1:-60}"
if [ "$#" -gt 0 ]; then shift; fi
case "$secs" in
  ''|*[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [libFuzzer options...]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

vectors=../crates/rampart-proto/tests/vectors

# hex vector file -> raw bytes (comments start with '#'); perl is always there
# on Debian, unlike xxd.
hex_to_bin() {
  perl -0777 -ne 's/#[^\n]*//g; s/\s+//g; print pack("H*", $_)' "$1"
}

seed_corpus() {
  local corpus="corpus/$1" f name
  mkdir -p "$corpus"
  for f in "$vectors"/*.hex "$vectors"/invalid/*.hex; do
    [ -e "$f" ] || continue
    name="vector-$(basename "$(dirname "$f")")-$(basename "$f" .hex)"
    hex_to_bin "$f" >"$corpus/$name"
  done
  # Inputs made for this target (e.g. jwt_verify's claims), if any.
  if [ -d "seeds/$1" ]; then
    cp seeds/"$1"/* "$corpus"/
  fi
  # All valid frames back to back, as one connection would send them.
  for f in "$vectors"/*.hex; do
    [ -e "$f" ] || continue
    hex_to_bin "$f"
  done >"$corpus/vector-stream"
}

failed=()
for target in $(cargo fuzz list); do
  seed_corpus "$target"
  echo "=== fuzzing $target for ${secs}s" >&2
  if ! cargo fuzz run "$target" -- -max_total_time="$secs" "$@"; then
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashes found in: ${failed[*]} (see fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crash found" >&2
