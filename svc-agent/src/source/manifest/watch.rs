//! Watches the manifest directory (inotify through `notify`) and feeds the
//! controller a fresh view whenever files change.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use notify::{
    EventKind, RecursiveMode, Watcher as _,
    event::{AccessKind, AccessMode},
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
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| is_own_read(e.kind)) {
            return;
        }
        if wake_tx.send(()).is_err() {
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
                    let services = delta(&last.services, &snapshot.services, |s| (&s.key.namespace, &s.key.name));
                    let slices = delta(&last.slices, &snapshot.slices, |s| (&s.namespace, &s.name));
                    let pods_changed = snapshot.pods != last.pods;
                    let namespaces_changed = snapshot.namespaces != last.namespaces;
                    let changed = !(services.is_empty() && slices.is_empty()) || pods_changed || namespaces_changed;
                    tracing::debug!(
                        reload_us = woke_at.elapsed().as_micros() as u64,
                        changed,
                        "manifest directory re-read"
                    );
                    services.into_iter().for_each(|c| {
                        events.send(SourceEvent::Services(c));
                    });
                    slices.into_iter().for_each(|c| {
                        events.send(SourceEvent::Slices(c));
                    });
                    // Few objects: a change resends them all.
                    if pods_changed {
                        events.send(SourceEvent::Pods(Change::replace_all(snapshot.pods.clone())));
                    }
                    if namespaces_changed {
                        events.send(SourceEvent::Namespaces(Change::replace_all(snapshot.namespaces.clone())));
                    }
                    last = snapshot;
                }
                Err(e) => tracing::error!(dir = %manifests.dir().display(), "cannot read manifest directory: {e}"),
            }
            if events.is_closed() {
                return;
            }
        }
    }))
}

/// Opening and reading (inotify `IN_OPEN`, `IN_CLOSE_NOWRITE`, which
/// notify watches too) is what a re-read itself does to the directory and
/// its files: waking on it would re-read forever. A close after writing
/// is a change.
fn is_own_read(kind: EventKind) -> bool {
    matches!(kind, EventKind::Access(access) if access != AccessKind::Close(AccessMode::Write))
}

/// The upserts and deletes that turn `before` into `after`. A re-read
/// shares the objects of unchanged files (`Arc`s compare by pointer
/// first), so this is cheap, and the controller only hears about what
/// changed instead of diffing every object again.
fn delta<T: Eq>(before: &[Arc<T>], after: &[Arc<T>], key: impl Fn(&T) -> (&str, &str)) -> Vec<Change<Arc<T>>> {
    let old: HashMap<(&str, &str), &Arc<T>> = before.iter().map(|o| (key(o), o)).collect();
    let new: HashSet<(&str, &str)> = after.iter().map(|o| key(o)).collect();
    let mut changes: Vec<Change<Arc<T>>> =
        after.iter().filter(|o| old.get(&key(o)) != Some(o)).map(|o| Change::Upsert(Arc::clone(o))).collect();
    changes.extend(
        old.keys()
            .filter(|k| !new.contains(*k))
            .map(|(namespace, name)| Change::Delete { namespace: (*namespace).to_owned(), name: (*name).to_owned() }),
    );
    changes
}

fn send(events: &EventSender, snapshot: &Snapshot) {
    events.send(SourceEvent::Services(Change::replace_all(snapshot.services.clone())));
    events.send(SourceEvent::Slices(Change::replace_all(snapshot.slices.clone())));
    events.send(SourceEvent::Pods(Change::replace_all(snapshot.pods.clone())));
    events.send(SourceEvent::Namespaces(Change::replace_all(snapshot.namespaces.clone())));
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    use super::*;

    fn obj(ns: &'static str, name: &'static str, v: u32) -> Arc<(&'static str, &'static str, u32)> {
        Arc::new((ns, name, v))
    }

    fn key<'a>(o: &'a (&'static str, &'static str, u32)) -> (&'a str, &'a str) {
        (o.0, o.1)
    }

    #[test]
    fn delta_names_only_what_changed() {
        let (kept, edited, gone) = (obj("a", "kept", 1), obj("a", "edited", 1), obj("b", "gone", 1));
        let before = vec![Arc::clone(&kept), edited, gone];
        let (edited2, added) = (obj("a", "edited", 2), obj("c", "added", 1));
        let after = vec![kept, Arc::clone(&edited2), Arc::clone(&added)];
        let mut got: Vec<String> = delta(&before, &after, key)
            .into_iter()
            .map(|c| match c {
                Change::Upsert(o) => format!("upsert {}/{} v{}", o.0, o.1, o.2),
                Change::Delete { namespace, name } => format!("delete {namespace}/{name}"),
                Change::Replace { .. } => "replace".to_owned(),
            })
            .collect();
        got.sort();
        assert_eq!(got, ["delete b/gone", "upsert a/edited v2", "upsert c/added v1"]);
        assert!(delta(&after, &after, key).is_empty());
    }

    #[test]
    fn own_reads_do_not_wake_the_reader_but_changes_do() {
        assert!(is_own_read(EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(is_own_read(EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!is_own_read(EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(!is_own_read(EventKind::Create(CreateKind::File)));
        assert!(!is_own_read(EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(!is_own_read(EventKind::Remove(notify::event::RemoveKind::File)));
    }
}
