//! `svc-testkit`: the processes the end-to-end tests run inside their network
//! namespaces: a backend server (`serve`) and TCP/UDP clients (`tcp`, `udp`)
//! that report what they saw as one JSON object on stdout.
//!
//! `--netns NAME` (before the subcommand) enters `/run/netns/NAME` itself
//! instead of being started through `ip netns exec`, because `ip netns exec`
//! remounts /sys, which hides the cgroup v2 mount: a client could then not
//! join its cgroup. The order is: join the cgroup (`--cgroup`), then enter the
//! network namespace, then create sockets (the cgroup BPF programs apply to
//! sockets created by processes in the cgroup).

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    thread,
    time::Duration,
};

mod churn;
mod dns;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about = "Test servers and clients for svc-tests")]
struct Cli {
    /// Network namespace to enter first (a name under /run/netns or a path).
    #[arg(long, global = true)]
    netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve TCP and UDP ports; answer `NAME:PORT`.
    Serve {
        #[arg(long)]
        name: String,
        #[arg(long)]
        tcp: Vec<u16>,
        #[arg(long)]
        udp: Vec<u16>,
        /// Address to bind; the default `::` serves both families.
        #[arg(long, default_value = "::")]
        bind: IpAddr,
        /// Append the client's address to TCP replies (`NAME:PORT IP`), to
        /// check that the source address is preserved.
        #[arg(long)]
        echo_peer: bool,
        /// Answer TCP with the local address the client reached (`IP`), for
        /// a server on a whole local range (`ip route add local ...`).
        #[arg(long, conflicts_with = "echo_peer")]
        reply_local: bool,
        /// Be a DNS server on every port: each query gets one TXT record
        /// holding NAME (for `dig`).
        #[arg(long, conflicts_with_all = ["echo_peer", "reply_local"])]
        dns: bool,
        /// Be an HTTP/1.0 server on the TCP ports: every request gets
        /// `NAME:PORT` (for `curl`).
        #[arg(long, conflicts_with_all = ["echo_peer", "reply_local", "dns"])]
        http: bool,
        /// Answer TCP with `NAME:PORT ORIGINAL_DST`: the address the client
        /// dialled before an iptables REDIRECT (`SO_ORIGINAL_DST`), as a
        /// mesh sidecar reads it.
        #[arg(long, conflicts_with_all = ["echo_peer", "reply_local", "dns", "http"])]
        original_dst: bool,
        /// cgroup v2 directory to join before creating any socket: a
        /// server under the hooks (its accepted sockets are the cgroup's).
        #[arg(long)]
        cgroup: Option<PathBuf>,
    },
    /// Connects from `--threads` threads, round-robin over the targets,
    /// until standard input closes; each answer (a `serve --reply-local`
    /// address) must start with its target's prefix. Prints one JSON
    /// report: connects, right, wrong (with examples), errors by errno.
    Churn {
        /// `VIP:PORT=PREFIX`: connects to VIP:PORT must be answered by an
        /// address starting with PREFIX (e.g. `10.96.100.5:80=10.250.5.`).
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        #[arg(long, default_value_t = 4)]
        threads: usize,
        /// cgroup v2 directory to join before creating any socket.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// N sequential TCP connects; print what answered as JSON.
    Tcp {
        #[command(flatten)]
        client: ClientArgs,
        /// Bind each socket to this source port before connecting (0: any).
        #[arg(long, default_value_t = 0)]
        source_port: u16,
    },
    /// N UDP datagrams; print what answered as JSON.
    Udp {
        #[command(flatten)]
        client: ClientArgs,
        /// One connected socket per datagram instead of one unconnected socket.
        #[arg(long)]
        connected: bool,
    },
    /// One connected UDP socket kept for `--count` rounds (one datagram
    /// every `--interval-ms`); prints one JSON line per round as it goes:
    /// `{"t_ms":..,"ok":"b1:53"}` or `{"t_ms":..,"error":"ECONNABORTED"}`.
    /// For checking that a socket aimed at a removed backend is reset.
    UdpSession {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, default_value_t = 20)]
        interval_ms: u64,
        /// Bind the socket to this source port (as upstream's `nc -p`).
        #[arg(long, default_value_t = 0)]
        source_port: u16,
        /// After an error, close the socket and open a new one (same
        /// source port), as a client that retries does.
        #[arg(long)]
        reconnect: bool,
    },
    /// One connected socket (TCP, or UDP with `--udp`) held open: prints
    /// `{"ok":..,"peer":..,"source":..}` once connected, then again for
    /// every line read on stdin (getpeername() each time; for UDP one more
    /// datagram and its recvfrom() source). For checking what a socket
    /// shows after the Services around it changed.
    Hold {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        udp: bool,
    },
    /// Runs a program (`dig`, `curl`) as a client: joins `--cgroup`, enters
    /// the namespace, then replaces itself with the program.
    Exec {
        /// cgroup v2 directory to join first.
        #[arg(long)]
        cgroup: Option<PathBuf>,
        /// The program and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        argv: Vec<String>,
    },
    /// Forward TCP from `127.0.0.1:PORT` inside `--listen-netns` to
    /// `127.0.0.1:PORT` of this process's own namespace (e.g. an agent in a
    /// test node namespace reaching a test API server on the host's
    /// loopback). Prints `ready` once listening.
    Relay {
        /// Namespace to listen in (a name under /run/netns or a path).
        #[arg(long)]
        listen_netns: String,
        #[arg(long)]
        port: u16,
    },
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// `IP:PORT`, or `[IPV6]:PORT` for an `AF_INET6` socket (including
    /// v4-mapped `[::ffff:10.96.0.10]:80`, as a Java client dials).
    #[arg(long)]
    to: SocketAddr,
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// cgroup v2 directory to join before creating any socket.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Per-operation timeout (connect, read).
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

/// What a client saw. Counters are keyed by reply payload (`ok`), errno name
/// (`errors`), getpeername() result (`peers`) and recvfrom() source (`sources`).
#[derive(Debug, Default, Serialize)]
struct Report {
    ok: BTreeMap<String, u32>,
    errors: BTreeMap<String, u32>,
    peers: BTreeMap<String, u32>,
    sources: BTreeMap<String, u32>,
    /// This process's cgroup v2 path (from /proc/self/cgroup), so tests can
    /// check that `--cgroup` really moved the client.
    cgroup: String,
    /// The client's network namespace cookie (SO_NETNS_COOKIE), the client
    /// identity session affinity uses; 0 if it cannot be read.
    netns_cookie: u64,
}

fn bump(map: &mut BTreeMap<String, u32>, key: String) {
    *map.entry(key).or_insert(0) += 1;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The cgroup must be joined before entering the netns (see module doc);
    // both before any socket exists.
    let cgroup = match &cli.cmd {
        Cmd::Relay { .. } => None,
        Cmd::Serve { cgroup, .. } => cgroup.as_ref(),
        Cmd::Tcp { client, .. }
        | Cmd::Udp { client, .. }
        | Cmd::UdpSession { client, .. }
        | Cmd::Hold { client, .. } => client.cgroup.as_ref(),
        Cmd::Churn { cgroup, .. } | Cmd::Exec { cgroup, .. } => cgroup.as_ref(),
    };
    if let Some(dir) = cgroup {
        join_cgroup(dir)?;
    }
    if let Some(netns) = &cli.netns {
        enter_netns(netns)?;
    }
    match cli.cmd {
        Cmd::Serve { name, tcp, udp, bind, echo_peer, reply_local, dns, http, original_dst, .. } => {
            let reply = if original_dst {
                Reply::NameAndOriginalDst
            } else if dns {
                Reply::Dns
            } else if http {
                Reply::Http
            } else if reply_local {
                Reply::LocalAddr
            } else if echo_peer {
                Reply::NameAndPeer
            } else {
                Reply::Name
            };
            serve(&name, &tcp, &udp, bind, reply)
        }
        Cmd::Churn { targets, threads, timeout_ms, .. } => {
            churn::run(&targets, threads, Duration::from_millis(timeout_ms.max(1)))
        }
        Cmd::Tcp { client, source_port } => print_report(&tcp_client(&client, source_port)),
        Cmd::Udp { client, connected } => print_report(&udp_client(&client, connected)),
        Cmd::Relay { listen_netns, port } => relay(&listen_netns, port),
        Cmd::Exec { argv, .. } => {
            use std::os::unix::process::CommandExt as _;
            let err = std::process::Command::new(&argv[0]).args(&argv[1..]).exec();
            bail!("exec {}: {err}", argv[0])
        }
        Cmd::Hold { client, udp } => hold(&client, udp),
        Cmd::UdpSession { client, interval_ms, source_port, reconnect } => {
            udp_session(&client, Duration::from_millis(interval_ms), source_port, reconnect)
        }
    }
}

/// See [`Cmd::Hold`].
fn hold(args: &ClientArgs, udp: bool) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut buf = [0u8; 1500];
    // One exchange: (reply, recvfrom source) for UDP; the greeting for TCP.
    enum Held {
        Tcp(TcpStream),
        Udp(UdpSocket),
    }
    let held = if udp {
        let socket = UdpSocket::bind((unspecified(args.to), 0))?;
        socket.set_read_timeout(Some(timeout))?;
        socket.connect(args.to)?;
        Held::Udp(socket)
    } else {
        Held::Tcp(TcpStream::connect_timeout(&args.to, timeout)?)
    };
    let mut first = true;
    let mut out = io::stdout().lock();
    let mut lines = io::stdin().lines();
    loop {
        let peer = match &held {
            Held::Tcp(s) => s.peer_addr(),
            Held::Udp(s) => s.peer_addr(),
        };
        let peer = peer.map_or_else(|e| errno_name(&e), |p| p.to_string());
        let (ok, source) = match &held {
            Held::Tcp(s) if first => (read_line(s, timeout).unwrap_or_else(|e| errno_name(&e)), String::new()),
            Held::Tcp(_) => (String::new(), String::new()),
            Held::Udp(s) => match s.send(b"ping").and_then(|_| s.recv_from(&mut buf)) {
                Ok((n, from)) => (String::from_utf8_lossy(&buf[..n]).into_owned(), from.to_string()),
                Err(e) => (errno_name(&e), String::new()),
            },
        };
        first = false;
        writeln!(out, "{}", serde_json::json!({ "ok": ok, "peer": peer, "source": source }))?;
        out.flush()?;
        match lines.next() {
            Some(Ok(_)) => {}
            _ => return Ok(()),
        }
    }
}

/// See [`Cmd::UdpSession`].
fn udp_session(args: &ClientArgs, interval: Duration, source_port: u16, reconnect: bool) -> Result<()> {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let open = || -> io::Result<UdpSocket> {
        let socket = UdpSocket::bind((unspecified(args.to), source_port))?;
        socket.set_read_timeout(Some(timeout))?;
        socket.connect(args.to)?;
        Ok(socket)
    };
    // A retrying client starts without a socket: its first round opens one
    // (and may be refused, like any later one).
    let mut socket = if reconnect { None } else { Some(open()?) };
    let start = std::time::Instant::now();
    let mut out = io::stdout().lock();
    let mut buf = [0u8; 1500];
    for _ in 0..args.count {
        let result = match &socket {
            Some(s) => s.send(b"ping").and_then(|_| s.recv(&mut buf)),
            None => open().and_then(|s| {
                let r = s.send(b"ping").and_then(|_| s.recv(&mut buf));
                socket = Some(s);
                r
            }),
        };
        let t_ms = start.elapsed().as_millis() as u64;
        let line = match result {
            Ok(n) => serde_json::json!({ "t_ms": t_ms, "ok": String::from_utf8_lossy(&buf[..n]) }),
            Err(e) => {
                if reconnect {
                    // Closed before the next round opens a new one.
                    socket = None;
                }
                serde_json::json!({ "t_ms": t_ms, "error": errno_name(&e) })
            }
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        thread::sleep(interval);
    }
    Ok(())
}

/// See [`Cmd::Relay`]. A socket belongs to the namespace of the thread that
/// creates it: the listener is made on a thread that entered
/// `listen_netns`; the outgoing connections on this one, which did not.
fn relay(listen_netns: &str, port: u16) -> Result<()> {
    let netns = listen_netns.to_owned();
    let listener = thread::spawn(move || -> Result<TcpListener> {
        enter_netns(&netns)?;
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).with_context(|| format!("bind 127.0.0.1:{port} in {netns}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("relay listener thread panicked"))??;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    for inbound in listener.incoming() {
        let Ok(inbound) = inbound else { continue };
        let Ok(outbound) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else { continue };
        for (mut from, mut to) in [(inbound.try_clone()?, outbound.try_clone()?), (outbound, inbound)] {
            thread::spawn(move || {
                // A relayed connection that breaks ends its half; the
                // client sees it, so there is nothing to report here.
                drop(io::copy(&mut from, &mut to));
                drop(to.shutdown(std::net::Shutdown::Write));
            });
        }
    }
    Ok(())
}

fn join_cgroup(dir: &std::path::Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    let mut file = OpenOptions::new().write(true).open(&procs).with_context(|| format!("open {}", procs.display()))?;
    write!(file, "{}", std::process::id()).with_context(|| format!("write {}", procs.display()))
}

fn enter_netns(netns: &str) -> Result<()> {
    let path = if netns.contains('/') { PathBuf::from(netns) } else { PathBuf::from("/run/netns").join(netns) };
    let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns only reads the fd; `file` outlives the call. We are still
    // single-threaded here, so every thread spawned later inherits the netns.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {}: {}", path.display(), io::Error::last_os_error());
    }
    Ok(())
}

fn own_cgroup() -> String {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("0::").map(str::to_owned)))
        .unwrap_or_default()
}

/// The network namespace cookie of this process's namespace, as the
/// socket programs see it (`bpf_get_netns_cookie`).
fn own_netns_cookie() -> u64 {
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) else {
        return 0;
    };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: valid fd and out-pointers of the right size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 { cookie } else { 0 }
}

fn print_report(report: &Report) -> Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, report)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Errno name for the report. Sockets here are blocking with timeouts, so
/// EAGAIN only ever means "timed out".
fn errno_name(err: &io::Error) -> String {
    let name = match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::ENETUNREACH) => "ENETUNREACH",
        Some(libc::EHOSTUNREACH) => "EHOSTUNREACH",
        Some(libc::ETIMEDOUT | libc::EAGAIN | libc::EINPROGRESS) => "ETIMEDOUT",
        Some(libc::EPERM) => "EPERM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::EADDRNOTAVAIL) => "EADDRNOTAVAIL",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ECONNABORTED) => "ECONNABORTED",
        Some(libc::EDESTADDRREQ) => "EDESTADDRREQ",
        Some(code) => return format!("errno {code}"),
        None if matches!(err.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => "ETIMEDOUT",
        None => return format!("other: {err}"),
    };
    name.to_owned()
}

/// The wildcard address of `to`'s family: a client's socket has the
/// family of the address it dials (`AF_INET6` for a v4-mapped one).
fn unspecified(to: SocketAddr) -> IpAddr {
    match to {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

fn tcp_client(args: &ClientArgs, source_port: u16) -> Report {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut report = Report { cgroup: own_cgroup(), netns_cookie: own_netns_cookie(), ..Report::default() };
    let to = args.to;
    for _ in 0..args.count {
        let connected = if source_port == 0 {
            TcpStream::connect_timeout(&to, timeout)
        } else {
            connect_from(source_port, to, timeout)
        };
        match connected {
            Err(e) => bump(&mut report.errors, errno_name(&e)),
            Ok(stream) => {
                // getpeername(): the getpeername4 hook rewrites it.
                match stream.peer_addr() {
                    Ok(peer) => bump(&mut report.peers, peer.to_string()),
                    Err(e) => bump(&mut report.errors, format!("getpeername {}", errno_name(&e))),
                }
                match read_line(&stream, timeout) {
                    Ok(line) => bump(&mut report.ok, line),
                    Err(e) => bump(&mut report.errors, errno_name(&e)),
                }
            }
        }
    }
    report
}

/// A TCP connect from `source_port` (bound first, with SO_REUSEADDR so
/// that rounds can reuse it), as a client that picks its own port does.
fn connect_from(source_port: u16, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&SocketAddr::new(unspecified(to), source_port).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

fn read_line(stream: &TcpStream, timeout: Duration) -> io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    let n = BufReader::new(stream).read_line(&mut line)?;
    if n == 0 {
        return Err(io::Error::other("empty reply"));
    }
    Ok(line.trim_end().to_owned())
}

fn udp_client(args: &ClientArgs, connected: bool) -> Report {
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut report = Report { cgroup: own_cgroup(), netns_cookie: own_netns_cookie(), ..Report::default() };
    if connected {
        for _ in 0..args.count {
            if let Err(e) = udp_connected_once(args.to, timeout, &mut report) {
                bump(&mut report.errors, errno_name(&e));
            }
        }
    } else if let Err(e) = udp_unconnected(args, timeout, &mut report) {
        bump(&mut report.errors, format!("socket {}", errno_name(&e)));
    }
    report
}

fn udp_unconnected(args: &ClientArgs, timeout: Duration, report: &mut Report) -> io::Result<()> {
    let socket = UdpSocket::bind((unspecified(args.to), 0))?;
    socket.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 1500];
    for i in 0..args.count {
        // sendmsg4 translates each datagram; a refusing frontend fails here.
        if let Err(e) = socket.send_to(format!("ping {i}").as_bytes(), args.to) {
            bump(&mut report.errors, errno_name(&e));
            continue;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                bump(&mut report.ok, String::from_utf8_lossy(&buf[..n]).into_owned());
                bump(&mut report.sources, from.to_string());
            }
            Err(e) => bump(&mut report.errors, errno_name(&e)),
        }
    }
    Ok(())
}

fn udp_connected_once(to: SocketAddr, timeout: Duration, report: &mut Report) -> io::Result<()> {
    let socket = UdpSocket::bind((unspecified(to), 0))?;
    socket.set_read_timeout(Some(timeout))?;
    socket.connect(to)?;
    bump(&mut report.peers, socket.peer_addr()?.to_string());
    socket.send(b"ping")?;
    let mut buf = [0u8; 1500];
    let (n, from) = socket.recv_from(&mut buf)?;
    bump(&mut report.ok, String::from_utf8_lossy(&buf[..n]).into_owned());
    bump(&mut report.sources, from.to_string());
    Ok(())
}

/// What a TCP server answers.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// `NAME:PORT`.
    Name,
    /// `NAME:PORT CLIENT_IP`.
    NameAndPeer,
    /// The local address the client reached.
    LocalAddr,
    /// DNS, over UDP and TCP.
    Dns,
    /// HTTP/1.0 with body `NAME:PORT`.
    Http,
    /// `NAME:PORT ORIGINAL_DST`.
    NameAndOriginalDst,
}

fn serve(name: &str, tcp: &[u16], udp: &[u16], bind: IpAddr, reply: Reply) -> Result<()> {
    if tcp.is_empty() && udp.is_empty() {
        bail!("serve: give at least one --tcp or --udp port");
    }
    // Bind everything before reporting ready, so the harness never races.
    let listeners = tcp
        .iter()
        .map(|&p| TcpListener::bind((bind, p)).with_context(|| format!("bind tcp {bind}:{p}")))
        .collect::<Result<Vec<_>>>()?;
    let sockets = udp
        .iter()
        .map(|&p| UdpSocket::bind((bind, p)).with_context(|| format!("bind udp {bind}:{p}")))
        .collect::<Result<Vec<_>>>()?;

    let mut threads = Vec::new();
    for listener in listeners {
        let name = name.to_owned();
        threads.push(thread::spawn(move || match reply {
            Reply::Dns => dns::serve_tcp(&name, &listener),
            Reply::Http => serve_http(&name, &listener),
            _ => serve_tcp(&name, &listener, reply),
        }));
    }
    for socket in sockets {
        let name = name.to_owned();
        threads.push(thread::spawn(move || match reply {
            Reply::Dns => dns::serve_udp(&name, &socket),
            _ => serve_udp(&name, &socket),
        }));
    }
    {
        let mut out = io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
    }
    for t in threads {
        if t.join().is_err() {
            eprintln!("serve: a server thread panicked");
        }
    }
    Ok(())
}

fn serve_tcp(name: &str, listener: &TcpListener, reply: Reply) {
    loop {
        // Transient accept errors (e.g. a reset before accept) must not stop
        // the server; the reply is tiny, so answer inline.
        let Ok((mut stream, peer)) = listener.accept() else {
            continue;
        };
        let local = stream.local_addr().ok();
        let port = local.map_or(0, |a| a.port());
        let answer = match reply {
            Reply::Name => format!("{name}:{port}\n"),
            // A dual-stack socket sees IPv4 peers as v4-mapped: shown as IPv4.
            // getpeername() (as an app asks later), not accept()'s address:
            // under the hooks, what getpeername4/6 show is the point.
            Reply::NameAndPeer => {
                format!("{name}:{port} {}\n", stream.peer_addr().unwrap_or(peer).ip().to_canonical())
            }
            Reply::LocalAddr => format!("{}\n", local.map_or_else(String::new, |a| a.ip().to_canonical().to_string())),
            Reply::NameAndOriginalDst => match original_dst(&stream) {
                Ok(dst) => format!("{name}:{port} {dst}\n"),
                Err(e) => format!("{name}:{port} no-original-dst:{}\n", errno_name(&e)),
            },
            Reply::Dns | Reply::Http => return,
        };
        // A client that hangs up first is its own business.
        drop(stream.write_all(answer.as_bytes()));
    }
}

/// The destination of a connection before netfilter's NAT redirected it
/// (`getsockopt(SOL_IP, SO_ORIGINAL_DST)`; IPv4).
fn original_dst(stream: &TcpStream) -> io::Result<std::net::SocketAddrV4> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: sockaddr_in is plain data; all zeros is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a valid socket, and a buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(stream.as_raw_fd(), libc::SOL_IP, libc::SO_ORIGINAL_DST, (&raw mut addr).cast(), &raw mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)), u16::from_be(addr.sin_port)))
}

/// One thread per connection: read the request head, answer, close.
fn serve_http(name: &str, listener: &TcpListener) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let Ok((stream, _)) = listener.accept() else { continue };
        let body = format!("{name}:{port}\n");
        thread::spawn(move || {
            // A client that hangs up first is its own business.
            drop(http_exchange(&stream, &body));
        });
    }
}

/// Reads the request head and its body (`Content-Length`), then answers
/// `body`; with a request body, `body` is followed by the number of bytes
/// received (for uploads: `NAME:PORT received N`). `GET /bytes/N` is
/// answered with N bytes instead (for downloads).
fn http_exchange(stream: &TcpStream, body: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let download: Option<usize> = line.split(' ').nth(1).and_then(|path| path.strip_prefix("/bytes/")?.parse().ok());
    line.clear();
    let mut length = 0usize;
    while reader.read_line(&mut line)? > 0 && line != "\r\n" && line != "\n" {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
        line.clear();
    }
    let body = if length > 0 {
        let received = io::copy(&mut io::Read::take(&mut reader, length as u64), &mut io::sink())?;
        format!("{} received {received}\n", body.trim_end())
    } else {
        body.to_owned()
    };
    let mut writer = stream;
    if let Some(n) = download {
        write!(writer, "HTTP/1.0 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")?;
        io::copy(&mut io::Read::take(io::repeat(b'z'), n as u64), &mut writer)?;
        return writer.flush();
    }
    write!(writer, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    writer.flush()
}

fn serve_udp(name: &str, socket: &UdpSocket) {
    let port = socket.local_addr().map_or(0, |a| a.port());
    let reply = format!("{name}:{port}");
    let mut buf = [0u8; 1500];
    loop {
        if let Ok((_, from)) = socket.recv_from(&mut buf) {
            // Best effort, like any UDP server.
            drop(socket.send_to(reply.as_bytes(), from));
        }
    }
}
