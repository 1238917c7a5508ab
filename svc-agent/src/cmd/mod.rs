//! Subcommands.

mod check;
mod cleanup;
mod run;
mod status;
mod trace;

use crate::{
    cli::{Cli, Command},
    error::Result,
};

/// Runs the chosen subcommand.
pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Status(args) if args.check => check::check(&args),
        Command::Status(args) => status::status(&args),
        Command::Cleanup(args) => cleanup::cleanup(&args),
        Command::Trace(args) => trace::trace(&args),
        Command::ProbeConnect { addr } => crate::dataplane::self_check::probe_connect(addr)
            .map_err(|e| crate::error::Error::io(format!("connecting to {addr}"), e)),
    }
}

/// `--cgroup`, or (default) the cgroup v2 mount point: the one place both
/// `run` and `status --check` decide it.
fn cgroup_or_mount(arg: Option<&std::path::Path>) -> Result<std::path::PathBuf> {
    match arg {
        Some(path) => Ok(path.to_owned()),
        None => crate::sys::cgroup2_mount().map_err(|e| crate::error::Error::io("finding the cgroup v2 mount", e)),
    }
}
