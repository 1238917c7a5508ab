//! Sources of desired state. A source only delivers Kubernetes objects
//! (Services and EndpointSlices; this node's Pods and the Namespaces, for
//! the socket-translation opt-out), facts about the node, and says when it
//! has delivered a complete view; turning them into dataplane state is the
//! model's job. Both sources produce the same events for the same objects.

pub(crate) mod kube;
pub(crate) mod manifest;
pub(crate) mod node;

use std::{net::IpAddr, sync::Arc, time::Instant};

use crate::{
    health::Health,
    model::{NamespaceObj, PodObj, ServiceObj, SliceObj},
};

/// A change to one kind of object.
#[derive(Debug, Clone)]
pub(crate) enum Change<T> {
    /// The complete current set (initial listing, relist, manifest re-read):
    /// anything not in it is gone, except the objects named in `kept`.
    Replace {
        /// Every object of the listing that could be decoded.
        objects: Vec<T>,
        /// Listed objects that could not be decoded (namespace, name):
        /// neither stale nor deleted, so whatever was known of them stays.
        kept: Vec<(String, String)>,
    },
    /// One object added or modified.
    Upsert(T),
    /// One object deleted.
    Delete {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl<T> Change<T> {
    /// A complete listing in which every object could be read.
    pub(crate) fn replace_all(objects: Vec<T>) -> Self {
        Self::Replace { objects, kept: Vec::new() }
    }
}

/// What a source tells the controller.
#[derive(Debug, Clone)]
pub(crate) enum SourceEvent {
    /// Services changed.
    Services(Change<Arc<ServiceObj>>),
    /// EndpointSlices changed.
    Slices(Change<Arc<SliceObj>>),
    /// This node's Pods changed.
    Pods(Change<Arc<PodObj>>),
    /// Namespaces changed (a Namespace's name is in `Delete::name`).
    Namespaces(Change<Arc<NamespaceObj>>),
    /// This node's zone (from its Node object, or `--zone`).
    NodeZone(Option<String>),
    /// This node's local IPv4 addresses changed (NodePort frontends).
    NodeAddresses(Vec<IpAddr>),
    /// Everything the source knows has been delivered at least once: the
    /// controller may now program, and remove what is stale.
    Synced,
}

/// An event and when the agent received it (for the event-to-map latency).
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    /// The event.
    pub event: SourceEvent,
    /// When the source received it.
    pub received: Instant,
}

/// Sending half used by sources; every event is also noted for liveness.
#[derive(Debug, Clone)]
pub(crate) struct EventSender(tokio::sync::mpsc::UnboundedSender<Envelope>, Arc<Health>);

/// Receiving half used by the controller.
pub(crate) type EventReceiver = tokio::sync::mpsc::UnboundedReceiver<Envelope>;

/// A channel from sources to the controller.
pub(crate) fn channel(health: Arc<Health>) -> (EventSender, EventReceiver) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    (EventSender(tx, health), rx)
}

impl EventSender {
    /// Sends an event stamped with the current time. Returns false once
    /// the controller is gone.
    pub(crate) fn send(&self, event: SourceEvent) -> bool {
        let received = Instant::now();
        self.1.queued(received);
        self.0.send(Envelope { event, received }).is_ok()
    }

    /// Whether the controller is gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}
