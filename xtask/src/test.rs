//! `cargo xtask test`: unit tests (no privileges needed), lints, then the
//! privileged end-to-end tests against the real kernel.

use anyhow::Context as _;
use clap::Args;

use crate::{cmd, run, setup};

/// Options of `xtask test`.
#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Only the unit tests.
    #[arg(long, conflicts_with = "e2e_only")]
    unit_only: bool,
    /// Only the end-to-end tests.
    #[arg(long)]
    e2e_only: bool,
    /// Skip clippy.
    #[arg(long)]
    no_lint: bool,
    /// Filter passed to the test binaries (after `--`).
    #[arg(last = true)]
    filter: Vec<String>,
}

pub(crate) fn test(args: &TestArgs) -> anyhow::Result<()> {
    run::build(&run::BuildArgs { release: false })?;
    if !args.e2e_only {
        if !args.no_lint {
            cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))
                .context("cargo fmt --check found unformatted code (run `cargo fmt --all`)")?;
            // svc-ebpf: no clippy exists for the BPF toolchain (Debian's
            // rustc-web ships none, docs/toolchain.md), so its code is
            // linted as compiled for the host, with panic=abort as in the
            // BPF build, in its own target dir (other RUSTFLAGS would
            // rebuild everything else).
            cmd::run(
                cmd::cargo()
                    .args(["clippy", "--package", "svc-ebpf", "--target-dir", "target/clippy-ebpf"])
                    .args(["--", "-D", "warnings"])
                    .env("RUSTFLAGS", "-C panic=abort"),
            )
            .context("clippy found problems in svc-ebpf")?;
            cmd::run(cmd::cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "svc-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
            .context("clippy found problems")?;
        }
        cmd::run(
            cmd::cargo()
                .args(["test", "--workspace", "--exclude", "svc-tests", "--exclude", "svc-ebpf"])
                .arg("--")
                .args(&args.filter),
        )?;
    }
    if !args.unit_only {
        // The Kubernetes-source and deploy tests start real API servers.
        setup::apiserver()?;
        let agent = run::binary("svc-agent", false);
        let testkit = run::binary("svc-testkit", false);
        cmd::run(
            cmd::cargo()
                .args(["test", "--package", "svc-tests"])
                .env("SVC_AGENT_BIN", &agent)
                .env("SVC_TESTKIT_BIN", &testkit)
                .arg("--")
                .args(&args.filter),
        )?;
    }
    Ok(())
}
