//! Watches the manifest directory (inotify through `notify`) and feeds the
//! controller a fresh view whenever files change.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{
    EventKind, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode, ModifyKind, RenameMode},
};
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
pub(crate) fn spawn(dir: &Path, allocation: Allocation, events: EventSender) -> Result<tokio::task::JoinHandle<()>> {
    let dir = dir.to_owned();
    let mut manifests = ManifestDir::new(dir.clone(), allocation);
    // The first delivery is the complete view, not the changes from nothing.
    manifests.reload().map_err(|e| Error::io(format!("reading manifest directory {}", dir.display()), e))?;
    let first = manifests.snapshot();
    tracing::info!(
        dir = %dir.display(),
        services = first.services.len(),
        slices = first.slices.len(),
        "manifest source loaded"
    );
    send(&events, &first);
    drop(first);
    events.send(SourceEvent::Synced);

    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel::<Wake>();
    let watched = dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.as_ref().is_ok_and(|e| is_own_read(e.kind)) {
            return;
        }
        let wake = Wake {
            complete: event.as_ref().is_ok_and(is_complete),
            files: event.as_ref().ok().and_then(|e| named_files(&watched, e)),
        };
        if wake_tx.send(wake).is_err() {
            // The reader is gone: there is no one to wake.
            tracing::trace!("manifest watcher: nobody to wake");
        }
    })
    .map_err(|e| Error::Source(format!("watching {}: {e}", dir.display())))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| Error::Source(format!("watching {}: {e}", dir.display())))?;

    Ok(tokio::spawn(async move {
        let _watcher = watcher; // dropping it stops the notifications
        loop {
            let mut wake = tokio::select! {
                woke = wake_rx.recv() => match woke { Some(wake) => wake, None => return },
                () = tokio::time::sleep(RESCAN) => Wake { complete: true, files: None },
            };
            let woke_at = std::time::Instant::now();
            while let Ok(more) = wake_rx.try_recv() {
                wake.add(more);
            }
            if !wake.complete {
                // A file is still being written: let the burst settle.
                tokio::time::sleep(DEBOUNCE).await;
                while let Ok(more) = wake_rx.try_recv() {
                    wake.add(more);
                }
            }
            let reloaded = match wake.files {
                Some(files) => Ok(manifests.reload_files(files)),
                None => manifests.reload(),
            };
            match reloaded {
                Ok(changes) => {
                    tracing::debug!(
                        reload_us = woke_at.elapsed().as_micros() as u64,
                        changed = !changes.is_empty(),
                        "manifest directory re-read"
                    );
                    changes.services.into_iter().for_each(|c| {
                        events.send(SourceEvent::Services(c));
                    });
                    changes.slices.into_iter().for_each(|c| {
                        events.send(SourceEvent::Slices(c));
                    });
                    if let Some(pods) = changes.pods {
                        events.send(SourceEvent::Pods(Change::replace_all(pods)));
                    }
                    if let Some(namespaces) = changes.namespaces {
                        events.send(SourceEvent::Namespaces(Change::replace_all(namespaces)));
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

/// What woke the reader: one event, or a burst of them folded together.
#[derive(Debug)]
struct Wake {
    /// Every event ends a write ([`is_complete`]): no debounce.
    complete: bool,
    /// The manifest files the events named; `None`: re-read the whole
    /// directory.
    files: Option<BTreeSet<PathBuf>>,
}

impl Wake {
    fn add(&mut self, other: Self) {
        self.complete &= other.complete;
        self.files = match (self.files.take(), other.files) {
            (Some(mut files), Some(more)) => {
                files.extend(more);
                Some(files)
            }
            _ => None,
        };
    }
}

/// The manifest files directly in `dir` that `event` names, if it names
/// any: a rename from a hidden temporary names the file it publishes.
/// An event that names none (a ConfigMap volume swapping its `..data`
/// symlink, a lost-events notice) or something outside `dir` wants the
/// whole directory re-read.
fn named_files(dir: &Path, event: &notify::Event) -> Option<BTreeSet<PathBuf>> {
    let mut files = BTreeSet::new();
    for path in &event.paths {
        if path.parent() != Some(dir) {
            return None;
        }
        if path.file_name().is_some_and(|name| super::is_manifest_name(&name.to_string_lossy())) {
            files.insert(path.clone());
        }
    }
    (!files.is_empty()).then_some(files)
}

/// Opening and reading (inotify `IN_OPEN`, `IN_CLOSE_NOWRITE`, which
/// notify watches too) is what a re-read itself does to the directory and
/// its files: waking on it would re-read forever. A close after writing
/// is a change.
fn is_own_read(kind: EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if access != AccessKind::Close(AccessMode::Write))
}

/// A file renamed into the directory under a name the source reads: how
/// `kubectl`-style and ConfigMap writers publish a whole file, so the
/// directory is re-read at once. Anything else waits [`DEBOUNCE`] for the
/// rest of its burst: a file being created or written in place (a close
/// after writing can be followed by another write within the same
/// timestamp tick), and renames away and removals (an editor's save
/// renames the old file away before writing the new one: reading at once
/// would delete its objects for a moment).
fn is_complete(event: &notify::Event) -> bool {
    matches!(event.kind, EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)))
        && event
            .paths
            .last()
            .and_then(|p| p.file_name())
            .is_some_and(|name| super::is_manifest_name(&name.to_string_lossy()))
}

fn send(events: &EventSender, snapshot: &Snapshot) {
    events.send(SourceEvent::Services(Change::replace_all(snapshot.services.clone())));
    events.send(SourceEvent::Slices(Change::replace_all(snapshot.slices.clone())));
    events.send(SourceEvent::Pods(Change::replace_all(snapshot.pods.clone())));
    events.send(SourceEvent::Namespaces(Change::replace_all(snapshot.namespaces.clone())));
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange};

    use super::*;

    #[test]
    fn own_reads_do_not_wake_the_reader_but_changes_do() {
        assert!(is_own_read(EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(is_own_read(EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!is_own_read(EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!is_own_read(EventKind::Create(CreateKind::File)));
        assert!(!is_own_read(EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(!is_own_read(EventKind::Remove(notify::event::RemoveKind::File)));
    }

    #[test]
    fn events_name_the_manifest_files_to_re_read_or_ask_for_the_directory() {
        let dir = Path::new("/d");
        let event = |paths: &[&str]| notify::Event {
            kind: EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            paths: paths.iter().map(PathBuf::from).collect(),
            attrs: notify::event::EventAttributes::default(),
        };
        let files = |names: &[&str]| Some(names.iter().map(PathBuf::from).collect::<BTreeSet<_>>());
        assert_eq!(named_files(dir, &event(&["/d/.web.tmp", "/d/web.yaml"])), files(&["/d/web.yaml"]));
        assert_eq!(named_files(dir, &event(&["/d/web.yaml", "/d/web.yaml~"])), files(&["/d/web.yaml"]));
        // A ConfigMap volume's update swaps `..data`: every file may change.
        assert_eq!(named_files(dir, &event(&["/d/..data_tmp", "/d/..data"])), None);
        assert_eq!(named_files(dir, &event(&[])), None, "a lost-events notice names nothing");
        assert_eq!(named_files(dir, &event(&["/elsewhere/web.yaml"])), None);
        // A burst wants what every event wants; one full re-read wins.
        let mut wake = Wake { complete: true, files: files(&["/d/a.yaml"]) };
        wake.add(Wake { complete: true, files: files(&["/d/b.yaml"]) });
        assert_eq!(wake.files, files(&["/d/a.yaml", "/d/b.yaml"]));
        wake.add(Wake { complete: false, files: None });
        assert!(wake.files.is_none() && !wake.complete);
    }

    #[test]
    fn only_a_manifest_renamed_in_skips_the_debounce() {
        let event = |kind, paths: &[&str]| notify::Event {
            kind,
            paths: paths.iter().map(PathBuf::from).collect(),
            attrs: notify::event::EventAttributes::default(),
        };
        let renamed_to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(is_complete(&event(renamed_to, &["/d/web.yaml"])));
        assert!(is_complete(&event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &["/d/.web.tmp", "/d/web.yaml"]
        )));
        // An editor's backup, a hidden temporary, a rename away, a removal,
        // a write in progress: all wait for the burst to settle.
        assert!(!is_complete(&event(renamed_to, &["/d/web.yaml~"])));
        assert!(!is_complete(&event(renamed_to, &["/d/.web.yaml"])));
        assert!(!is_complete(&event(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &["/d/web.yaml"])));
        assert!(!is_complete(&event(EventKind::Remove(notify::event::RemoveKind::File), &["/d/web.yaml"])));
        assert!(!is_complete(&event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &["/d/web.yaml"])));
        assert!(!is_complete(&event(EventKind::Create(CreateKind::File), &["/d/web.yaml"])));
        assert!(!is_complete(&event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &["/d/web.yaml"])));
    }
}
