#!/usr/bin/env bash
# Build kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source
# package (Go 1.19) and cache the binary. Idempotent: does nothing when the
# cached binary exists and runs `--version`.
#
# Environment:
#   SVC_APISERVER_CACHE      cache dir (default ~/.cache/svc-dataplane/kube-apiserver-v1.20.2);
#                            the binary ends up at $SVC_APISERVER_CACHE/kube-apiserver
#   SVC_APISERVER_BUILD_DIR  build tree (default $SVC_APISERVER_CACHE/build)
#   KEEP_BUILD=1             keep the build tree (~1.8 GB) after success
#   SVC_APT_SOURCES          deb822 sources file to derive deb-src from
#                            (default /etc/apt/sources.list.d/debian.sources)
#
# See scripts/apiserver/README.md.
set -Eeuo pipefail

KUBE_VERSION=v1.20.2
SRC_PKG=kubernetes
ORIG_TARBALL=kubernetes_1.20.5+really1.20.2.orig.tar.gz
GO_BIN_DIR=/usr/lib/go-1.19/bin
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
DEB_PACKAGES=(golang-1.19-go golang-github-modern-go-reflect2-dev rsync etcd-server openssl curl make tar gzip)

CACHE_DIR=${SVC_APISERVER_CACHE:-$HOME/.cache/svc-dataplane/kube-apiserver-$KUBE_VERSION}
BIN=$CACHE_DIR/kube-apiserver
BUILD_DIR=${SVC_APISERVER_BUILD_DIR:-$CACHE_DIR/build}
APT_SOURCES=${SVC_APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}

T0=$(date +%s)
STEP=startup
STEP_T0=$T0

log() { printf '[build.sh %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
on_err() {
    local rc=$?
    log "ERROR: step '$STEP' failed (exit $rc, line ${BASH_LINENO[0]}: $BASH_COMMAND)"
    log "build tree left at $BUILD_DIR for inspection (delete it to start over)"
    exit "$rc"
}
trap on_err ERR

step() {
    local now; now=$(date +%s)
    if [[ $STEP != startup ]]; then log "done: $STEP ($(( now - STEP_T0 ))s)"; fi
    STEP=$1; STEP_T0=$now
    log "step: $STEP"
}

cached_binary_ok() {
    [[ -x $BIN ]] && "$BIN" --version 2>/dev/null | grep -q "Kubernetes $KUBE_VERSION"
}

# start.sh also needs etcd, curl and openssl: a cache restored onto a fresh
# machine must not skip installing them.
runtime_ok() {
    command -v etcd >/dev/null && command -v curl >/dev/null && command -v openssl >/dev/null
}

if cached_binary_ok && runtime_ok; then
    log "cached binary OK: $BIN ($("$BIN" --version)); nothing to do"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get install, apt-get source)"
mkdir -p "$CACHE_DIR"

# One build at a time per cache dir.
exec 9>"$CACHE_DIR/.build.lock"
if ! flock -n 9; then
    log "another build.sh holds $CACHE_DIR/.build.lock; waiting"
    flock 9
fi
if cached_binary_ok && runtime_ok; then
    log "cached binary appeared while waiting: $BIN"; exit 0
fi

# ---------------------------------------------------------------------------
step "install Debian packages"
missing=()
for p in "${DEB_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "missing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]} failed"
else
    log "all present: ${DEB_PACKAGES[*]}"
fi
[[ -x $GO_BIN_DIR/go ]] || die "$GO_BIN_DIR/go not found after installing golang-1.19-go"
[[ -d $REFLECT2_SRC ]] || die "$REFLECT2_SRC not found after installing golang-github-modern-go-reflect2-dev"
command -v etcd >/dev/null || die "etcd not on PATH after installing etcd-server"
if cached_binary_ok; then
    step finished
    log "OK: cached binary $BIN ($("$BIN" --version)); only packages were missing"
    exit 0
fi

# ---------------------------------------------------------------------------
step "fetch source package (private apt dir, /etc/apt untouched)"
mkdir -p "$BUILD_DIR"
SRC_DIR=$BUILD_DIR/kubernetes-src
if [[ -f $BUILD_DIR/$ORIG_TARBALL ]]; then
    log "already downloaded: $BUILD_DIR/$ORIG_TARBALL"
else
    APT_DIR=$BUILD_DIR/apt
    rm -rf "$APT_DIR"
    mkdir -p "$APT_DIR/parts" "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    [[ -r $APT_SOURCES ]] || die "cannot read $APT_SOURCES (set SVC_APT_SOURCES to a deb822 .sources file)"
    sed -E 's/^Types:[[:space:]]*deb[[:space:]]*$/Types: deb-src/' "$APT_SOURCES" > "$APT_DIR/parts/src.sources"
    grep -q '^Types: deb-src' "$APT_DIR/parts/src.sources" \
        || die "no 'Types: deb' stanza in $APT_SOURCES to turn into deb-src"
    apt_priv=(apt-get -q
        -o "Dir::Etc::SourceList=/dev/null"
        -o "Dir::Etc::SourceParts=$APT_DIR/parts"
        -o "Dir::State::Lists=$APT_DIR/lists"
        -o "Dir::Cache=$APT_DIR/cache"
        -o "APT::Sandbox::User=root")
    "${apt_priv[@]}" update || die "private apt-get update (deb-src) failed"
    (cd "$BUILD_DIR" && "${apt_priv[@]}" source --download-only "$SRC_PKG") \
        || die "apt-get source --download-only $SRC_PKG failed"
    [[ -f $BUILD_DIR/$ORIG_TARBALL ]] \
        || die "expected $ORIG_TARBALL, got: $(cd "$BUILD_DIR" && ls ${SRC_PKG}_* 2>/dev/null | tr '\n' ' ')"
    rm -rf "$APT_DIR"
fi

# ---------------------------------------------------------------------------
step "unpack"
if [[ -f $SRC_DIR/.unpacked ]]; then
    log "already unpacked: $SRC_DIR"
else
    rm -rf "$SRC_DIR"
    mkdir -p "$SRC_DIR"
    tar -xzf "$BUILD_DIR/$ORIG_TARBALL" -C "$SRC_DIR" --strip-components=1 \
        || die "unpacking $ORIG_TARBALL failed"
    [[ -f $SRC_DIR/Makefile && -d $SRC_DIR/vendor ]] || die "unexpected tarball layout in $SRC_DIR"
    touch "$SRC_DIR/.unpacked"
fi

# ---------------------------------------------------------------------------
step "replace vendored github.com/modern-go/reflect2 (v1.0.1 crashes under Go >= 1.18)"
VENDOR_R2=$SRC_DIR/vendor/github.com/modern-go/reflect2
[[ -d $VENDOR_R2 ]] || die "$VENDOR_R2 missing in source tree"
rsync -a --delete "$REFLECT2_SRC/" "$VENDOR_R2/" || die "rsync reflect2 failed"

# ---------------------------------------------------------------------------
step "make WHAT=cmd/kube-apiserver (several minutes)"
(
    cd "$SRC_DIR"
    export PATH=$GO_BIN_DIR:$PATH
    export GOPROXY=off CGO_ENABLED=0
    export GOCACHE=$BUILD_DIR/gocache
    export KUBE_GIT_VERSION=$KUBE_VERSION KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
    make WHAT=cmd/kube-apiserver
) || die "make WHAT=cmd/kube-apiserver failed"
OUT=$SRC_DIR/_output/local/bin/linux/amd64/kube-apiserver
[[ -x $OUT ]] || die "build produced no $OUT"

# ---------------------------------------------------------------------------
step "verify and cache binary"
ver=$("$OUT" --version) || die "built binary does not run --version"
[[ $ver == "Kubernetes $KUBE_VERSION" ]] || die "unexpected version: '$ver'"
cp "$OUT" "$BIN.tmp.$$"
mv -f "$BIN.tmp.$$" "$BIN"
cached_binary_ok || die "cached binary $BIN does not run --version"

if [[ ${KEEP_BUILD:-0} == 1 ]]; then
    step "keep build tree (KEEP_BUILD=1)"
    log "build tree kept: $BUILD_DIR ($(du -sh "$BUILD_DIR" | cut -f1))"
else
    step "remove build tree"
    log "removing $BUILD_DIR ($(du -sh "$BUILD_DIR" | cut -f1))"
    rm -rf "$BUILD_DIR"
fi
step finished
log "OK: $BIN ($ver, $(du -h "$BIN" | cut -f1)) total $(( $(date +%s) - T0 ))s"
