#!/usr/bin/env bash
# The one test command: installs what the tests need (Tansu broker, kcat, Python
# packages, Prometheus, the compose validator, Chromium and its WebDriver), starts a broker on loopback, runs every
# test tier, and cleans up.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -- NAME    # extra arguments go to `cargo test`
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing the test stack (idempotent)"
scripts/test-stack.sh install

step "starting a Tansu broker on loopback"
eval "$(scripts/test-stack.sh start-broker)"
trap 'scripts/test-stack.sh stop-broker || true' EXIT
# shellcheck disable=SC1091
source scripts/test-stack.sh >/dev/null
export UNICUS_TEST_BROKERS UNICUS_KCAT UNICUS_TANSU_BIN UNICUS_PYTHON
export UNICUS_PROMETHEUS UNICUS_PROMTOOL UNICUS_DOCKER_COMPOSE UNICUS_CHROMIUM UNICUS_CHROMEDRIVER
# Tests that need the broker or the tools fail instead of skipping.
export UNICUS_REQUIRE_BROKER=1 UNICUS_REQUIRE_TOOLS=1
echo "broker: $UNICUS_TEST_BROKERS" >&2

step "checking the stack itself (kcat round trip)"
scripts/e2e-kcat-smoke.sh

step "formatting"
cargo fmt --check

step "tests (release profile: the crash and property tests replay large streams)"
shift_args=()
if [[ "${1:-}" == "--" ]]; then shift; shift_args=("$@"); fi
cargo test --release --locked "${shift_args[@]}"
