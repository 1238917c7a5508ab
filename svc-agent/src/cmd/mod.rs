//! Subcommands.

mod cleanup;
mod run;
mod status;

use crate::{
    cli::{Cli, Command},
    error::Result,
};

/// Runs the chosen subcommand.
pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Status(args) => status::status(&args),
        Command::Cleanup(args) => cleanup::cleanup(&args),
    }
}
