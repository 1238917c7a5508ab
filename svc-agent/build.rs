//! Builds `svc-ebpf` for the BPF target and leaves the object in OUT_DIR,
//! where `src/dataplane/loader.rs` embeds it (aya-template layout).
//!
//! The eBPF toolchain is the rustup toolchain `svc-bpf` that `cargo xtask
//! setup` links (Debian's rustc 1.96 with prebuilt `core` for
//! bpfel-unknown-none and LLVM 22, matching bpf-linker); see
//! docs/toolchain.md for why it is not rustup's nightly.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// rustup toolchain name linked by `cargo xtask setup`.
const BPF_TOOLCHAIN: &str = "svc-bpf";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "svc-ebpf")
        .ok_or_else(|| anyhow!("package svc-ebpf not found in the workspace"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("svc-ebpf manifest has no parent directory"))?;

    // aya-ebpf uses a few unstable features; Debian's rustc is a stable
    // compiler, so allow them for that one crate only. (aya-build keeps
    // `-Z build-std` off for a stable channel: the toolchain ships a
    // prebuilt `core` for the BPF targets.)
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    // SAFETY: build scripts are single-threaded.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "aya_ebpf") };

    aya_build::build_ebpf(
        [Package { name: "svc-ebpf", root_dir: root_dir.as_str(), ..Default::default() }],
        Toolchain::Custom(BPF_TOOLCHAIN),
    )
}
