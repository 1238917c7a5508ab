//! The control loop: source events -> store -> model -> writer.
//!
//! Events are coalesced: everything queued when the loop wakes up is folded
//! into the store first, and each affected Service is computed and written
//! once. Nothing is written before the source's first complete view
//! (`Synced`), so a restarted agent keeps serving the pinned state
//! untouched until it can reconcile all of it at once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Instant, SystemTime},
};

use crate::{
    dataplane::{
        Table, Writer,
        writer::{BatchReport, ServiceUpdate},
    },
    health::Health,
    health_check::HealthChecks,
    metrics::Metrics,
    model::{
        Dirty, ExemptPod, HealthCheck, NodeContext, OptOuts, ServiceKey, ServiceObj, SliceObj, SourceRanges, Store,
        desired_service,
    },
    source::{Change, Envelope, EventReceiver, SourceEvent},
};

/// A batch this large leaves enough freed memory behind to return it to
/// the kernel ([`crate::sys::trim_heap`]).
const BULK_BATCH: usize = 1000;

/// State of the control loop.
#[derive(Debug)]
pub(crate) struct Controller<T: Table> {
    store: Store,
    node: NodeContext,
    writer: Writer<T>,
    synced: bool,
    /// Last model error per Service, to log each problem once.
    model_errors: HashMap<ServiceKey, String>,
    /// Untranslated (SCTP) ports per Service, to log them once.
    untranslated: HashMap<ServiceKey, Vec<String>>,
    /// Changes received since the last [`Self::take_changes`].
    changes: Changes,
    /// The health check node ports to serve.
    health_checks: PerService<HealthCheck>,
    /// `loadBalancerSourceRanges` by Service.
    source_ranges: PerService<Vec<SourceRanges>>,
    /// This node's Pods and the Namespaces: who opts out of translation.
    opt_outs: OptOuts,
}

/// What each Service wants of a part of the dataplane kept outside the
/// writer (health check servers, source ranges), and whether that changed
/// since it was last handed over: the part is rewritten only then.
#[derive(Debug)]
struct PerService<V> {
    by_service: BTreeMap<ServiceKey, V>,
    changed: bool,
}

impl<V: PartialEq + Clone> PerService<V> {
    fn new() -> Self {
        Self { by_service: BTreeMap::new(), changed: false }
    }

    /// Records what `key` wants (`None`: nothing).
    fn set(&mut self, key: &ServiceKey, value: Option<V>) {
        if self.by_service.get(key) == value.as_ref() {
            return;
        }
        self.changed = true;
        match value {
            Some(v) => self.by_service.insert(key.clone(), v),
            None => self.by_service.remove(key),
        };
    }

    /// Every Service's value, if anything changed since the last call.
    fn take(&mut self) -> Option<&BTreeMap<ServiceKey, V>> {
        std::mem::take(&mut self.changed).then_some(&self.by_service)
    }
}

/// The changes a batch carried, counted as kube-proxy's change trackers
/// count them (one per object in an event; a listing counts each object).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Service objects received.
    pub services: u64,
    /// EndpointSlice objects received.
    pub endpoints: u64,
    /// `last-change-trigger-time` of every updated slice (watch events
    /// only: a listing's annotations are of changes programmed long ago).
    pub trigger_times: Vec<SystemTime>,
}

fn count<T>(change: &Change<T>) -> u64 {
    match change {
        Change::Replace { objects, .. } => objects.len() as u64,
        Change::Upsert(_) | Change::Delete { .. } => 1,
    }
}

impl<T: Table> Controller<T> {
    /// A controller over an adopted writer.
    pub(crate) fn new(writer: Writer<T>, node: NodeContext) -> Self {
        Self {
            store: Store::default(),
            node,
            writer,
            synced: false,
            model_errors: HashMap::new(),
            untranslated: HashMap::new(),
            changes: Changes::default(),
            health_checks: PerService::new(),
            source_ranges: PerService::new(),
            opt_outs: OptOuts::default(),
        }
    }

    /// The pods whose sockets are not translated, if that changed since
    /// the last call (never before the first sync: until then the pinned
    /// exemptions stay as they are).
    pub(crate) fn take_exempt(&mut self) -> Option<Vec<ExemptPod>> {
        if !self.synced {
            return None;
        }
        self.opt_outs.take_exempt()
    }

    /// Every Service's source restrictions, if they changed since the last
    /// call.
    pub(crate) fn take_source_ranges(&mut self) -> Option<&BTreeMap<ServiceKey, Vec<SourceRanges>>> {
        self.source_ranges.take()
    }

    /// The health check node ports to serve, if they changed since the
    /// last call.
    pub(crate) fn take_health_checks(&mut self) -> Option<HealthChecks> {
        self.health_checks.take().cloned()
    }

    /// The changes received since the last call (also those still waiting
    /// for the first sync).
    pub(crate) fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Changes received and not yet programmed (before the first sync).
    pub(crate) fn pending_changes(&self) -> &Changes {
        &self.changes
    }

    /// Folds a batch of events into the store and programs what changed.
    /// Returns `None` while the source has not synced yet.
    pub(crate) fn handle(&mut self, events: Vec<SourceEvent>) -> Option<BatchReport> {
        // Before the first sync nothing is written, and the first sync
        // reconciles every Service (the store's and the adopted pins'):
        // what changes until then need not be marked.
        let mut dirty = if self.synced { Dirty::new() } else { Dirty::ignored() };
        let mut first_sync = false;
        for event in events {
            match event {
                SourceEvent::Services(change) => {
                    self.changes.services += count(&change);
                    self.apply_services(change, &mut dirty);
                }
                SourceEvent::Slices(change) => {
                    self.changes.endpoints += count(&change);
                    if let Change::Upsert(slice) = &change
                        && let Some(at) = slice.trigger_time
                    {
                        self.changes.trigger_times.push(at);
                    }
                    self.apply_slices(change, &mut dirty);
                }
                SourceEvent::Pods(change) => self.opt_outs.apply_pods(change),
                SourceEvent::Namespaces(change) => self.opt_outs.apply_namespaces(change),
                SourceEvent::NodeZone(zone) => {
                    if self.node.zone != zone {
                        tracing::info!(?zone, "node zone changed");
                        self.node.zone = zone;
                        dirty.mark_all(self.store.service_keys());
                    }
                }
                SourceEvent::NodeAddresses(addresses) => {
                    if self.node.addresses != addresses {
                        self.node.addresses = addresses;
                        dirty.mark_all(self.store.service_keys());
                    }
                }
                SourceEvent::Synced => {
                    first_sync |= !self.synced;
                    self.synced = true;
                }
            }
        }
        if !self.synced {
            return None;
        }
        if first_sync {
            // Reconcile everything: what the source has, and what the pins
            // held (stale Services are removed, after the upserts).
            dirty = Dirty::new();
            dirty.mark_all(self.store.service_keys());
            dirty.mark_all(self.writer.programmed_services());
        }
        let batch: Vec<(ServiceKey, ServiceUpdate)> =
            dirty.into_iter().filter_map(|key| self.desired(&key).map(|d| (key, d))).collect();
        let report = self.writer.apply(batch);
        if first_sync {
            self.writer.remove_orphans();
        }
        for (service, reason) in &report.refused {
            tracing::error!(service = %service, "service {service} not fully programmed: {reason}");
        }
        Some(report)
    }

    /// What `key` should look like; `None` skips it this round (a model
    /// error keeps whatever was programmed before, like a rejected edit).
    fn desired(&mut self, key: &ServiceKey) -> Option<ServiceUpdate> {
        let Some(svc) = self.store.service(key) else {
            self.model_errors.remove(key);
            self.untranslated.remove(key);
            self.health_checks.set(key, None);
            self.source_ranges.set(key, None);
            return Some(ServiceUpdate::Remove);
        };
        let slices = self.store.slices_of(key);
        match desired_service(svc, &slices, &self.node) {
            Ok(desired) => {
                self.model_errors.remove(key);
                self.note_untranslated(key, &desired.untranslated_ports);
                self.health_checks.set(key, desired.health_check);
                let ranges = &desired.source_ranges;
                self.source_ranges.set(key, (!ranges.is_empty()).then(|| ranges.clone()));
                // Nothing to translate (headless, ExternalName, another
                // proxy's) is the same as gone.
                Some(if desired.frontends.is_empty() { ServiceUpdate::Remove } else { ServiceUpdate::Program(desired) })
            }
            Err(err) => {
                let msg = err.to_string();
                if self.model_errors.get(key) != Some(&msg) {
                    tracing::error!(service = %key, "Service {key} skipped: {msg}");
                    self.model_errors.insert(key.clone(), msg);
                }
                None
            }
        }
    }

    /// Says once per Service which of its ports are not translated.
    fn note_untranslated(&mut self, key: &ServiceKey, ports: &[String]) {
        if ports.is_empty() {
            self.untranslated.remove(key);
        } else if self.untranslated.get(key).map(Vec::as_slice) != Some(ports) {
            tracing::warn!(
                service = %key,
                "Service {key}: ports {} are not translated (SCTP has no socket hook here)",
                ports.join(", ")
            );
            self.untranslated.insert(key.clone(), ports.to_vec());
        }
    }

    fn apply_services(&mut self, change: Change<Arc<ServiceObj>>, dirty: &mut Dirty) {
        match change {
            Change::Replace { objects, kept } => self.store.replace_services(objects, &kept, dirty),
            Change::Upsert(svc) => self.store.upsert_service(svc, dirty),
            Change::Delete { namespace, name } => self.store.delete_service(&ServiceKey::new(namespace, name), dirty),
        }
    }

    fn apply_slices(&mut self, change: Change<Arc<SliceObj>>, dirty: &mut Dirty) {
        match change {
            Change::Replace { objects, kept } => self.store.replace_slices(objects, &kept, dirty),
            Change::Upsert(slice) => self.store.upsert_slice(slice, dirty),
            Change::Delete { namespace, name } => self.store.delete_slice(&namespace, &name, dirty),
        }
    }
}

/// The parts of the dataplane kept outside the writer, which the loop
/// hands what changed after each batch.
pub(crate) struct Outputs {
    /// Connected UDP sockets of removed backends, to reset.
    pub udp_reset: std::sync::mpsc::Sender<Vec<crate::dataplane::udp_reset::Removed>>,
    /// The health check node ports to serve.
    pub health_checks: tokio::sync::watch::Sender<HealthChecks>,
    /// `loadBalancerSourceRanges` (`SVC_LB_SRC`).
    pub source_ranges: Option<crate::dataplane::source_ranges::SourceRangeTable>,
    /// The pods whose sockets are not translated.
    pub exempt: std::sync::mpsc::Sender<Vec<ExemptPod>>,
}

/// Runs the loop on the calling (dedicated) thread until every sender is
/// gone. Map writes are blocking syscalls, so they stay off the async
/// runtime. Whatever is queued when the loop wakes up is one batch: a burst
/// is coalesced without waiting for more.
pub(crate) fn run_blocking<T: Table>(
    mut events: EventReceiver,
    mut controller: Controller<T>,
    metrics: &Arc<Metrics>,
    health: &Health,
    mut outputs: Outputs,
) {
    // Only to wait on two things at once (no I/O or timers: no drivers).
    let waiter = tokio::runtime::Builder::new_current_thread().build().expect("a runtime without drivers");
    loop {
        let first = match next_wake(&waiter, &mut events, &controller.writer) {
            LoopWake::Event(Some(first)) => first,
            LoopWake::Event(None) => break,
            LoopWake::GraceEnded => {
                controller.writer.reap();
                send_udp_removed(&mut controller.writer, &outputs);
                continue;
            }
        };
        let started = Instant::now();
        let mut batch: Vec<Envelope> = vec![first];
        while let Ok(more) = events.try_recv() {
            batch.push(more);
        }
        let received: Vec<Instant> = batch.iter().map(|e| e.received).collect();
        health.batch_started(received.iter().min().copied().unwrap_or(started));
        metrics.events.inc_by(batch.len() as u64);
        // When the newest of these events was queued, on the wall clock.
        let newest = received.iter().max().map_or(started, |t| *t);
        metrics.set_last_queued(SystemTime::now().checked_sub(started.duration_since(newest)));
        let handled = controller.handle(batch.into_iter().map(|e| e.event).collect());
        health.batch_done();
        let Some(report) = handled else {
            metrics.set_pending_changes(controller.pending_changes());
            continue;
        };
        let done = Instant::now();
        metrics.synced(&controller.take_changes(), done.duration_since(started), SystemTime::now());
        if let (Some(table), Some(ranges)) = (outputs.source_ranges.as_mut(), controller.take_source_ranges()) {
            table.apply(ranges.values().flatten());
        }
        if let Some(pods) = controller.take_exempt() {
            // The exemption thread only ends with the process.
            drop(outputs.exempt.send(pods));
        }
        if let Some(checks) = controller.take_health_checks() {
            // The servers' task only ends with the runtime.
            drop(outputs.health_checks.send(checks));
        }
        send_udp_removed(&mut controller.writer, &outputs);
        for at in &received {
            metrics.sync_latency.observe(done.duration_since(*at).as_secs_f64());
        }
        metrics.apply_duration.observe(done.duration_since(started).as_secs_f64());
        if report.changed + report.removed >= BULK_BATCH {
            crate::sys::trim_heap();
        }
        metrics.batches.inc();
        metrics.services.set(controller.store.service_count() as i64);
        metrics.frontends.set(controller.writer.frontend_count() as i64);
        metrics.reverse_owners.set(controller.writer.reverse_owner_count() as i64);
        metrics.set_refused(controller.writer.pending_services().map(|(_, reason)| reason));
        metrics.set_ready();
        let oldest = received.iter().min().map_or(0, |t| done.duration_since(*t).as_micros() as u64);
        tracing::debug!(events = received.len(), oldest_event_us = oldest, "event to map latency");
        tracing::info!(
            services = controller.store.service_count(),
            frontends = controller.writer.frontend_count(),
            changed = report.changed,
            removed = report.removed,
            refused = report.refused.len(),
            events = received.len(),
            apply_us = done.duration_since(started).as_micros() as u64,
            "dataplane in sync"
        );
    }
}

/// Hands the reset thread the UDP backends removed by batches whose grace
/// period has ended.
fn send_udp_removed<T: Table>(writer: &mut Writer<T>, outputs: &Outputs) {
    let removed = writer.take_udp_removed();
    if !removed.is_empty() {
        // The reset thread only ends with the process.
        drop(outputs.udp_reset.send(removed));
    }
}

/// What woke the control loop.
enum LoopWake {
    /// The next event (`None`: every sender is gone).
    Event(Option<Envelope>),
    /// A grace period ended: retired sets may be deleted.
    GraceEnded,
}

/// Waits for the next event and, while retired backend sets wait for a
/// grace period, for the end of one: they are deleted then, not at the
/// next event (which may be long in coming).
fn next_wake<T: Table>(waiter: &tokio::runtime::Runtime, events: &mut EventReceiver, writer: &Writer<T>) -> LoopWake {
    let Some(signal) = writer.grace_signal().filter(|_| writer.awaits_grace()) else {
        return LoopWake::Event(events.blocking_recv());
    };
    // The signal keeps a wake-up that came before this wait (a grace
    // period that ended during the batch), so none is lost.
    waiter.block_on(async {
        tokio::select! {
            biased;
            event = events.recv() => LoopWake::Event(event),
            () = signal.notified() => LoopWake::GraceEnded,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use k8s_openapi::api::core::v1::Service;

    use super::*;
    use crate::dataplane::{
        memory::{MemoryTable, Op},
        table::Capacity,
    };

    const ROOMY: Capacity = Capacity { frontends: 100, slots: 1000, index: 1000, meta: 100, reverse: 1000 };

    fn controller() -> Controller<MemoryTable> {
        let node =
            NodeContext { name: "node-a".into(), zone: None, addresses: vec![Ipv4Addr::new(192, 0, 2, 10).into()] };
        Controller::new(Writer::adopt(MemoryTable::new(ROOMY)).unwrap(), node)
    }

    fn web(cluster_ip: &str) -> Arc<ServiceObj> {
        let yaml = format!(
            "metadata: {{name: web, namespace: default}}\nspec: {{clusterIP: {cluster_ip}, ports: [{{name: http, port: 80}}]}}"
        );
        Arc::new(ServiceObj::from(&serde_yaml::from_str::<Service>(&yaml).unwrap()))
    }

    fn upsert(svc: &Arc<ServiceObj>) -> SourceEvent {
        SourceEvent::Services(Change::Upsert(Arc::clone(svc)))
    }

    fn frontend_ops(c: &Controller<MemoryTable>) -> usize {
        c.writer.table().ops.iter().filter(|op| matches!(op, Op::PutFrontend(..) | Op::DeleteFrontend(_))).count()
    }

    #[test]
    fn nothing_is_written_before_the_first_sync() {
        let mut c = controller();
        assert!(c.handle(vec![upsert(&web("10.96.0.10"))]).is_none(), "not synced: no batch");
        assert!(c.writer.table().ops.is_empty(), "the pinned state stays untouched until the first sync");
        let report = c.handle(vec![SourceEvent::Synced]).expect("synced");
        assert_eq!(report.changed, 1);
        assert_eq!(c.writer.frontend_count(), 1);
    }

    #[test]
    fn a_model_error_keeps_what_was_programmed() {
        let mut c = controller();
        c.handle(vec![upsert(&web("10.96.0.10")), SourceEvent::Synced]);
        let before = c.writer.table().frontends.clone();
        let report = c.handle(vec![upsert(&web("10.96.0.300"))]).expect("synced");
        assert_eq!((report.changed, report.removed), (0, 0));
        assert_eq!(c.writer.table().frontends, before, "the last good state stays");
        assert!(c.model_errors.contains_key(&ServiceKey::new("default", "web")), "reported (once)");
        // Fixed: programmed again, and the error is forgotten.
        let report = c.handle(vec![upsert(&web("10.96.0.11"))]).expect("synced");
        assert_eq!(report.changed, 1);
        assert!(c.model_errors.is_empty());
    }

    #[test]
    fn an_unchanged_object_writes_nothing() {
        let mut c = controller();
        let svc = web("10.96.0.10");
        c.handle(vec![upsert(&svc), SourceEvent::Synced]);
        let ops = frontend_ops(&c);
        // The same object again, and an equal copy of it.
        let report = c.handle(vec![upsert(&svc), upsert(&web("10.96.0.10"))]).expect("synced");
        assert_eq!((report.changed, report.removed), (0, 0));
        assert_eq!(frontend_ops(&c), ops, "no map write for an unchanged Service");
    }
}
