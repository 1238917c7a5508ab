//! Running helper commands (`ip`, `bpftool`, the agent) with errors that say
//! what was run and what it printed.

use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

/// Runs `cmd` to completion; fails unless it exits 0. Returns its stdout.
pub(crate) fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion whatever its exit status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output().with_context(|| format!("spawn {cmd:?}"))
}

/// `ip ARGS...`, failing with the output on a non-zero exit.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// SIGKILL `pid`, ignoring "no such process".
pub(crate) fn kill9(pid: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// True when a process with this pid exists (zombies count).
pub(crate) fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Makes the child get SIGKILL when the thread that spawned it dies, so a
/// test process killed mid-run leaves no agent or server running (Linux
/// ties PR_SET_PDEATHSIG to the spawning thread; guards live on the test's
/// thread and kill their process before it ends).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure only calls prctl, which is async-signal-safe, and
    // touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Kills and reaps `child`, for Drop impls: best effort, since it may have
/// exited already (then kill fails and wait returns its status at once),
/// and a Drop has no one to report a failure to.
pub(crate) fn reap(child: &mut std::process::Child) {
    if let Err(e) = child.kill()
        && e.kind() != std::io::ErrorKind::InvalidInput
    {
        eprintln!("svc-tests: killing process {}: {e}", child.id());
    }
    if let Err(e) = child.wait() {
        eprintln!("svc-tests: reaping process {}: {e}", child.id());
    }
}

/// Writes an executable script (a launcher the harness runs instead of the
/// agent binary).
pub(crate) fn write_script(path: &std::path::Path, script: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, script).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}
