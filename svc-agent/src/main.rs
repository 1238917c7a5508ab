//! `svc-agent` entry point: parse the command line, set up logging, run.
use clap::Parser as _;
use svc_agent::{cli, cmd};
use tracing_subscriber::EnvFilter;

/// YAML and JSON decoding allocate per token: with glibc's malloc 40% of a
/// cold start went to malloc/free (0.8-1.2 s at 10k Services, 0.55-0.6 s
/// with mimalloc). Freed pages are returned by `sys::trim_heap`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same
/// number in mimalloc 2 and 3; libmimalloc-sys does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed pages before returning them (ms). The
/// default (1 s in mimalloc 3) let a cold start's transient pages add up;
/// returning them at once (0) cost a TLB shootdown per freed page: with
/// the parse running on both CPUs, the IPIs were 9% of a cold start's
/// samples at 100k Services. 10 ms batches them: dev measurements here,
/// cold start at 100k 6.2-6.5 s against 7.1 s with 0, at 10k 0.55 against
/// 0.64 s, for a peak RSS at 10k of 72 MiB against 71.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Peak RSS over speed where the two hardly differ. A cold start's
/// transient allocations (the parsed objects, the writer's per-batch
/// lists) should reuse each other's pages, not add up:
/// - mimalloc returns freed pages only after a delay: a short one
///   ([`PURGE_DELAY_MS`]);
/// - transparent huge pages make each touched 2 MiB of its arena resident
///   whole, and purges then split them: off for this process.
///
/// Together they took the peak at 10k Services x 10 endpoints from 87 to
/// 76 MiB here (each alone did not help), at the same apply time.
fn tune_memory() -> std::io::Result<()> {
    // SAFETY: mi_option_set only stores the value, which purges read.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    // SAFETY: PR_SET_THP_DISABLE takes integers only and changes nothing
    // but this process's page-fault policy.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

fn main() -> std::process::ExitCode {
    // Before the heap grows: pages already faulted in stay as they are.
    let huge_pages = tune_memory();
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        // kube-client logs every failed connection attempt at ERROR; the
        // agent's own watch loop reports an outage once (and retries at
        // debug), so that module is silenced by default.
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal (and never with NO_COLOR):
        // logs are usually collected, grepped or piped.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    if let Err(e) = huge_pages {
        tracing::debug!("transparent huge pages stay on for the agent: {e}");
    }
    match cmd::dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}

/// "outer: cause: root cause", since our errors wrap aya's and the kernel's.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
