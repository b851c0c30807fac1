#!/usr/bin/env bash
# e2e-kcat-smoke.sh — sanity check of the Kafka test stack (Tansu + kcat wrapper).
#
# Starts its own Tansu broker (TS_BROKER_NAME=kcat-smoke, so it never touches a broker the test
# run started), creates a 3-partition topic, produces 3 keyed messages with headers through the
# kcat wrapper, reads them back (plain consumer, JSON envelope), reads them with a consumer group,
# checks the group committed its offsets, and stops the broker on exit (trap).
# Runs `test-stack.sh install` first (≈0.05 s when everything is there).
#
# Exit 0 when every check passes, 1 otherwise (diagnostics on stderr).
# Usage: scripts/e2e-kcat-smoke.sh        (≈ 8 s, most of it two consumer-group joins)
set -euo pipefail

export TS_BROKER_NAME=kcat-smoke
# shellcheck source=scripts/test-stack.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/test-stack.sh"

SMOKE_T0=$SECONDS
SMOKE_TMP=""
SMOKE_CHECKS=0
SMOKE_TIMEOUT=30                      # per kcat call, seconds
# Tansu's group join takes about session.timeout.ms / 2: keep it short.
GROUP_OPTS=(-X session.timeout.ms=6000 -X heartbeat.interval.ms=1000)

smoke_log() { printf 'e2e-kcat-smoke: %s\n' "$*" >&2; }

smoke_fail() {
    smoke_log "FAIL: $*"
    if [[ -s "${TS_LOG_FILE:-}" ]]; then
        smoke_log "last broker log lines ($TS_LOG_FILE):"
        tail -n 20 "$TS_LOG_FILE" >&2 || true
    fi
    exit 1
}

smoke_pass() {
    SMOKE_CHECKS=$((SMOKE_CHECKS + 1))
    smoke_log "ok: $*"
}

smoke_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ts_stop_broker || true
    [[ -n "$SMOKE_TMP" ]] && rm -rf "$SMOKE_TMP"
    exit "$rc"
}

# kcat through the wrapper, bounded in time; stderr kept for diagnostics.
kc() {
    timeout "$SMOKE_TIMEOUT" "$UNICUS_KCAT" -b "$UNICUS_TEST_BROKERS" "$@" 2>>"$SMOKE_TMP/kcat.err"
}

# check_json FILE EXPECTED_COUNT: every line is a kcat -J envelope of our topic; the set of
# (key, payload) is k1..kN/v1..vN and every message carries headers k=v and src=smoke.
check_json() {
    "$UNICUS_PYTHON" - "$1" "$2" "$TOPIC" <<'EOF'
import json, sys
path, n, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = [l for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]
msgs = [json.loads(l) for l in lines]
def headers(m):
    h = m.get("headers") or []
    # kcat 1.7 prints headers as a flat [name, value, ...] list (its help says an object).
    if isinstance(h, dict):
        return h
    return dict(zip(h[0::2], h[1::2]))
problems = []
if len(msgs) != n:
    problems.append(f"expected {n} messages, got {len(msgs)}")
pairs = sorted((m.get("key"), m.get("payload")) for m in msgs)
want = sorted((f"k{i}", f"v{i}") for i in range(1, n + 1))
if pairs != want:
    problems.append(f"key/payload pairs {pairs} != {want}")
for m in msgs:
    if m.get("topic") != topic:
        problems.append(f"wrong topic in {m}")
    if headers(m) != {"k": "v", "src": "smoke"}:
        problems.append(f"wrong headers in {m}")
parts = sorted({m.get("partition") for m in msgs})
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(f"partitions used: {parts}")
EOF
}

main() {
    local out
    trap smoke_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    ts_install || smoke_fail "test-stack install failed"
    SMOKE_TMP="$(mktemp -d "$TS_WORK/kcat-smoke.XXXXXX")"
    : >"$SMOKE_TMP/kcat.err"

    ts_stop_broker || true            # a leftover from a killed run would hold old data
    ts_start_broker >/dev/null || smoke_fail "broker did not start"
    [[ "${UNICUS_TEST_BROKERS:-}" == 127.0.0.1:* ]] || smoke_fail "UNICUS_TEST_BROKERS not set by start-broker"
    smoke_pass "broker up on $UNICUS_TEST_BROKERS"

    TOPIC="kcat-smoke-$$-$RANDOM"
    ts_create_topic "$TOPIC" 3 || smoke_fail "create-topic $TOPIC 3"
    out="$(kc -L -t "$TOPIC")" || smoke_fail "kcat -L failed: $(cat "$SMOKE_TMP/kcat.err")"
    grep -q "topic \"$TOPIC\" with 3 partitions" <<<"$out" \
        || smoke_fail "metadata does not show 3 partitions for $TOPIC:"$'\n'"$out"
    smoke_pass "topic $TOPIC has 3 partitions (kcat -L)"

    printf 'k1|v1\nk2|v2\nk3|v3\n' | kc -P -t "$TOPIC" -K '|' -H k=v -H src=smoke -q \
        || smoke_fail "kcat produce failed: $(cat "$SMOKE_TMP/kcat.err")"
    smoke_pass "produced 3 keyed messages with headers"

    kc -C -t "$TOPIC" -o beginning -e -J -q >"$SMOKE_TMP/plain.json" \
        || smoke_fail "kcat consume failed: $(cat "$SMOKE_TMP/kcat.err")"
    out="$(check_json "$SMOKE_TMP/plain.json" 3)" \
        || smoke_fail "plain consume mismatch; got:"$'\n'"$(cat "$SMOKE_TMP/plain.json")"
    smoke_pass "plain consumer read back keys, payloads, headers ($out)"

    # Note: -G is its own mode; adding -C makes kcat ask for -t.
    kc -G "smoke-group" -o beginning -e -J -q "${GROUP_OPTS[@]}" "$TOPIC" >"$SMOKE_TMP/group.json" \
        || smoke_fail "kcat group consume failed: $(cat "$SMOKE_TMP/kcat.err")"
    out="$(check_json "$SMOKE_TMP/group.json" 3)" \
        || smoke_fail "group consume mismatch; got:"$'\n'"$(cat "$SMOKE_TMP/group.json")"
    smoke_pass "consumer group read all 3 ($out)"

    # Same group again without -o: it must resume from the committed offsets, i.e. read nothing.
    kc -G "smoke-group" -e -J -q "${GROUP_OPTS[@]}" "$TOPIC" >"$SMOKE_TMP/resume.json" \
        || smoke_fail "kcat group resume failed: $(cat "$SMOKE_TMP/kcat.err")"
    [[ ! -s "$SMOKE_TMP/resume.json" ]] \
        || smoke_fail "group did not resume from committed offsets; re-read:"$'\n'"$(cat "$SMOKE_TMP/resume.json")"
    smoke_pass "consumer group resumed from committed offsets"

    smoke_log "OK: $SMOKE_CHECKS checks in $((SECONDS - SMOKE_T0)) s"
}

main "$@"
