//! One relisting watch per object kind.

use std::{
    fmt::Debug,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use kube::{
    Api, ResourceExt as _,
    api::DynamicObject,
    runtime::watcher::{self, Event},
};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedSender;

use super::{backoff::Backoff, decode::Decoder};
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

/// How one kind's objects reach the controller: `reduce` turns each
/// decoded object into what the model keeps, at once (a listing is
/// buffered reduced: the API's full objects, with their managed fields,
/// are dropped as they are decoded, not held for the whole listing);
/// `wrap` turns a change into the controller's event (`None`: nothing to
/// tell).
pub(super) struct Delivery<K, M> {
    pub(super) kind: &'static str,
    pub(super) reduce: fn(K) -> M,
    pub(super) wrap: fn(Change<M>) -> Option<SourceEvent>,
}

/// Lists and watches `api` forever. A list is buffered and delivered as one
/// `Replace` when complete; on any error the watch is dropped and, after a
/// backoff, started again from a fresh list. Objects arrive untyped and
/// are decoded one by one ([`Decoder`]): one that cannot be decoded is
/// skipped, and a listing names it in `kept` so that it is neither stale
/// nor deleted.
pub(super) async fn watch_kind<K, M>(
    api: Api<DynamicObject>,
    config: watcher::Config,
    mut decoder: Decoder,
    delivery: Delivery<K, M>,
    events: EventSender,
    listed: UnboundedSender<Listed>,
) where
    K: DeserializeOwned + Debug + Send + 'static,
    M: Send + 'static,
{
    let Delivery { kind, reduce, wrap } = delivery;
    let mut backoff = Backoff::new();
    let mut failures = 0u32;
    loop {
        let mut listed_at: Option<Instant> = None;
        let mut stream = watcher::watcher(api.clone(), config.clone()).boxed();
        let mut buffer: Vec<M> = Vec::new();
        let mut kept = Vec::new();
        while let Some(item) = stream.next().await {
            let change = match item {
                Ok(Event::Init) => {
                    buffer.clear();
                    kept.clear();
                    continue;
                }
                Ok(Event::InitApply(obj)) => {
                    match decoder.decode::<K>(obj) {
                        Ok(typed) => buffer.push(reduce(typed)),
                        Err(name) => kept.push(name),
                    }
                    continue;
                }
                Ok(Event::InitDone) => {
                    let objects = std::mem::take(&mut buffer);
                    let kept = std::mem::take(&mut kept);
                    decoder.listed(&kept);
                    tracing::info!(count = objects.len(), undecodable = kept.len(), "listed {kind}s");
                    listed_at = Some(Instant::now());
                    failures = 0;
                    // The listing goes to the controller *before* the
                    // announcement that this kind is listed: the source's
                    // "synced" must never overtake it (the dataplane would
                    // be declared in sync, and a restart would program the
                    // Services, without these objects).
                    if let Some(event) = wrap(Change::Replace { objects, kept })
                        && !events.send(event)
                    {
                        return;
                    }
                    // Only the first list of each kind is awaited; later
                    // ones find the receiver gone, which is fine.
                    if listed.send(Listed(kind)).is_err() {
                        tracing::trace!("{kind}s listed again");
                    }
                    continue;
                }
                Ok(Event::Apply(obj)) => match decoder.decode::<K>(obj) {
                    Ok(typed) => Change::Upsert(reduce(typed)),
                    // The previous version, if any, stays in effect.
                    Err(_) => continue,
                },
                Ok(Event::Delete(obj)) => {
                    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
                    decoder.forget(&(namespace.clone(), name.clone()));
                    Change::Delete { namespace, name }
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
            if let Some(event) = wrap(change)
                && !events.send(event)
            {
                return;
            }
        }
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
