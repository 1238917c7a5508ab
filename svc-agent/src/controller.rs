//! The control loop: source events -> store -> model -> writer.
//!
//! Events are coalesced: everything queued when the loop wakes up is folded
//! into the store first, and each affected Service is computed and written
//! once. Nothing is written before the source's first complete view
//! (`Synced`), so a restarted agent keeps serving the pinned state
//! untouched until it can reconcile all of it at once.

use std::{collections::HashMap, sync::Arc, time::Instant};

use crate::{
    dataplane::{Table, Writer, writer::BatchReport},
    health::Health,
    metrics::Metrics,
    model::{DesiredService, Dirty, NodeContext, ServiceKey, ServiceObj, SliceObj, Store, desired_service},
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
        }
    }

    /// Folds a batch of events into the store and programs what changed.
    /// Returns `None` while the source has not synced yet.
    pub(crate) fn handle(&mut self, events: Vec<SourceEvent>) -> Option<BatchReport> {
        let mut dirty = Dirty::new();
        let mut first_sync = false;
        for event in events {
            match event {
                SourceEvent::Services(change) => dirty.extend(self.apply_services(change)),
                SourceEvent::Slices(change) => dirty.extend(self.apply_slices(change)),
                SourceEvent::NodeZone(zone) => {
                    if self.node.zone != zone {
                        tracing::info!(?zone, "node zone changed");
                        self.node.zone = zone;
                        dirty.extend(self.store.service_keys().cloned());
                    }
                }
                SourceEvent::NodeAddresses(addresses) => {
                    if self.node.addresses != addresses {
                        self.node.addresses = addresses;
                        dirty.extend(self.store.service_keys().cloned());
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
            dirty.extend(self.store.service_keys().cloned());
            dirty.extend(self.writer.programmed_services().cloned());
        }
        let batch: Vec<(ServiceKey, Option<DesiredService>)> =
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
    fn desired(&mut self, key: &ServiceKey) -> Option<Option<DesiredService>> {
        let Some(svc) = self.store.service(key) else {
            self.model_errors.remove(key);
            self.untranslated.remove(key);
            return Some(None);
        };
        let slices = self.store.slices_of(key);
        match desired_service(svc, &slices, &self.node) {
            Ok(desired) => {
                self.model_errors.remove(key);
                self.note_untranslated(key, &desired.untranslated_ports);
                Some(Some(desired))
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

    fn apply_services(&mut self, change: Change<Arc<ServiceObj>>) -> Dirty {
        match change {
            Change::Replace { objects, kept } => self.store.replace_services(objects, &kept),
            Change::Upsert(svc) => self.store.upsert_service(svc),
            Change::Delete { namespace, name } => self.store.delete_service(&ServiceKey::new(namespace, name)),
        }
    }

    fn apply_slices(&mut self, change: Change<Arc<SliceObj>>) -> Dirty {
        match change {
            Change::Replace { objects, kept } => self.store.replace_slices(objects, &kept),
            Change::Upsert(slice) => self.store.upsert_slice(slice),
            Change::Delete { namespace, name } => self.store.delete_slice(&namespace, &name),
        }
    }
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
    udp_reset: &std::sync::mpsc::Sender<Vec<crate::dataplane::udp_reset::Removed>>,
) {
    while let Some(first) = events.blocking_recv() {
        let started = Instant::now();
        let mut batch: Vec<Envelope> = vec![first];
        while let Ok(more) = events.try_recv() {
            batch.push(more);
        }
        let received: Vec<Instant> = batch.iter().map(|e| e.received).collect();
        health.batch_started(received.iter().min().copied().unwrap_or(started));
        metrics.events.inc_by(batch.len() as u64);
        let handled = controller.handle(batch.into_iter().map(|e| e.event).collect());
        health.batch_done();
        let Some(report) = handled else {
            continue;
        };
        let done = Instant::now();
        if !report.udp_removed.is_empty() {
            let _ = udp_reset.send(report.udp_removed.clone());
        }
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
