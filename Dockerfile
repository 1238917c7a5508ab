# syntax=docker/dockerfile:1
# The svc-agent image that deploy/base/30-daemonset.yaml runs. Build it from the
# repository root on any machine with Docker/BuildKit and network access
# (these development machines have no container engine):
#
#   docker build -t REGISTRY/svc-agent:TAG .
#   docker push REGISTRY/svc-agent:TAG
#
# docs/deploy.md has the details. The build stage installs the project's
# eBPF toolchain exactly as on a development machine (`cargo xtask setup`,
# docs/toolchain.md): Debian bookworm(-security) packages, the extracted
# `svc-bpf` Rust toolchain, bpf-linker. It takes several minutes.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# No bpffs mount: a build container cannot mount one, and building needs none.
RUN SVC_SETUP_SKIP_BPFFS=1 cargo xtask setup
# The agent embeds its eBPF object (built by svc-agent/build.rs).
RUN cargo build --release --locked -p svc-agent \
 && install -D -m 0755 target/release/svc-agent /out/svc-agent

FROM debian:bookworm-slim
# The agent links only glibc. The CA roots are required: the Kubernetes
# client (kube-rs with rustls' platform verifier) refuses to start without
# system roots, even with the in-cluster CA (the tests' pod shape carries the
# host's /etc/ssl for this reason).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/svc-agent /usr/local/bin/svc-agent
ENTRYPOINT ["/usr/local/bin/svc-agent"]
CMD ["run", "--source=kube"]
