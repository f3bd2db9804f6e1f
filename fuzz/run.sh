#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) with libFuzzer and AddressSanitizer, on
# the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags), starting
# from the checked-in seed corpora. Prints executions per second per target; exits non-zero on
# any crash (the crashing input is left in <package>/artifacts/<target>/ — make it a regression
# test). Two packages: crates/jose/fuzz (the JOSE core alone) and fuzz/ (the gateway's
# parsers). Needs `cargo install cargo-fuzz`.
set -euo pipefail
SECONDS_EACH=${1:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
command -v cargo-fuzz >/dev/null || { echo "fuzz/run.sh needs cargo-fuzz (cargo install cargo-fuzz)" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
FAIL=0
# The JOSE core alone (no tokio, no hyper in its build), then the gateway's own parsers.
for package in "$HERE/../crates/jose/fuzz" "$HERE"; do
  cd "$package"
  TARGETS=$(cargo fuzz list)
  cargo fuzz build
  for t in $TARGETS; do
    mkdir -p "corpus/$t"
    # A scratch copy of the seeds: new inputs found in a run are not added to the repository.
    work=$(mktemp -d)
    cp -r "corpus/$t/." "$work/" 2>/dev/null || true
    if out=$(cargo fuzz run "$t" "$work" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 2>&1); then
      execs=$(echo "$out" | awk '/stat::number_of_executed_units/ {print $2}')
      echo "$t: ok, $execs executions in ${SECONDS_EACH}s ($((execs / SECONDS_EACH))/s)"
    else
      echo "$t: CRASH"; echo "$out" | tail -30; FAIL=1
    fi
    rm -rf "$work"
  done
done
exit $FAIL
