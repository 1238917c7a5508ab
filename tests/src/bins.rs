//! Locating the binaries under test: `svc-testkit` (this package) and
//! `svc-agent` (built separately).

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

/// `target/<profile>` of the running executable: integration tests live in
/// `target/<profile>/deps/`, binaries in `target/<profile>/`.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let dir = exe.parent().context("executable has no parent dir")?;
    Ok(if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().context("deps dir has no parent")?.to_path_buf()
    } else {
        dir.to_path_buf()
    })
}

fn locate(env_var: &str, file: &str, how_to_build: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(env_var) {
        Some(p) => PathBuf::from(p),
        None => profile_dir()?.join(file),
    };
    if !path.is_file() {
        bail!("{file} not found at {}: {how_to_build}, or set {env_var} to its path", path.display());
    }
    Ok(path)
}

/// `$SVC_TESTKIT_BIN`, else `target/<profile>/svc-testkit`.
pub fn testkit_bin() -> Result<PathBuf> {
    locate("SVC_TESTKIT_BIN", "svc-testkit", "build it with `cargo build -p svc-tests`")
}

/// `$SVC_AGENT_BIN`, else `target/<profile>/svc-agent`.
pub fn agent_bin() -> Result<PathBuf> {
    locate("SVC_AGENT_BIN", "svc-agent", "build it with `cargo build -p svc-agent`")
}
