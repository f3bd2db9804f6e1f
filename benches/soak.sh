#!/usr/bin/env bash
# Soak: jwtgate under mixed traffic (valid, expired, forged, unknown-kid and wrong-scope tokens,
# anonymous routes, bodies) for SECONDS (default 600), while the IdP rotates keys every few
# seconds and goes down for 10 s every minute. Every response is checked; prints requests,
# wrong answers, RSS at start and end, JWKS fetches; exits non-zero on a wrong answer, a crash
# or RSS growth over 10 %. Loopback only (examples/soak.rs).
set -euo pipefail
SECONDS_TOTAL=${1:-600}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --release --quiet
cargo build --release --quiet --example soak
exec target/release/examples/soak "$SECONDS_TOTAL" target/release/jwtgate
