//! `svc-agent trace`: streams the socket programs' translation events
//! (`SVC_TRACE`), like `cilium monitor -t trace-sock`. It switches the
//! programs' events on (`SVC_TRACE_ON` = its pid) for as long as it runs,
//! and off again however it ends (the agent switches off the trace of a
//! tracer that was killed). Pending events are printed first: what the
//! programs wrote while no trace ran (nothing, if all is well).

use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use aya::maps::{MapData, RingBuf};
use serde::Serialize;
use svc_common::{TraceEvent, names, port_host, proto, trace_hook, trace_verdict};

use crate::{
    cli::{Output, TraceArgs},
    dataplane::{
        Table as _,
        maps::{BpfMaps, open_pinned_map},
        pins::PinLayout,
        trace::{TraceSwitch, alive},
        writer::name_str,
    },
    error::{Error, Result},
    sys,
};

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// One event, as printed.
#[derive(Debug, Serialize)]
struct Line {
    /// RFC 3339, UTC.
    time: String,
    hook: &'static str,
    protocol: &'static str,
    netns_cookie: u64,
    cgroup_id: u64,
    socket_cookie: u64,
    /// What the call named.
    from: String,
    /// What it became; absent for a refusal.
    to: Option<String>,
    /// `translated` or `refused` (no usable endpoint).
    verdict: &'static str,
    /// `namespace/name:port` of the Service.
    service: Option<String>,
}

/// Which events are printed.
struct Filter {
    /// The frontends of `--service` (`None`: any).
    frontends: Option<HashSet<SocketAddr>>,
    cgroup_id: Option<u64>,
    proto: Option<u8>,
}

impl Filter {
    fn admits(&self, e: &TraceEvent, frontend: SocketAddr) -> bool {
        self.frontends.as_ref().is_none_or(|f| f.contains(&frontend))
            && self.cgroup_id.is_none_or(|id| id == e.cgroup_id)
            && self.proto.is_none_or(|p| p == e.proto)
    }
}

fn address(family: u8, addr: [u8; 16], port_be: u16) -> SocketAddr {
    let ip = if family == 4 {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(addr))
    };
    SocketAddr::new(ip, port_host(port_be))
}

/// A forward hook names the frontend; a reverse one turns a backend into it.
fn is_reverse(hook: u8) -> bool {
    matches!(hook, trace_hook::RECVMSG4 | trace_hook::GETPEER4 | trace_hook::RECVMSG6 | trace_hook::GETPEER6)
}

pub(super) fn trace(args: &TraceArgs) -> Result<()> {
    let layout = PinLayout::new(&args.bpffs);
    let mut switch = TraceSwitch::open(&layout)?;
    let me = std::process::id();
    match switch.tracer()? {
        0 => {}
        pid if pid != me && alive(pid) => {
            return Err(Error::Environment(format!("another trace runs (pid {pid}); one at a time")));
        }
        _ => {}
    }
    let maps = BpfMaps::open_pinned(&layout)?;
    let dump = maps.dump().map_err(|e| Error::Environment(e.to_string()))?;
    let names_by_id: HashMap<u32, String> = dump
        .meta
        .iter()
        .map(|(id, m)| (*id, format!("{}/{}:{}", name_str(&m.namespace), name_str(&m.name), name_str(&m.port_name))))
        .collect();
    // Frontend -> Service, for reverse events and refusals (no svc_id).
    let service_of: HashMap<SocketAddr, String> = dump
        .frontends
        .iter()
        .filter_map(|(k, fe)| names_by_id.get(&fe.svc_id()).map(|n| (k.socket_addr(), n.clone())))
        .collect();
    let frontends = match &args.service {
        None => None,
        Some(svc) => {
            let set: HashSet<SocketAddr> =
                service_of.iter().filter(|(_, n)| n.split(':').next() == Some(svc.as_str())).map(|(a, _)| *a).collect();
            if set.is_empty() {
                return Err(Error::Environment(format!("no programmed frontend of Service {svc}")));
            }
            Some(set)
        }
    };
    let cgroup_id = match &args.cgroup {
        None => None,
        Some(path) => Some(std::fs::metadata(path).map_err(|e| Error::io(format!("{}", path.display()), e))?.ino()),
    };
    let filter = Filter { frontends, cgroup_id, proto: args.protocol.map(crate::cli::TraceProto::number) };

    let map = open_pinned_map(&layout, names::TRACE)?;
    let mut ring: RingBuf<MapData> = RingBuf::try_from(map).map_err(|e| Error::map(names::TRACE, e))?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    switch.set(me)?;
    let result = stream(&mut ring, &filter, &names_by_id, &service_of, args);
    let off = switch.set(0);
    result.and(off)
}

fn stream(
    ring: &mut RingBuf<MapData>,
    filter: &Filter,
    names_by_id: &HashMap<u32, String>,
    service_of: &HashMap<SocketAddr, String>,
    args: &TraceArgs,
) -> Result<()> {
    eprintln!("tracing translations (Ctrl-C to stop)");
    let deadline = args.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let mut printed = 0u64;
    let mut out = std::io::stdout().lock();
    loop {
        while let Some(item) = ring.next() {
            if item.len() < size_of::<TraceEvent>() {
                continue;
            }
            let e: TraceEvent = bytemuck::pod_read_unaligned(&item[..size_of::<TraceEvent>()]);
            drop(item);
            let from = address(e.family, e.addr, e.port);
            let to = (e.verdict == trace_verdict::TRANSLATED).then(|| address(e.family, e.to, e.to_port));
            let frontend = if is_reverse(e.hook) { to.unwrap_or(from) } else { from };
            if !filter.admits(&e, frontend) {
                continue;
            }
            let line = Line {
                time: wall_time(e.time_ns),
                hook: trace_hook::NAMES.get(usize::from(e.hook)).copied().unwrap_or("?"),
                protocol: if e.proto == proto::TCP { "tcp" } else { "udp" },
                netns_cookie: e.netns_cookie,
                cgroup_id: e.cgroup_id,
                socket_cookie: e.socket_cookie,
                from: from.to_string(),
                to: to.map(|t| t.to_string()),
                verdict: if e.verdict == trace_verdict::REFUSED { "refused" } else { "translated" },
                service: names_by_id.get(&e.svc_id).or_else(|| service_of.get(&frontend)).cloned(),
            };
            let text = match args.output {
                Output::Json => serde_json::to_string(&line).map_err(|e| Error::Environment(e.to_string()))?,
                Output::Table => table_line(&line),
            };
            let written = writeln!(out, "{text}").and_then(|()| out.flush());
            if let Err(e) = written {
                // A closed pipe (`trace | head`) ends the trace quietly.
                return if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(Error::io("writing", e)) };
            }
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                return Ok(());
            }
        }
        if STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn table_line(l: &Line) -> String {
    let what = match &l.to {
        Some(to) => format!("{} -> {to}", l.from),
        None => format!("{} refused (no usable endpoint)", l.from),
    };
    format!(
        "{} {:<12} {} {what} {} netns={} cgroup={} cookie={}",
        l.time,
        l.hook,
        l.protocol,
        l.service.as_deref().unwrap_or("-"),
        l.netns_cookie,
        l.cgroup_id,
        l.socket_cookie
    )
}

/// An event's monotonic time as wall-clock time.
fn wall_time(event_ns: u64) -> String {
    let age = Duration::from_nanos(sys::monotonic_ns().saturating_sub(event_ns));
    let at = SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    k8s_openapi::jiff::Timestamp::new(since.as_secs() as i64, since.subsec_nanos() as i32)
        .map_or_else(|_| format!("{:.6}", since.as_secs_f64()), |t| t.to_string())
}
