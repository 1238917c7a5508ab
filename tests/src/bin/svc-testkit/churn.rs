//! `svc-testkit churn`: connect storms whose every answer is checked
//! against the Service it was aimed at, while the test changes Services
//! underneath (tests/tests/churn.rs).

use std::{
    collections::BTreeMap,
    io::{self, Read as _},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// Examples of wrong answers kept in the report.
const EXAMPLES: usize = 10;

/// What the threads saw, together.
#[derive(Debug, Default, Serialize)]
struct ChurnReport {
    connects: u64,
    /// Answered by a backend of the Service asked for.
    right: u64,
    /// Answered by anything else.
    wrong: u64,
    wrong_examples: Vec<String>,
    /// Failures by errno name (ECONNREFUSED: the dataplane refused).
    errors: BTreeMap<String, u64>,
}

fn parse_target(spec: &str) -> Result<(SocketAddrV4, String)> {
    let (addr, prefix) = spec.split_once('=').with_context(|| format!("--target {spec}: want VIP:PORT=PREFIX"))?;
    Ok((addr.parse().with_context(|| format!("--target {spec}: bad address"))?, prefix.to_owned()))
}

/// Runs until standard input reaches EOF, then prints the report.
pub(crate) fn run(specs: &[String], threads: usize, timeout: Duration) -> Result<()> {
    let targets: Arc<Vec<(SocketAddrV4, String)>> =
        Arc::new(specs.iter().map(|s| parse_target(s)).collect::<Result<_>>()?);
    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(ChurnReport::default()));
    let workers: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (targets, stop, report) = (Arc::clone(&targets), Arc::clone(&stop), Arc::clone(&report));
            thread::spawn(move || worker(t, &targets, &stop, &report, timeout))
        })
        .collect();
    println!("started");
    // The test closes our stdin when its updates are done.
    if let Err(e) = io::stdin().read_to_end(&mut Vec::new()) {
        eprintln!("churn: reading stdin: {e}; stopping");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if w.join().is_err() {
            eprintln!("churn: a worker panicked");
        }
    }
    let report = report.lock().map_err(|_| anyhow::anyhow!("a worker panicked"))?;
    println!("{}", serde_json::to_string(&*report)?);
    Ok(())
}

fn worker(
    first: usize,
    targets: &[(SocketAddrV4, String)],
    stop: &AtomicBool,
    report: &Mutex<ChurnReport>,
    timeout: Duration,
) {
    let mut mine = ChurnReport::default();
    let mut i = first;
    while !stop.load(Ordering::Relaxed) {
        let (to, prefix) = &targets[i % targets.len()];
        i += 1;
        mine.connects += 1;
        match answer(*to, timeout) {
            Ok(ip) if ip.starts_with(prefix.as_str()) => mine.right += 1,
            Ok(ip) => {
                mine.wrong += 1;
                if mine.wrong_examples.len() < EXAMPLES {
                    mine.wrong_examples.push(format!("{to} answered by {ip:?}, want {prefix}*"));
                }
            }
            Err(e) => *mine.errors.entry(super::errno_name(&e)).or_default() += 1,
        }
    }
    let Ok(mut all) = report.lock() else { return };
    all.connects += mine.connects;
    all.right += mine.right;
    all.wrong += mine.wrong;
    let room = EXAMPLES.saturating_sub(all.wrong_examples.len());
    all.wrong_examples.extend(mine.wrong_examples.into_iter().take(room));
    for (errno, n) in mine.errors {
        *all.errors.entry(errno).or_default() += n;
    }
}

/// Connects, reads the one-line answer.
fn answer(to: SocketAddrV4, timeout: Duration) -> io::Result<String> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)?;
    super::read_line(&stream, timeout)
}
