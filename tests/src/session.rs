//! `svc-testkit udp-session`: one connected UDP socket sending a datagram
//! every few milliseconds and printing each round as it happens, read on a
//! thread so a test can watch a flow while it changes the Service under it.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::cmd;

/// One round of a session, stamped when the test read it.
#[derive(Debug, Clone, Deserialize)]
pub struct Round {
    /// The answer (`NAME:PORT`), if any.
    pub ok: Option<String>,
    /// The errno name, if the round failed.
    pub error: Option<String>,
    /// When the test read the round.
    #[serde(skip, default = "Instant::now")]
    pub seen: Instant,
}

/// A running session; killed on Drop.
#[derive(Debug)]
pub struct UdpSession {
    child: Child,
    rounds: mpsc::Receiver<Round>,
}

impl UdpSession {
    /// Runs `command` (an `svc-testkit ... udp-session ...` invocation).
    pub fn spawn(mut command: Command) -> Result<Self> {
        command.stdout(Stdio::piped());
        cmd::die_with_parent(&mut command);
        let mut child = command.spawn().context("spawn svc-testkit udp-session")?;
        let stdout = child.stdout.take().context("session stdout")?;
        let (tx, rounds) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // `seen` defaults to the time of parsing, i.e. of reading.
                let Ok(round) = serde_json::from_str::<Round>(&line) else { return };
                if tx.send(round).is_err() {
                    return;
                }
            }
        });
        Ok(Self { child, rounds })
    }

    /// The next round.
    pub fn next(&self) -> Result<Round> {
        self.rounds.recv_timeout(Duration::from_secs(10)).context("udp-session stopped reporting")
    }

    /// Every remaining round until the session exits.
    pub fn rest(&self) -> Vec<Round> {
        self.rounds.iter().collect()
    }

    /// Reads rounds until one satisfies `done`; returns every round read,
    /// that one last. Fails after `timeout`, or if the session ends first.
    pub fn until(&self, timeout: Duration, done: impl Fn(&Round) -> bool) -> Result<Vec<Round>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rounds.recv_timeout(left) {
                Ok(round) => {
                    let hit = done(&round);
                    seen.push(round);
                    if hit {
                        return Ok(seen);
                    }
                }
                Err(_) => bail!("not within {timeout:?}; rounds: {:?}", summary(&seen)),
            }
        }
    }
}

/// `ok`/`error` of each round, for messages.
pub fn summary(rounds: &[Round]) -> Vec<String> {
    rounds.iter().map(|r| r.ok.clone().or_else(|| r.error.clone()).unwrap_or_default()).collect()
}

impl Drop for UdpSession {
    fn drop(&mut self) {
        cmd::reap(&mut self.child);
    }
}

/// What a held socket showed (`svc-testkit hold`).
#[derive(Debug, Clone, Deserialize)]
pub struct HeldRound {
    /// The reply (TCP: only in the first round; UDP: every round), or an
    /// errno name.
    pub ok: String,
    /// getpeername().
    pub peer: String,
    /// recvfrom()'s source (UDP), else empty.
    pub source: String,
}

/// One connected socket held open by `svc-testkit hold`; killed on Drop.
#[derive(Debug)]
pub struct Held {
    child: Child,
    stdin: std::process::ChildStdin,
    rounds: mpsc::Receiver<HeldRound>,
}

impl Held {
    /// Runs `command` (an `svc-testkit ... hold ...` invocation) and waits
    /// for its first round (the connect).
    pub fn spawn(mut command: Command) -> Result<(Self, HeldRound)> {
        command.stdout(Stdio::piped()).stdin(Stdio::piped());
        cmd::die_with_parent(&mut command);
        let mut child = command.spawn().context("spawn svc-testkit hold")?;
        let stdout = child.stdout.take().context("hold stdout")?;
        let stdin = child.stdin.take().context("hold stdin")?;
        let (tx, rounds) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(round) = serde_json::from_str::<HeldRound>(&line) else { return };
                if tx.send(round).is_err() {
                    return;
                }
            }
        });
        let mut held = Self { child, stdin, rounds };
        let first = held.next()?;
        Ok((held, first))
    }

    fn next(&mut self) -> Result<HeldRound> {
        self.rounds.recv_timeout(Duration::from_secs(10)).context("hold stopped reporting (the connect failed?)")
    }

    /// Asks the socket again: what it shows now.
    pub fn again(&mut self) -> Result<HeldRound> {
        use std::io::Write as _;
        writeln!(self.stdin).context("hold stdin")?;
        self.stdin.flush().context("hold stdin")?;
        self.next()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        cmd::reap(&mut self.child);
    }
}
