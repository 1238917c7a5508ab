#!/usr/bin/env bash
# stop.sh DIR: stop the kube-apiserver and etcd that start.sh started for DIR.
# SIGTERM by pid, wait up to STOP_TIMEOUT seconds (default 15), then SIGKILL.
# Idempotent: a missing pid file or an already-dead process is fine.
# The etcd data under DIR/etcd-data is kept (start.sh DIR reuses it).
set -Eeuo pipefail

STOP_TIMEOUT=${STOP_TIMEOUT:-15}

[[ $# -eq 1 && -n $1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
if [[ ! -d $1 ]]; then echo "[stop.sh] $1: no such directory; nothing to stop" >&2; exit 0; fi
DIR=$(realpath "$1")
RUN=$DIR/run

log() { printf '[stop.sh] %s\n' "$*" >&2; }

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

wait_gone() { # wait_gone PID SECONDS
    local pid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    ! alive "$pid"
}

stop_one() {
    local name=$1 pidfile=$RUN/$1.pid pid t0
    if [[ ! -f $pidfile ]]; then log "$name: no pid file; not running"; return 0; fi
    pid=$(cat "$pidfile")
    if ! alive "$pid"; then
        log "$name: pid $pid not running"
        rm -f "$pidfile"; return 0
    fi
    t0=$(date +%s.%N)
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
        log "$name: pid $pid still alive after ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 10 || { log "ERROR: $name: pid $pid survived SIGKILL"; return 1; }
    fi
    log "$name: pid $pid stopped in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s"
    rm -f "$pidfile"
}

if [[ -d $RUN ]]; then
    exec 9>"$DIR/.lock"
    flock -w 120 9 || { log "ERROR: could not lock $DIR/.lock"; exit 1; }
fi
rc=0
# API server first, so it does not spin on a vanished etcd.
stop_one kube-apiserver || rc=1
stop_one etcd || rc=1
exit $rc
