//! The backends, as threads of the worker inside the bench netns. Every
//! endpoint address is local (one `local` route), so one listener per port
//! on 0.0.0.0 serves all of them:
//! - :8080 accept() then close(), optionally recording which endpoint
//!   address the connection reached (for verification); one listener per
//!   family (the IPv6 one IPV6_V6ONLY, so a v4-mapped connection, which is
//!   IPv4 on the wire, lands on the IPv4 one as it would on a pod's);
//! - :9090 reads and discards (bulk throughput);
//! - UDP 10.79.255.1:5353 and its twin [fd00::a4f:ff01]:5353 echo.

use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr, SocketAddrV6, TcpListener, UdpSocket},
    os::fd::FromRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use anyhow::{Result, bail};

use crate::{
    addressing::{BACKEND_PORT, EXTRA_BACKEND, SINK_PORT, UDP_BACKEND_PORT, twin6},
    sys,
};

/// Records the local address of accepted connections while enabled.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: AtomicBool,
    tx: Mutex<mpsc::Sender<SocketAddr>>,
}

impl Recorder {
    pub(crate) fn set(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
}

/// Starts the three backend threads; returns the recorder and the channel
/// of recorded addresses.
pub(crate) fn start(server_cpu: usize) -> Result<(Arc<Recorder>, mpsc::Receiver<SocketAddr>)> {
    let (tx, rx) = mpsc::channel();
    let recorder = Arc::new(Recorder { enabled: AtomicBool::new(false), tx: Mutex::new(tx) });

    for domain in [libc::AF_INET, libc::AF_INET6] {
        let accept = listen(domain, BACKEND_PORT)?;
        let rec = Arc::clone(&recorder);
        std::thread::Builder::new().name("accept".into()).spawn(move || {
            sys::pin_to_cpu(server_cpu);
            accept_loop(&accept, &rec);
        })?;
    }

    let sink = listen(libc::AF_INET, SINK_PORT)?;
    std::thread::Builder::new().name("sink".into()).spawn(move || {
        for stream in sink.incoming().flatten() {
            std::thread::spawn(move || {
                // The reader on the other CPU than the writer, like the
                // accept loop: otherwise the scheduler's placement decides
                // the throughput.
                sys::pin_to_cpu(server_cpu);
                let mut stream = stream;
                let mut buf = vec![0u8; 1 << 18];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    })?;

    // Bound to its endpoint address, not 0.0.0.0: an unconnected socket on
    // 0.0.0.0 answers from whatever source address routing picks, which
    // conntrack would not recognise as the reply of the DNATed flow.
    for ip in [IpAddr::V4(EXTRA_BACKEND), IpAddr::V6(twin6(EXTRA_BACKEND))] {
        let udp = UdpSocket::bind((ip, UDP_BACKEND_PORT))?;
        std::thread::Builder::new().name("udp-echo".into()).spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        })?;
    }
    Ok((recorder, rx))
}

/// A recorder with no backends behind it (a client-only worker).
pub(crate) fn none() -> (Arc<Recorder>, mpsc::Receiver<SocketAddr>) {
    let (tx, rx) = mpsc::channel();
    (Arc::new(Recorder { enabled: AtomicBool::new(false), tx: Mutex::new(tx) }), rx)
}

fn accept_loop(listener: &TcpListener, recorder: &Recorder) {
    use std::os::fd::AsRawFd as _;
    let fd = listener.as_raw_fd();
    loop {
        // SAFETY: accept4 on a listening socket; null address pointers are allowed.
        let conn = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC) };
        if conn < 0 {
            continue;
        }
        if recorder.enabled.load(Ordering::Relaxed)
            && let Some(local) = local_addr(conn)
        {
            let _ = recorder.tx.lock().map(|tx| tx.send(local));
        }
        // SAFETY: `conn` is the fd accept4 just returned.
        unsafe {
            libc::close(conn);
        }
    }
}

fn local_addr(fd: i32) -> Option<SocketAddr> {
    // SAFETY: getsockname writes at most `len` bytes into `addr`, which is
    // large enough for either family; the family field says which it wrote.
    unsafe {
        let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return None;
        }
        if i32::from(addr.sin6_family) == libc::AF_INET {
            let v4: libc::sockaddr_in = std::ptr::read((&raw const addr).cast());
            return Some(SocketAddr::new(
                IpAddr::V4(u32::from_be(v4.sin_addr.s_addr).into()),
                u16::from_be(v4.sin_port),
            ));
        }
        Some(SocketAddr::V6(SocketAddrV6::new(addr.sin6_addr.s6_addr.into(), u16::from_be(addr.sin6_port), 0, 0)))
    }
}

/// A TCP listener on the wildcard address of `domain` (AF_INET or
/// AF_INET6, the latter IPV6_V6ONLY) and `port`, with a long accept queue
/// (std's is 128, which a preempted accept thread could overflow in a few
/// milliseconds).
fn listen(domain: i32, port: u16) -> Result<TcpListener> {
    let set = |fd: i32, level: i32, name: i32| {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with an int value on an fd we own.
        unsafe {
            libc::setsockopt(fd, level, name, (&raw const one).cast(), size_of::<libc::c_int>() as libc::socklen_t)
        }
    };
    // SAFETY: socket/setsockopt/bind/listen on an fd we own; on success it
    // is handed to TcpListener, which closes it.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        set(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR);
        let bound = if domain == libc::AF_INET6 {
            set(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY);
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            addr.sin6_port = port.to_be();
            libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in6>() as libc::socklen_t)
        } else {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = port.to_be();
            libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t)
        };
        if bound != 0 || libc::listen(fd, 65535) != 0 {
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            bail!("listening on port {port}: {err}");
        }
        Ok(TcpListener::from_raw_fd(fd))
    }
}
