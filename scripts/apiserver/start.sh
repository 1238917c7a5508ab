#!/usr/bin/env bash
# start.sh DIR: start etcd + kube-apiserver v1.20.2 on loopback with all state
# under DIR, wait for /readyz, serve EndpointSlice discovery.k8s.io/v1 via a
# CRD stand-in, and write DIR/kubeconfig and DIR/env.
#
#   FRESH=1      wipe DIR/etcd-data first (fresh, empty store)
#   otherwise    reuse DIR/etcd-data (same store as the previous start)
#
# A restart on the same DIR reuses the previous ports (so clients keep their
# URL) and the same token, when those ports are still free.
#
# Environment: SVC_APISERVER_CACHE / SVC_APISERVER_BIN (binary from build.sh),
# SVC_ETCD_BIN (default: etcd on PATH), KUBECTL (default: kubectl),
# READY_TIMEOUT (default 60 s), SVC_APISERVER_EXTRA_ARGS (appended, word-split),
# SVC_APISERVER_AUTHZ (--authorization-mode, default AlwaysAllow; RBAC to
# enforce roles: the admin token is in system:masters either way).
# See scripts/apiserver/README.md.
set -Eeuo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CRD_FILE=$SCRIPT_DIR/endpointslice-v1-crd.yaml
KUBE_VERSION=v1.20.2
APISERVER_BIN=${SVC_APISERVER_BIN:-${SVC_APISERVER_CACHE:-$HOME/.cache/svc-dataplane/kube-apiserver-$KUBE_VERSION}/kube-apiserver}
ETCD_BIN=${SVC_ETCD_BIN:-$(command -v etcd || true)}
KUBECTL=${KUBECTL:-kubectl}
READY_TIMEOUT=${READY_TIMEOUT:-60}
ETCD_TIMEOUT=${ETCD_TIMEOUT:-30}
CRD_TIMEOUT=${CRD_TIMEOUT:-30}
# Not an EXTRA_ARGS flag: --authorization-mode is a list, a second one appends.
AUTHZ=${SVC_APISERVER_AUTHZ:-AlwaysAllow}

now() { date +%s.%N; }
T0=$(now)
elapsed() { awk -v a="$T0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[start.sh %5ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; cleanup_on_failure; exit 1; }

[[ $# -eq 1 && -n $1 ]] || { echo "usage: [FRESH=1] $0 DIR" >&2; exit 2; }
mkdir -p "$1"
DIR=$(realpath "$1")
RUN=$DIR/run
LOGS=$DIR/logs
CERTS=$DIR/certs
ETCD_DATA_DIR=$DIR/etcd-data
mkdir -p "$RUN" "$LOGS" "$CERTS"
chmod 700 "$DIR"

STARTED_PIDS=()
cleanup_on_failure() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    ((${#STARTED_PIDS[@]})) && rm -f "$RUN/etcd.pid" "$RUN/kube-apiserver.pid"
    STARTED_PIDS=()
}
trap 'rc=$?; log "ERROR: unexpected failure (exit $rc) at line $LINENO: $BASH_COMMAND"; cleanup_on_failure; exit $rc' ERR

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

exec 9>"$DIR/.lock"
flock -w 120 9 || die "could not lock $DIR/.lock (another start.sh/stop.sh running?)"

[[ -x $APISERVER_BIN ]] || die "kube-apiserver not found at $APISERVER_BIN; run scripts/apiserver/build.sh first"
[[ -n $ETCD_BIN && -x $ETCD_BIN ]] || die "etcd not found (apt-get install etcd-server, or run build.sh)"
command -v "$KUBECTL" >/dev/null || die "kubectl not found (set KUBECTL)"
for t in curl openssl ss flock setsid; do command -v "$t" >/dev/null || die "$t not found"; done
[[ -f $CRD_FILE ]] || die "missing $CRD_FILE"

for name in etcd kube-apiserver; do
    if [[ -f $RUN/$name.pid ]] && alive "$(cat "$RUN/$name.pid")"; then
        die "$name already running for $DIR (pid $(cat "$RUN/$name.pid")); run stop.sh $DIR first"
    fi
    rm -f "$RUN/$name.pid"
done

if [[ ${FRESH:-0} == 1 ]]; then
    log "FRESH=1: wiping $ETCD_DATA_DIR"
    rm -rf "$ETCD_DATA_DIR"
fi

# --- credentials (kept across restarts) --------------------------------------
if [[ ! -s $DIR/token ]]; then
    openssl rand -hex 24 > "$DIR/token.tmp" && mv "$DIR/token.tmp" "$DIR/token"
fi
TOKEN=$(cat "$DIR/token")
echo "$TOKEN,admin,admin,system:masters" > "$DIR/tokens.csv"
if [[ ! -s $CERTS/sa.key || ! -s $CERTS/sa.pub ]]; then
    openssl genrsa -out "$CERTS/sa.key" 2048 2>/dev/null || die "openssl genrsa failed"
    openssl rsa -in "$CERTS/sa.key" -pubout -out "$CERTS/sa.pub" 2>/dev/null || die "openssl rsa -pubout failed"
fi
chmod 600 "$DIR/token" "$DIR/tokens.csv" "$CERTS/sa.key"

# --- ports --------------------------------------------------------------------
# Random ports in 20000-29999: below the kernel's ephemeral range (32768+) and
# the NodePort range, so outgoing connections cannot be sitting on them.
port_listening() { [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]]; }
PICKED=()
# pick_port VAR: set VAR to a random port no socket uses and not picked before
pick_port() {
    local p i
    for i in $(seq 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 10000))
        if [[ " ${PICKED[*]} " == *" $p "* ]]; then continue; fi
        if [[ -n $(ss -Htan "sport = :$p" 2>/dev/null) ]]; then continue; fi
        PICKED+=("$p"); printf -v "$1" '%s' "$p"; return 0
    done
    die "could not find a free port"
}
ETCD_PORT='' ETCD_PEER_PORT='' APISERVER_PORT=''
if [[ -f $RUN/ports ]]; then
    # shellcheck disable=SC1091
    source "$RUN/ports"
    for v in ETCD_PORT ETCD_PEER_PORT APISERVER_PORT; do
        if [[ -n ${!v} ]] && port_listening "${!v}"; then
            log "previous $v ${!v} is in use; picking a new one (clients must re-read $DIR/env)"
            printf -v "$v" ''
        fi
        if [[ -n ${!v} ]]; then PICKED+=("${!v}"); fi
    done
fi

# launch NAME CMD...: start detached in its own session, fds closed, output to log
launch() {
    local name=$1; shift
    printf '\n===== %s start %s: %s\n' "$(date -Is)" "$name" "$*" >> "$LOGS/$name.log"
    setsid "$@" < /dev/null >> "$LOGS/$name.log" 2>&1 9>&- &
    LAUNCHED_PID=$!
    STARTED_PIDS+=("$LAUNCHED_PID")
    echo "$LAUNCHED_PID" > "$RUN/$name.pid"
}
log_tail() { log "---- last lines of $LOGS/$1.log ----"; tail -n "${2:-25}" "$LOGS/$1.log" >&2 || true; }
addr_in_use() { tail -n 40 "$LOGS/$1.log" | grep -qi 'address already in use'; }
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${STARTED_PIDS[@]}"; do if [[ $p != "$pid" ]]; then keep+=("$p"); fi; done
    STARTED_PIDS=("${keep[@]}")
}

# --- etcd ---------------------------------------------------------------------
# etcd reads every ETCD_* environment variable as a flag and dies on a clash
# with a command-line flag; DIR/env itself exports ETCD_DATA_DIR/ETCD_PID/
# ETCD_URL, so a caller that sourced it would break etcd. Start it without them.
ETCD_ENV_UNSET=()
for v in $(compgen -e); do
    if [[ $v == ETCD_* ]]; then ETCD_ENV_UNSET+=(-u "$v"); fi
done
mkdir -p "$ETCD_DATA_DIR"; chmod 700 "$ETCD_DATA_DIR"
ETCD_PID=''
for attempt in 1 2 3; do
    [[ -n $ETCD_PORT ]] || pick_port ETCD_PORT
    [[ -n $ETCD_PEER_PORT ]] || pick_port ETCD_PEER_PORT
    ETCD_URL=http://127.0.0.1:$ETCD_PORT
    PEER_URL=http://127.0.0.1:$ETCD_PEER_PORT
    launch etcd env "${ETCD_ENV_UNSET[@]}" "$ETCD_BIN" --name default --data-dir "$ETCD_DATA_DIR" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "$PEER_URL" --initial-advertise-peer-urls "$PEER_URL" \
        --initial-cluster "default=$PEER_URL" --initial-cluster-state new \
        --logger zap --log-outputs stderr
    ETCD_PID=$LAUNCHED_PID
    ok=0
    deadline=$(( $(date +%s) + ETCD_TIMEOUT ))
    while (( $(date +%s) < deadline )); do
        running "$ETCD_PID" || break
        if curl -sf --max-time 2 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; then ok=1; break; fi
        sleep 0.1
    done
    ((ok)) && break
    if ! running "$ETCD_PID" && addr_in_use etcd && (( attempt < 3 )); then
        log "etcd: port in use, retrying with new ports"
        stop_pid "$ETCD_PID"; ETCD_PORT='' ETCD_PEER_PORT=''; continue
    fi
    log_tail etcd
    running "$ETCD_PID" || die "etcd (pid $ETCD_PID) exited before it was healthy"
    die "etcd did not become healthy within ${ETCD_TIMEOUT}s (pid $ETCD_PID)"
done
log "etcd healthy at $ETCD_URL (pid $ETCD_PID, data $ETCD_DATA_DIR)"

# --- kube-apiserver -----------------------------------------------------------
# shellcheck disable=SC2206
EXTRA_ARGS=(${SVC_APISERVER_EXTRA_ARGS:-})
APISERVER_PID=''
for attempt in 1 2 3; do
    [[ -n $APISERVER_PORT ]] || pick_port APISERVER_PORT
    APISERVER_URL=https://127.0.0.1:$APISERVER_PORT
    printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\n' \
        "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" > "$RUN/ports"
    launch kube-apiserver "$APISERVER_BIN" \
        --etcd-servers="$ETCD_URL" \
        --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
        --secure-port="$APISERVER_PORT" \
        --cert-dir="$CERTS" \
        --token-auth-file="$DIR/tokens.csv" \
        --authorization-mode="$AUTHZ" \
        --allow-privileged=true \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$CERTS/sa.pub" \
        --service-account-signing-key-file="$CERTS/sa.key" \
        --service-cluster-ip-range=10.96.0.0/16,fd00:96::/108 \
        --feature-gates=IPv6DualStack=true \
        --endpoint-reconciler-type=none \
        --enable-priority-and-fairness=false \
        --runtime-config=discovery.k8s.io/v1beta1=false \
        "${EXTRA_ARGS[@]}"
    APISERVER_PID=$LAUNCHED_PID
    T_API=$(now)
    ok=0
    deadline=$(( $(date +%s) + READY_TIMEOUT ))
    while (( $(date +%s) < deadline )); do
        running "$APISERVER_PID" || break
        if [[ $(curl -sk --max-time 2 -H "Authorization: Bearer $TOKEN" "$APISERVER_URL/readyz" 2>/dev/null) == ok ]]; then
            ok=1; break
        fi
        sleep 0.2
    done
    ((ok)) && break
    if ! running "$APISERVER_PID" && addr_in_use kube-apiserver && (( attempt < 3 )); then
        log "kube-apiserver: port in use, retrying with a new port"
        stop_pid "$APISERVER_PID"; APISERVER_PORT=''; continue
    fi
    log_tail kube-apiserver 40
    running "$APISERVER_PID" || die "kube-apiserver (pid $APISERVER_PID) exited before /readyz was ok"
    die "kube-apiserver /readyz not ok within ${READY_TIMEOUT}s (pid $APISERVER_PID)"
done
log "kube-apiserver ready at $APISERVER_URL (pid $APISERVER_PID) after $(awk -v a="$T_API" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')s"

# --- kubeconfig -----------------------------------------------------------------
cat > "$DIR/kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: svc-test
  cluster:
    server: $APISERVER_URL
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: svc-test
  context:
    cluster: svc-test
    user: admin
    namespace: default
current-context: svc-test
EOF
chmod 600 "$DIR/kubeconfig.tmp"
mv -f "$DIR/kubeconfig.tmp" "$DIR/kubeconfig"
export KUBECONFIG=$DIR/kubeconfig

# --- EndpointSlice discovery.k8s.io/v1 stand-in -----------------------------------
"$KUBECTL" apply -f "$CRD_FILE" > "$LOGS/kubectl.log" 2>&1 || { cat "$LOGS/kubectl.log" >&2; die "kubectl apply $CRD_FILE failed"; }
ok=0
deadline=$(( $(date +%s) + CRD_TIMEOUT ))
while (( $(date +%s) < deadline )); do
    if "$KUBECTL" get endpointslices.v1.discovery.k8s.io -A -o name >> "$LOGS/kubectl.log" 2>&1; then ok=1; break; fi
    sleep 0.2
done
((ok)) || { tail -n 5 "$LOGS/kubectl.log" >&2; die "discovery.k8s.io/v1 endpointslices not served within ${CRD_TIMEOUT}s"; }
log "discovery.k8s.io/v1 endpointslices served"

# --- env ----------------------------------------------------------------------
{
    printf '# written by scripts/apiserver/start.sh at %s\n' "$(date -Is)"
    printf 'export %s=%q\n' \
        SVC_APISERVER_DIR "$DIR" \
        KUBECONFIG "$DIR/kubeconfig" \
        APISERVER_URL "$APISERVER_URL" \
        APISERVER_TOKEN "$TOKEN" \
        APISERVER_PID "$APISERVER_PID" \
        ETCD_URL "$ETCD_URL" \
        ETCD_PID "$ETCD_PID" \
        ETCD_DATA_DIR "$ETCD_DATA_DIR"
} > "$DIR/env.tmp"
mv -f "$DIR/env.tmp" "$DIR/env"
STARTED_PIDS=()
log "up: source $DIR/env  (KUBECONFIG=$DIR/kubeconfig, stop with stop.sh $DIR)"
