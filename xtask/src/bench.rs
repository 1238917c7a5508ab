//! `cargo xtask bench`: builds the release agent and the bench, then runs
//! `svc-bench run` (which needs root), writing bench/REPORT.md and
//! bench/results/ (or target/bench-quick/ with `--quick`).

use clap::Args;

use crate::{cmd, run};

/// Options of `xtask bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Small sizes and few rounds: a smoke run of every measurement
    /// (about 2 minutes), written under target/bench-quick/.
    #[arg(long)]
    quick: bool,
    /// Never run perf, even where a target is missed.
    #[arg(long)]
    no_profile: bool,
}

pub(crate) fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    cmd::run(cmd::cargo().args(["build", "--release", "--package", "svc-agent", "--package", "svc-bench"]))?;
    let root = cmd::workspace_root();
    let out = if args.quick { root.join("target").join("bench-quick") } else { root.join("bench") };
    let mut bench = std::process::Command::new(run::binary("svc-bench", true));
    bench.arg("run").arg("--agent").arg(run::binary("svc-agent", true)).arg("--out").arg(&out).current_dir(&root);
    if args.quick {
        bench.arg("--quick");
    }
    if args.no_profile {
        bench.arg("--no-profile");
    }
    cmd::run(&mut bench)
}
