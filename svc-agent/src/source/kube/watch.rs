//! One relisting watch per object kind.

use std::{
    fmt::Debug,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use kube::{
    Api, Resource, ResourceExt as _,
    runtime::watcher::{self, Event},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;

use super::backoff::Backoff;
use crate::source::{Change, EventSender, SourceEvent};

/// A watch that fails after running this long since its list completed
/// starts the backoff over; one that fails sooner keeps backing off. (A
/// watch that fails right after every successful list, e.g. `list` allowed
/// but `watch` forbidden, must not turn into a relist loop at the first
/// delay: every relist is a full LIST of the cluster's Services.)
const HEALTHY: Duration = Duration::from_secs(10);

/// "This kind completed a list" (for the first-sync announcement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Listed(pub(super) &'static str);

/// Lists and watches `api` forever. A list is buffered and delivered as one
/// `Replace` when complete; on any error the watch is dropped and, after a
/// backoff, started again from a fresh list.
pub(super) async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    events: EventSender,
    listed: UnboundedSender<Listed>,
    wrap: fn(Change<K>) -> SourceEvent,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut backoff = Backoff::new();
    let mut failures = 0u32;
    loop {
        let mut listed_at: Option<Instant> = None;
        let mut stream = watcher::watcher(api.clone(), config.clone()).boxed();
        let mut buffer: Vec<K> = Vec::new();
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(Event::Init) => {
                    buffer.clear();
                    continue;
                }
                Ok(Event::InitApply(obj)) => {
                    buffer.push(obj);
                    continue;
                }
                Ok(Event::InitDone) => {
                    let objects = std::mem::take(&mut buffer);
                    tracing::info!(count = objects.len(), "listed {kind}s");
                    listed_at = Some(Instant::now());
                    failures = 0;
                    let _ = listed.send(Listed(kind));
                    wrap(Change::Replace(objects))
                }
                Ok(Event::Apply(obj)) => wrap(Change::Upsert(obj)),
                Ok(Event::Delete(obj)) => {
                    wrap(Change::Delete { namespace: obj.namespace().unwrap_or_default(), name: obj.name_any() })
                }
                Err(err) => {
                    if listed_at.is_some_and(|at| at.elapsed() >= HEALTHY) {
                        backoff.reset();
                    }
                    failures += 1;
                    // The first failure of an outage is worth a warning;
                    // the retries that follow are expected.
                    if failures == 1 {
                        tracing::warn!("{kind} watch failed, keeping the last state and relisting: {err}");
                    } else {
                        tracing::debug!("{kind} watch failed again ({failures}): {err}");
                    }
                    break;
                }
            };
            if !events.send(event) {
                return;
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
