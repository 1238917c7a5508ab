//! The self-check (`svc-agent status --check`, and the agent's own
//! periodic check behind `/readyz` and `svc_agent_self_check_*`): a
//! silent attach failure (programs on the wrong cgroup, detached behind
//! the agent's back, pins that name other programs than the ones running)
//! is a known field failure (cilium#48420), so the check looks at what
//! the kernel runs, not at what the agent believes:
//!
//! 1. every socket program is pinned, and its pinned link runs exactly
//!    the pinned program;
//! 2. that program is attached at the configured cgroup's hook
//!    (BPF_PROG_QUERY);
//! 3. a probe: a transient frontend `127.0.0.240:P` -> `127.0.0.1:P` (P:
//!    the port of a listener the check opens, so concurrent checks never
//!    share one), and a connect to it from a process in a new child cgroup
//!    of the configured one (or, where a cgroup namespace forbids moving
//!    it there, a pod's, from the agent's own cgroup, under the node's
//!    root), which must reach the listener. Untranslated,
//!    the connect is refused (nothing listens on 127.0.0.240), so only a
//!    working connect4 passes. The frontend and the child cgroup are
//!    removed afterwards; a frontend left by a crashed check is not the
//!    agent's, and its next start removes it like any stale entry.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, Map, MapData},
    programs::{
        ProgramInfo,
        links::{FdLink, PinnedLink},
    },
};
use svc_common::{Backend4, Frontend, FrontendKey4, fe_flags, names, port_be, proto, scope};

use super::pins::PinLayout;
use crate::sys::cgroup_query;

/// The probe frontend's address (loopback: a probe never leaves the node,
/// and untranslated it is refused at once).
pub(crate) const PROBE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 240);
/// Whether a frontend address is a self-check probe's.
pub(crate) fn is_probe(addr: std::net::SocketAddr) -> bool {
    addr.ip() == std::net::IpAddr::V4(PROBE_IP)
}

/// This executable, for the probe's child: the kernel's link works in any
/// mount namespace (the path `current_exe` reads may not exist in this one:
/// a pod's image holds the binary under another name than the node sees).
pub(crate) const SELF_EXE: &str = "/proc/self/exe";

/// How long the probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One thing the check found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Problem {
    #[error("{program}: nothing pinned at {path} ({detail})")]
    MissingPin { program: &'static str, path: String, detail: String },
    #[error("{program}: its pinned link runs program {running}, but the pinned program is {pinned}")]
    PinMismatch { program: &'static str, running: u32, pinned: u32 },
    #[error("{program}: program {id} is not attached at cgroup {cgroup} (attached there: {attached:?})")]
    NotAttached { program: &'static str, id: u32, cgroup: String, attached: Vec<u32> },
    #[error("probe: {0}")]
    Probe(String),
    #[error("{0}")]
    Io(String),
}

/// The `reason` label values, in [`Problem::label`] order.
pub(crate) const REASONS: [&str; 5] = ["missing_pin", "pin_mismatch", "not_attached", "probe", "io"];

impl Problem {
    /// The metric label of this kind of problem ([`REASONS`]).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::MissingPin { .. } => REASONS[0],
            Self::PinMismatch { .. } => REASONS[1],
            Self::NotAttached { .. } => REASONS[2],
            Self::Probe(_) => REASONS[3],
            Self::Io(_) => REASONS[4],
        }
    }
}

/// Runs the check against the pins under `layout` and the programs at
/// `cgroup`; the probe runs `probe_exe probe-connect ADDR` (this binary)
/// unless `probe_exe` is `None`. Empty: all is well.
pub(crate) fn check(layout: &PinLayout, cgroup: &Path, probe_exe: Option<&Path>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let dir = match File::open(cgroup) {
        Ok(d) => d,
        Err(e) => return vec![Problem::Io(format!("opening cgroup {}: {e}", cgroup.display()))],
    };
    for program in names::SOCK_PROGRAMS {
        if let Err(p) = check_program(layout, program, &dir, cgroup) {
            problems.push(p);
        }
    }
    // The probe runs whatever the pins say: it is what shows a hook that
    // does not translate, whatever the reason.
    if let Some(exe) = probe_exe
        && let Err(e) = probe(layout, cgroup, exe)
    {
        problems.push(Problem::Probe(e));
    }
    problems
}

fn check_program(layout: &PinLayout, program: &'static str, dir: &File, cgroup: &Path) -> Result<(), Problem> {
    let missing = |path: PathBuf, e: &dyn std::fmt::Display| Problem::MissingPin {
        program,
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    let prog_path = layout.program(program);
    let pinned = ProgramInfo::from_pin(&prog_path).map_err(|e| missing(prog_path.clone(), &e))?.id();
    let link_path = layout.link(program);
    let link = PinnedLink::from_pin(&link_path).map_err(|e| missing(link_path.clone(), &e))?;
    let running = FdLink::from(link).info().map_err(|e| missing(link_path.clone(), &e))?.program_id();
    if running != pinned {
        return Err(Problem::PinMismatch { program, running, pinned });
    }
    let attach_type = cgroup_query::attach_type(program).expect("every socket program has a hook");
    let attached = cgroup_query::program_ids(dir, attach_type, false)
        .map_err(|e| Problem::Io(format!("querying {program}'s hook at {}: {e}", cgroup.display())))?;
    if !attached.contains(&running) {
        return Err(Problem::NotAttached { program, id: running, cgroup: cgroup.display().to_string(), attached });
    }
    Ok(())
}

/// Removes what the probe set up, also on an early return.
struct ProbeSetup {
    frontends: HashMap<MapData, FrontendKey4, Frontend>,
    key: FrontendKey4,
    child_cgroup: Option<PathBuf>,
}

impl Drop for ProbeSetup {
    fn drop(&mut self) {
        if let Err(e) = self.frontends.remove(&self.key) {
            tracing::warn!("self-check: removing the probe frontend: {e}");
        }
        if let Some(dir) = &self.child_cgroup
            && let Err(e) = std::fs::remove_dir(dir)
        {
            tracing::warn!("self-check: removing {}: {e}", dir.display());
        }
    }
}

fn probe(layout: &PinLayout, cgroup: &Path, exe: &Path) -> Result<(), String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("listening: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("listener: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let target = SocketAddrV4::new(PROBE_IP, port);

    let path = layout.map(names::FRONTENDS);
    let data = MapData::from_pin(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
    let frontends: HashMap<MapData, FrontendKey4, Frontend> = HashMap::try_from(map).map_err(|e| e.to_string())?;
    let key = FrontendKey4 { addr: PROBE_IP.octets(), port: port_be(port), proto: proto::TCP, scope: scope::ALL };
    let mut value = Frontend { count: 1, flags: fe_flags::KIND_CLUSTER_IP, ..Frontend::default() };
    value.inline[0] = Backend4 { addr: Ipv4Addr::LOCALHOST.octets(), port: port_be(port), _pad: 0 };
    let mut setup = ProbeSetup { frontends, key, child_cgroup: None };
    setup.frontends.insert(key, value, 0).map_err(|e| format!("writing the probe frontend {target}: {e}"))?;

    let child = cgroup.join(format!("svc-agent-check-{}-{port}", std::process::id()));
    std::fs::create_dir(&child).map_err(|e| format!("creating {}: {e}", child.display()))?;
    setup.child_cgroup = Some(child.clone());

    // The child waits for a line on stdin before connecting: by then it
    // has been moved into the child cgroup, and its socket is created
    // there.
    let mut prober = Command::new(exe)
        .args(["probe-connect", &target.to_string()])
        // Pipes only: a container's /dev may lack /dev/null.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    let moved = std::fs::write(child.join("cgroup.procs"), prober.id().to_string());
    let go = prober.stdin.take().map(|mut s| s.write_all(b"go\n"));
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let status = loop {
        match prober.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _killed = prober.kill();
                let _reaped = prober.wait();
                break None;
            }
        }
    };
    if let Err(e) = &moved {
        // In a private cgroup namespace (a pod's, on cgroup v2) a process
        // can only be moved within the namespace's root: the probe then
        // connects from the agent's own cgroup, which, in a pod under the
        // node's root cgroup, is a descendant of it too.
        tracing::debug!("self-check: the probe stays in the agent's cgroup (moving it into {}: {e})", child.display());
    }
    if let Some(Err(e)) = go {
        return Err(format!("starting the probe: {e}"));
    }
    let mut stderr = String::new();
    if let Some(mut s) = prober.stderr.take() {
        let _read = s.read_to_string(&mut stderr);
    }
    match status {
        None => return Err(format!("the probe connect to {target} did not finish within {PROBE_TIMEOUT:?}")),
        Some(s) if !s.success() => {
            let from = if moved.is_ok() { child.display().to_string() } else { "the agent's own cgroup".to_owned() };
            return Err(format!("a connect to {target} from {from} was not translated: {}", stderr.trim()));
        }
        Some(_) => {}
    }
    // The connect succeeded: it must have reached this listener.
    loop {
        match listener.accept() {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("the probe connected, but not to the probe's backend ({e})")),
        }
    }
}

/// `svc-agent probe-connect ADDR`: waits for a line on stdin, then
/// connects to `addr` (at most 2 s); the check's child process.
pub(crate) fn probe_connect(addr: SocketAddrV4) -> std::io::Result<()> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    std::net::TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).map(drop)
}

/// Runs the check every `interval` on a thread of its own (it spawns the
/// probe and waits for it), the first one interval after the start (the
/// programs were just attached; /readyz waits for the first sync anyway);
/// findings go to
/// `metrics` (and so to /readyz), and a change of verdict to the log.
pub(crate) fn spawn(
    layout: PinLayout,
    cgroup: PathBuf,
    interval: Duration,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> crate::error::Result<()> {
    let exe = PathBuf::from(SELF_EXE);
    std::thread::Builder::new()
        .name("self-check".into())
        .spawn(move || {
            let mut last: Option<Vec<Problem>> = None;
            loop {
                std::thread::sleep(interval);
                let problems = check(&layout, &cgroup, Some(&exe));
                if last.as_ref() != Some(&problems) {
                    if problems.is_empty() {
                        tracing::info!(cgroup = %cgroup.display(), "self-check passed");
                    }
                    for p in &problems {
                        tracing::error!(reason = p.label(), "self-check: {p}");
                    }
                }
                metrics.self_checked(&problems);
                last = Some(problems);
            }
        })
        .map_err(|e| crate::error::Error::io("starting the self-check thread", e))?;
    Ok(())
}
