#!/usr/bin/env bash
# build.sh BINARY IMAGE: builds the agent's OCI image IMAGE (e.g.
# localhost/svc-agent:0.1.0) from an svc-agent binary built on this machine,
# with podman and no registry: `FROM scratch` plus exactly what the binary
# needs, the dynamic loader and the libraries `ldd` names (the agent links
# only glibc and libgcc_s), and the CA roots (the Kubernetes client refuses to
# start without system roots). Prints the image's size in bytes on stdout.
# `cargo xtask image` calls it with the release binary; tests/tests/image.rs
# with the binary under test. docs/deploy.md has the details.
set -Eeuo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 BINARY IMAGE" >&2; exit 2; }
BINARY=$1
IMAGE=$2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ -x $BINARY ]] || { echo "build.sh: $BINARY is not an executable" >&2; exit 1; }
[[ -s $CA_BUNDLE ]] || { echo "build.sh: no CA bundle at $CA_BUNDLE (install ca-certificates)" >&2; exit 1; }

CONTEXT=$(mktemp -d /tmp/svc-image.XXXXXX)
trap 'rm -rf "$CONTEXT"' EXIT
ROOT=$CONTEXT/rootfs
install -D -m 0755 "$BINARY" "$ROOT/usr/local/bin/svc-agent"
# Every library the binary loads, at the path the loader looks for it.
while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$ROOT$lib"
done < <(ldd "$BINARY" | grep -o '/[^ ]*')
install -D -m 0644 "$CA_BUNDLE" "$ROOT$CA_BUNDLE"
cp "$HERE/Containerfile" "$CONTEXT/Containerfile"

# cgroupfs and a file event log: podman works without systemd.
podman --cgroup-manager=cgroupfs --events-backend=file build --quiet -t "$IMAGE" -f "$CONTEXT/Containerfile" "$CONTEXT" >/dev/null
podman --cgroup-manager=cgroupfs --events-backend=file image inspect --format '{{.Size}}' "$IMAGE"
