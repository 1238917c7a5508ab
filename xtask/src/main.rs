//! `cargo xtask <command>`: everything needed to go from a fresh machine to
//! a running agent or a full test run.

mod bench;
mod cmd;
mod run;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Project automation for the socket-level Service dataplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install, idempotently, everything building and testing needs.
    Setup,
    /// Set up, then build the agent (with its embedded eBPF object) and the
    /// test tools.
    Build(run::BuildArgs),
    /// Set up, build, and run the agent as root on the example manifests,
    /// attached to the cgroup v2 root.
    Run(run::RunArgs),
    /// Set up, build, and run every unit and privileged end-to-end test.
    Test(test::TestArgs),
    /// Set up, build the agent (release) and its OCI image with podman
    /// (`localhost/svc-agent:0.1.0`, deploy/image/build.sh); prints its size.
    Image,
    /// Set up, build (release), and benchmark against kube-proxy's iptables
    /// and nftables layouts; regenerates bench/REPORT.md and bench/results/.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::setup(),
        Command::Build(args) => {
            setup::setup()?;
            run::build(&args)
        }
        Command::Run(args) => {
            setup::setup()?;
            run::run(&args)
        }
        Command::Test(args) => {
            setup::setup()?;
            test::test(&args)
        }
        Command::Image => {
            setup::setup()?;
            run::image()
        }
        Command::Bench(args) => {
            setup::setup()?;
            bench::bench(&args)
        }
    }
}
