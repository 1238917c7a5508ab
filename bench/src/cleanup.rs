//! Everything the bench creates outside its own memory (processes, network
//! namespaces, cgroups, pins, temp dirs, sysctls) is registered here when
//! created and undone when its guard drops, or all at once on SIGINT/SIGTERM
//! or a panic: a failed or interrupted run leaves nothing behind.

use std::{
    path::PathBuf,
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::sys;

/// Something to undo.
#[derive(Debug, Clone)]
pub(crate) enum Resource {
    /// A child process (SIGKILLed).
    Process(u32),
    /// Pins of an agent: `svc-agent cleanup`, then the directory.
    Pins { agent: PathBuf, dir: PathBuf },
    /// A named network namespace (`ip netns del`; its rules go with it).
    Netns(String),
    /// A child cgroup (its processes killed, then rmdir).
    Cgroup(PathBuf),
    /// A temporary directory.
    Dir(PathBuf),
    /// A sysctl to restore.
    Sysctl { path: String, old: String },
}

impl Resource {
    /// Undo order: processes before what they use.
    fn rank(&self) -> u8 {
        match self {
            Self::Process(_) => 0,
            Self::Pins { .. } => 1,
            Self::Netns(_) => 2,
            Self::Cgroup(_) => 3,
            Self::Dir(_) => 4,
            Self::Sysctl { .. } => 5,
        }
    }

    fn undo(&self) {
        match self {
            Self::Process(pid) => sys::kill(*pid, libc::SIGKILL),
            Self::Pins { agent, dir } => {
                if let Err(e) = Command::new(agent).arg("cleanup").arg("--bpffs").arg(dir).output() {
                    eprintln!("bench cleanup: svc-agent cleanup --bpffs {}: {e}", dir.display());
                }
                if dir.exists()
                    && let Err(e) = std::fs::remove_dir_all(dir)
                {
                    eprintln!("svc-bench: removing {}: {e}", dir.display());
                }
            }
            Self::Netns(name) => remove_netns(name),
            Self::Cgroup(path) => remove_cgroup(path),
            Self::Dir(path) => {
                let _ = std::fs::remove_dir_all(path);
            }
            Self::Sysctl { path, old } => {
                if let Err(e) = sys::write_sysctl(path, old) {
                    eprintln!("svc-bench: restoring {path}: {e:#}");
                }
            }
        }
    }
}

static REGISTRY: Mutex<Vec<(u64, Resource)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Undoes its resource on drop.
#[derive(Debug)]
#[must_use = "the resource is undone when the guard drops"]
pub(crate) struct Guard(u64);

/// Registers `resource`; dropping the guard undoes it.
pub(crate) fn register(resource: Resource) -> Guard {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    lock().push((id, resource));
    Guard(id)
}

impl Guard {
    /// Forgets the resource without undoing it (it was undone another way).
    pub(crate) fn disarm(self) {
        lock().retain(|(id, _)| *id != self.0);
        std::mem::forget(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let resource = {
            let mut reg = lock();
            let pos = reg.iter().position(|(id, _)| *id == self.0);
            pos.map(|p| reg.remove(p).1)
        };
        if let Some(r) = resource {
            r.undo();
        }
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(u64, Resource)>> {
    REGISTRY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Undoes everything still registered.
pub(crate) fn undo_all() {
    let mut all = std::mem::take(&mut *lock());
    all.sort_by_key(|(id, r)| (r.rank(), std::cmp::Reverse(*id)));
    for (_, r) in all {
        r.undo();
    }
}

/// Blocks SIGINT/SIGTERM in every thread (call before spawning any) and
/// undoes everything when one arrives. Children get a clean signal mask
/// from `std::process::Command`.
pub(crate) fn install_signal_handler() {
    // SAFETY: sigset manipulation on local values; pthread_sigmask affects
    // this thread and the threads it spawns later.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is initialised; sigwait writes the signal number.
        unsafe {
            libc::sigwait(&set, &mut sig);
        }
        eprintln!("svc-bench: signal {sig}, cleaning up");
        undo_all();
        std::process::exit(130);
    });
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        undo_all();
    }));
}

fn remove_netns(name: &str) {
    // Kill whatever still runs inside (workers are killed by pid first).
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()) {
            sys::kill(pid, libc::SIGKILL);
        }
    }
    for _ in 0..50 {
        match Command::new("ip").args(["netns", "del", name]).output() {
            Ok(o) if o.status.success() => return,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    eprintln!("svc-bench: could not delete netns {name}");
}

fn remove_cgroup(path: &PathBuf) {
    let procs = path.join("cgroup.procs");
    for _ in 0..100 {
        let pids: Vec<u32> =
            std::fs::read_to_string(&procs).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect();
        pids.iter().for_each(|p| sys::kill(*p, libc::SIGKILL));
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    eprintln!("svc-bench: could not remove cgroup {}", path.display());
}
