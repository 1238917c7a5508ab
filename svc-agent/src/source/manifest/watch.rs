//! Watches the manifest directory (inotify through `notify`) and feeds the
//! controller a fresh view whenever files change.

use std::{path::Path, time::Duration};

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::{Allocation, ManifestDir, Snapshot};
use crate::{
    error::{Error, Result},
    source::{Change, EventSender, SourceEvent},
};

/// Editors and `kubectl`-style writers produce bursts of events; waiting
/// this long after the first one lets a burst settle into one re-read.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// Re-scan even without events, in case the directory itself was replaced
/// (inotify watches the old inode) or an event was lost.
const RESCAN: Duration = Duration::from_secs(5);

/// Reads `dir` once (failing if it cannot be read), delivers it, then keeps
/// delivering changes from a background task.
pub fn spawn(dir: &Path, allocation: Allocation, events: EventSender) -> Result<tokio::task::JoinHandle<()>> {
    let dir = dir.to_owned();
    let mut manifests = ManifestDir::new(dir.clone(), allocation);
    let first =
        manifests.reload().map_err(|e| Error::io(format!("reading manifest directory {}", dir.display()), e))?;
    tracing::info!(
        dir = %dir.display(),
        services = first.services.len(),
        slices = first.slices.len(),
        "manifest source loaded"
    );
    send(&events, &first);
    events.send(SourceEvent::Synced);

    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        let _ = wake_tx.send(());
    })
    .map_err(|e| Error::Source(format!("watching {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| Error::Source(format!("watching {}: {e}", dir.display())))?;

    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropping it stops the notifications
        let mut last = first;
        loop {
            tokio::select! {
                woke = wake_rx.recv() => if woke.is_none() { return },
                () = tokio::time::sleep(RESCAN) => {}
            }
            let woke_at = std::time::Instant::now();
            tokio::time::sleep(DEBOUNCE).await;
            while wake_rx.try_recv().is_ok() {}
            match manifests.reload() {
                Ok(snapshot) => {
                    let changed = snapshot.services != last.services || snapshot.slices != last.slices;
                    tracing::debug!(
                        reload_us = woke_at.elapsed().as_micros() as u64,
                        changed,
                        "manifest directory re-read"
                    );
                    if changed {
                        send(&events, &snapshot);
                        last = snapshot;
                    }
                }
                Err(e) => tracing::error!(dir = %manifests.dir().display(), "cannot read manifest directory: {e}"),
            }
            if events.is_closed() {
                return;
            }
        }
    }))
}

fn send(events: &EventSender, snapshot: &Snapshot) {
    events.send(SourceEvent::Services(Change::Replace(snapshot.services.clone())));
    events.send(SourceEvent::Slices(Change::Replace(snapshot.slices.clone())));
}
