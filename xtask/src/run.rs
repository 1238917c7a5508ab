//! `cargo xtask build` and `cargo xtask run`.

use std::{os::unix::process::CommandExt as _, path::PathBuf};

use anyhow::bail;
use clap::Args;

use crate::cmd;

/// Options of `xtask build`.
#[derive(Debug, Args)]
pub(crate) struct BuildArgs {
    /// Build optimised binaries.
    #[arg(long)]
    pub(crate) release: bool,
}

/// Options of `xtask run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Build optimised binaries.
    #[arg(long)]
    release: bool,
    /// Manifest directory (default: the repository's examples/).
    #[arg(long)]
    source: Option<PathBuf>,
    /// More arguments for `svc-agent run` (after `--`).
    #[arg(last = true)]
    agent_args: Vec<String>,
}

/// Builds the agent and the test tools.
pub(crate) fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let mut cargo = cmd::cargo();
    cargo.args(["build", "--package", "svc-agent", "--package", "svc-tests", "--bins"]);
    if args.release {
        cargo.arg("--release");
    }
    cmd::run(&mut cargo)
}

/// Path of a built binary.
pub(crate) fn binary(name: &str, release: bool) -> PathBuf {
    cmd::workspace_root().join("target").join(if release { "release" } else { "debug" }).join(name)
}

/// Builds and replaces this process with the agent.
pub(crate) fn run(args: &RunArgs) -> anyhow::Result<()> {
    build(&BuildArgs { release: args.release })?;
    let source = args.source.clone().unwrap_or_else(|| cmd::workspace_root().join("examples"));
    let agent = binary("svc-agent", args.release);
    eprintln!("xtask: {} run --source {} {}", agent.display(), source.display(), args.agent_args.join(" "));
    let err = std::process::Command::new(&agent).arg("run").arg("--source").arg(&source).args(&args.agent_args).exec();
    bail!("exec {}: {err}", agent.display())
}

/// The image `cargo xtask image` builds (the DaemonSet's `image:`).
const IMAGE: &str = "localhost/svc-agent:0.1.0";

/// Builds the release agent and its image (deploy/image/build.sh).
pub(crate) fn image() -> anyhow::Result<()> {
    build(&BuildArgs { release: true })?;
    let script = cmd::workspace_root().join("deploy/image/build.sh");
    let size = cmd::output(std::process::Command::new(&script).arg(binary("svc-agent", true)).arg(IMAGE))?;
    let bytes: f64 = size.trim().parse().unwrap_or(0.0);
    eprintln!("image {IMAGE}: {:.1} MiB", bytes / (1024.0 * 1024.0));
    Ok(())
}
