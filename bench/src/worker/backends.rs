//! The backends, as threads of the worker inside the bench netns. Every
//! endpoint address is local (one `local` route), so one listener per port
//! on 0.0.0.0 serves all of them:
//! - :8080 accept() then close(), optionally recording which endpoint
//!   address the connection reached (for verification);
//! - :9090 reads and discards (bulk throughput);
//! - UDP 10.79.255.1:5353 echoes.

use std::{
    io::Read as _,
    net::{SocketAddrV4, TcpListener, UdpSocket},
    os::fd::FromRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use anyhow::{Result, bail};

use crate::{
    addressing::{BACKEND_PORT, EXTRA_BACKEND, SINK_PORT, UDP_BACKEND_PORT},
    sys,
};

/// Records the local address of accepted connections while enabled.
#[derive(Debug)]
pub(crate) struct Recorder {
    enabled: AtomicBool,
    tx: Mutex<mpsc::Sender<SocketAddrV4>>,
}

impl Recorder {
    pub(crate) fn set(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
}

/// Starts the three backend threads; returns the recorder and the channel
/// of recorded addresses.
pub(crate) fn start(server_cpu: usize) -> Result<(Arc<Recorder>, mpsc::Receiver<SocketAddrV4>)> {
    let (tx, rx) = mpsc::channel();
    let recorder = Arc::new(Recorder { enabled: AtomicBool::new(false), tx: Mutex::new(tx) });

    let accept = listen(BACKEND_PORT)?;
    let rec = Arc::clone(&recorder);
    std::thread::Builder::new().name("accept".into()).spawn(move || {
        sys::pin_to_cpu(server_cpu);
        accept_loop(&accept, &rec);
    })?;

    let sink = listen(SINK_PORT)?;
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
    let udp = UdpSocket::bind((EXTRA_BACKEND, UDP_BACKEND_PORT))?;
    std::thread::Builder::new().name("udp-echo".into()).spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    })?;
    Ok((recorder, rx))
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

fn local_addr(fd: i32) -> Option<SocketAddrV4> {
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return None;
        }
        Some(SocketAddrV4::new(u32::from_be(addr.sin_addr.s_addr).into(), u16::from_be(addr.sin_port)))
    }
}

/// A TCP listener on 0.0.0.0:`port` with a long accept queue (std's is 128,
/// which a preempted accept thread could overflow in a few milliseconds).
fn listen(port: u16) -> Result<TcpListener> {
    // SAFETY: socket/setsockopt/bind/listen on an fd we own; on success it
    // is handed to TcpListener, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        if libc::bind(fd, (&raw const addr).cast(), size_of::<libc::sockaddr_in>() as libc::socklen_t) != 0
            || libc::listen(fd, 65535) != 0
        {
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            bail!("listening on port {port}: {err}");
        }
        Ok(TcpListener::from_raw_fd(fd))
    }
}
