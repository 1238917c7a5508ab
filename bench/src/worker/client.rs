//! The client side of the worker: timed connect loops, bulk transfers,
//! UDP round trips and correctness checks, with raw syscalls so that the
//! loop itself costs as little as possible and the same in every mode.

use std::{
    io::Write as _,
    net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};

use crate::{
    addressing::{self, BACKEND_PORT, SERVICE_PORT, Topology},
    protocol::{BulkStats, ConnectPlan, ConnectStats, Target, VerifyPlan},
    stats::Summary,
    sys,
    worker::backends::Recorder,
};

/// The addresses a plan connects to, generated before timing starts.
pub(crate) fn targets(plan: &ConnectPlan, n: usize) -> Vec<SocketAddr> {
    let topo = plan.topology;
    let mut rng = StdRng::seed_from_u64(plan.seed);
    (0..n)
        .map(|_| {
            let i = match plan.target {
                // (The UDP targets use the one UDP Service.)
                Target::Last | Target::Datagram | Target::Query => topo.services - 1,
                Target::Random => rng.random_range(0..topo.services),
            };
            // Addresses straight from the index (no ServiceSpec: its name
            // string would show up in profiles of the worker).
            let v4 = if plan.target.is_udp() {
                let udp = Topology::extras()[1].backends[0];
                if plan.direct { udp } else { SocketAddrV4::new(addressing::UDP_VIP, addressing::UDP_PORT) }
            } else if plan.direct {
                let j = rng.random_range(0..topo.endpoints);
                SocketAddrV4::new(addressing::backend(i, j, topo.endpoints), BACKEND_PORT)
            } else if let Some(node) = plan.node {
                SocketAddrV4::new(node, addressing::node_port(i))
            } else {
                SocketAddrV4::new(addressing::vip(i), SERVICE_PORT)
            };
            plan.family.dial(v4)
        })
        .collect()
}

/// A destination as connect(2) takes it, built before timing starts.
enum RawAddr {
    V4(libc::sockaddr_in),
    V6(libc::sockaddr_in6),
}

impl RawAddr {
    fn new(addr: SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(a) => {
                // SAFETY: sockaddr_in is plain data.
                let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                sa.sin_family = libc::AF_INET as libc::sa_family_t;
                sa.sin_port = a.port().to_be();
                sa.sin_addr.s_addr = u32::from(*a.ip()).to_be();
                Self::V4(sa)
            }
            SocketAddr::V6(a) => {
                // SAFETY: sockaddr_in6 is plain data.
                let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sa.sin6_port = a.port().to_be();
                sa.sin6_addr.s6_addr = a.ip().octets();
                Self::V6(sa)
            }
        }
    }

    /// (socket domain, address pointer, address length).
    #[inline]
    fn raw(&self) -> (i32, *const libc::sockaddr, libc::socklen_t) {
        match self {
            Self::V4(sa) => {
                (libc::AF_INET, (sa as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as _)
            }
            Self::V6(sa) => {
                (libc::AF_INET6, (sa as *const libc::sockaddr_in6).cast(), size_of::<libc::sockaddr_in6>() as _)
            }
        }
    }
}

fn setsockopt<T>(fd: i32, level: i32, name: i32, value: &T) {
    // SAFETY: `value` is a valid T of the size passed.
    unsafe {
        libc::setsockopt(fd, level, name, (value as *const T).cast(), size_of::<T>() as libc::socklen_t);
    }
}

/// One connection: socket(), SO_LINGER {on, 0} (close sends RST: no
/// TIME_WAIT, so neither ephemeral ports nor conntrack's 120 s TIME_WAIT
/// entries pile up over a run), a 2 s send timeout (bounds a connect whose
/// SYN is dropped), connect(), optionally getpeername(), close().
/// Returns (connect ns, whole cycle ns) or the errno.
#[inline]
fn one_connect(addr: &RawAddr, getpeername: bool) -> Result<(u64, u64), i32> {
    let (domain, sa, sa_len) = addr.raw();
    let t0 = Instant::now();
    // SAFETY: plain socket syscalls on an fd we own and close.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(*libc::__errno_location());
        }
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, &libc::linger { l_onoff: 1, l_linger: 0 });
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, &libc::timeval { tv_sec: 2, tv_usec: 0 });
        let t1 = Instant::now();
        let rc = libc::connect(fd, sa, sa_len);
        let t2 = Instant::now();
        let err = if rc == 0 { 0 } else { *libc::__errno_location() };
        if rc == 0 && getpeername {
            let mut peer: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            libc::getpeername(fd, (&raw mut peer).cast(), &mut len);
        }
        libc::close(fd);
        let t3 = Instant::now();
        if err != 0 {
            return Err(err);
        }
        Ok(((t2 - t1).as_nanos() as u64, (t3 - t0).as_nanos() as u64))
    }
}

/// One UDP round trip over `fd` (an unconnected socket of `addr`'s
/// family): sendto(), recvfrom(). Returns the round trip (ns) twice, as
/// (connect, cycle), or the errno.
#[inline]
fn one_datagram(fd: i32, addr: &RawAddr) -> Result<(u64, u64), i32> {
    let (_, sa, sa_len) = addr.raw();
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    // SAFETY: plain socket syscalls on a valid fd and buffers.
    unsafe {
        if libc::sendto(fd, b"q".as_ptr().cast(), 1, 0, sa, sa_len) < 0 {
            return Err(*libc::__errno_location());
        }
        let mut from: libc::sockaddr_in6 = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        if libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, (&raw mut from).cast(), &mut len) < 0 {
            return Err(*libc::__errno_location());
        }
    }
    let rtt = t0.elapsed().as_nanos() as u64;
    Ok((rtt, rtt))
}

/// One DNS-like query, as glibc's resolver makes it: socket(), connect()
/// (timed alone), send(), recv() (1 s timeout), close(). Returns (connect
/// ns, whole query ns) or the errno.
#[inline]
fn one_query(addr: &RawAddr) -> Result<(u64, u64), i32> {
    let (domain, sa, sa_len) = addr.raw();
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    // SAFETY: plain socket syscalls on an fd we own and close.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(*libc::__errno_location());
        }
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &libc::timeval { tv_sec: 1, tv_usec: 0 });
        let t1 = Instant::now();
        let rc = libc::connect(fd, sa, sa_len);
        let t2 = Instant::now();
        let ok = rc == 0
            && libc::send(fd, b"q".as_ptr().cast(), 1, 0) >= 0
            && libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) >= 0;
        let err = if ok { 0 } else { *libc::__errno_location() };
        libc::close(fd);
        let t3 = Instant::now();
        if err != 0 {
            return Err(err);
        }
        Ok(((t2 - t1).as_nanos() as u64, (t3 - t0).as_nanos() as u64))
    }
}

/// What one timed sample does.
enum Exchange {
    Connect {
        getpeername: bool,
    },
    /// Round trips over this unconnected socket (closed on drop).
    Datagram(i32),
    Query,
}

impl Exchange {
    fn new(plan: &ConnectPlan, first: Option<&RawAddr>) -> std::io::Result<Self> {
        Ok(match plan.target {
            Target::Datagram => {
                let domain = first.map_or(libc::AF_INET, |a| a.raw().0);
                // SAFETY: plain socket syscalls on the new fd.
                let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &libc::timeval { tv_sec: 1, tv_usec: 0 });
                Self::Datagram(fd)
            }
            Target::Query => Self::Query,
            Target::Last | Target::Random => Self::Connect { getpeername: plan.getpeername },
        })
    }

    #[inline]
    fn once(&self, addr: &RawAddr) -> Result<(u64, u64), i32> {
        match self {
            Self::Connect { getpeername } => one_connect(addr, *getpeername),
            Self::Datagram(fd) => one_datagram(*fd, addr),
            Self::Query => one_query(addr),
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Self::Datagram(fd) = self {
            // SAFETY: our fd, closed once.
            unsafe { libc::close(*fd) };
        }
    }
}

/// Runs a timed connect loop (or UDP exchanges, for a UDP target).
pub(crate) fn connect_loop(plan: &ConnectPlan) -> ConnectStats {
    let addrs: Vec<RawAddr> =
        targets(plan, (plan.count + plan.warmup) as usize).into_iter().map(RawAddr::new).collect();
    let exchange = match Exchange::new(plan, addrs.first()) {
        Ok(e) => e,
        Err(e) => return ConnectStats { errors: 1, first_error: Some(e.to_string()), ..ConnectStats::default() },
    };
    for sa in &addrs[..plan.warmup as usize] {
        let _ = exchange.once(sa);
    }
    let mut connect = Vec::with_capacity(plan.count as usize);
    let mut cycle = Vec::with_capacity(plan.count as usize);
    let mut stats = ConnectStats::default();
    let deadline = Duration::from_millis(plan.max_millis);
    let (cpu0, sys0, start) = (sys::thread_cpu(), sys::process_cpu(), Instant::now());
    for sa in &addrs[plan.warmup as usize..] {
        match exchange.once(sa) {
            Ok((c, y)) => {
                connect.push(c);
                cycle.push(y);
            }
            Err(errno) => {
                stats.errors += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(std::io::Error::from_raw_os_error(errno).to_string());
                }
            }
        }
        // Checked every 64 connects: Instant::now() is cheap but not free.
        if (connect.len() + stats.errors as usize).is_multiple_of(64) && start.elapsed() > deadline {
            break;
        }
    }
    stats.wall_ns = start.elapsed().as_nanos() as u64;
    stats.client_cpu_ns = (sys::thread_cpu() - cpu0).as_nanos() as u64;
    stats.process_cpu_ns = sys::process_cpu().saturating_sub(sys0).as_nanos() as u64;
    stats.samples = connect.len() as u32;
    stats.slow = connect.iter().filter(|&&c| c > 10_000_000).count() as u32;
    if plan.raw {
        stats.raw_connect.clone_from(&connect);
        stats.raw_cycle.clone_from(&cycle);
    }
    stats.connect = Summary::of(&mut connect);
    stats.cycle = Summary::of(&mut cycle);
    stats
}

/// Sends over one connection for `millis` and reports the bytes written.
pub(crate) fn bulk(target: SocketAddr, millis: u64) -> Result<BulkStats> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .with_context(|| format!("bulk connect to {target}"))?;
    let buf = vec![0x5au8; 1 << 18];
    let deadline = Duration::from_millis(millis);
    let (cpu0, sys0, start) = (sys::thread_cpu(), sys::process_cpu(), Instant::now());
    let mut bytes = 0u64;
    while start.elapsed() < deadline {
        stream.write_all(&buf).context("bulk write")?;
        bytes += buf.len() as u64;
    }
    let stats = BulkStats {
        bytes,
        wall_ns: start.elapsed().as_nanos() as u64,
        client_cpu_ns: (sys::thread_cpu() - cpu0).as_nanos() as u64,
        process_cpu_ns: sys::process_cpu().saturating_sub(sys0).as_nanos() as u64,
    };
    Ok(stats)
}

/// `count` request/replies to `target` over one unconnected UDP socket
/// (sendmsg4 on every send, recvmsg4 on every receive; an IPv6 target uses
/// an AF_INET6 socket, so a v4-mapped one takes sendmsg4 and recvmsg6).
pub(crate) fn udp_round_trips(target: SocketAddr, count: u32) -> Result<()> {
    let sock = UdpSocket::bind(if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    sock.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut buf = [0u8; 64];
    for i in 0..count {
        sock.send_to(&i.to_be_bytes(), target)?;
        let (_, from) = sock.recv_from(&mut buf).with_context(|| format!("UDP reply from {target}"))?;
        if from != target {
            bail!("UDP reply to a datagram sent to {target} came from {from}, not from {target}");
        }
    }
    Ok(())
}

/// A connect with a timeout (non-blocking connect + poll).
fn connect_timeout(target: SocketAddr, timeout: Duration) -> Result<(), String> {
    TcpStream::connect_timeout(&target, timeout).map(drop).map_err(|e| e.to_string())
}

/// Checks a mode before anything is timed: every target reaches only its
/// expected backends and reaches all of them (random selection works), an
/// untranslated address fails, and a UDP reply comes back from the address
/// it was sent to.
pub(crate) fn verify(plan: &VerifyPlan, recorder: &Recorder, recorded: &mpsc::Receiver<SocketAddr>) -> Result<()> {
    while recorded.try_recv().is_ok() {}
    recorder.set(true);
    let result = (|| {
        for target in &plan.targets {
            let mut hit = vec![0u32; target.expect.len()];
            for _ in 0..target.connects {
                connect_timeout(target.addr, Duration::from_secs(1))
                    .map_err(|e| anyhow::anyhow!("connect to {} failed: {e}", target.addr))?;
                let reached = recorded
                    .recv_timeout(Duration::from_secs(1))
                    .with_context(|| format!("connect to {} reached no backend", target.addr))?;
                let Some(i) = target.expect.iter().position(|e| *e == reached) else {
                    bail!("connect to {} reached {reached}, not one of {:?}", target.addr, target.expect);
                };
                hit[i] += 1;
            }
            if let Some(i) = hit.iter().position(|&h| h == 0) {
                bail!(
                    "{} connects to {} never reached backend {} (hits per backend: {hit:?})",
                    target.connects,
                    target.addr,
                    target.expect[i]
                );
            }
        }
        if connect_timeout(plan.unused, Duration::from_millis(300)).is_ok() {
            bail!("connect to the untranslated address {} succeeded; it must not", plan.unused);
        }
        udp_round_trips(plan.udp, 3)
    })();
    recorder.set(false);
    result
}
