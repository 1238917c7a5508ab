//! `--source kube`: Services, EndpointSlices and this node's Node object
//! from the Kubernetes API (and this node's Pods and the Namespaces, for
//! the socket-translation opt-out), with kube-proxy's list semantics:
//!
//! - the same server-side filters as kube-proxy (Services and slices that
//!   belong to another proxy, or are headless, are never even listed);
//! - a (re)list replaces what it lists only once it is complete: objects
//!   missing from a completed list are removed then, never before;
//! - on any watch failure the agent keeps its last state, backs off, and
//!   relists from scratch (as client-go's reflector does), which also
//!   covers an API server that comes back with a different store.

mod backoff;
mod decode;
mod watch;

use std::{path::PathBuf, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Node, Pod, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config,
    api::{ApiResource, DynamicObject},
    config::KubeConfigOptions,
};
use tokio::sync::mpsc;

use self::{
    decode::Decoder,
    watch::{Delivery, Listed, watch_kind},
};
use super::{Change, EventSender, SourceEvent};
use crate::{
    error::{Error, Result},
    metrics::Metrics,
    model::{NamespaceObj, PodObj, ServiceObj, SliceObj},
};

/// kube-proxy's label selector for Services and EndpointSlices.
pub(crate) const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Set in every pod: the in-cluster configuration applies.
const IN_CLUSTER_ENV: &str = "KUBERNETES_SERVICE_HOST";
/// Node label holding the zone.
pub(crate) const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Where to find the API server.
#[derive(Debug, Clone)]
pub(crate) struct KubeOptions {
    /// `--kubeconfig`; otherwise the in-cluster service account when running
    /// in a pod, else $KUBECONFIG / ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, for the Node watch.
    pub node_name: String,
    /// `--zone`: when set it wins, and the Node object is not watched.
    pub zone: Option<String>,
}

/// All objects of kind `K`, received untyped (decoded one by one).
fn untyped<K: kube::Resource<DynamicType = ()>>(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::erase::<K>(&()))
}

/// Starts the watches. Returns once the client is configured; the API
/// server need not be reachable yet (the watches wait for it).
pub(crate) async fn spawn(options: KubeOptions, events: EventSender, metrics: &Metrics) -> Result<()> {
    let (config, origin) = client_config(options.kubeconfig.as_deref()).await?;
    tracing::info!(server = %config.cluster_url, config = %origin, node = %options.node_name, "kubernetes source");
    let client = Client::try_from(config).map_err(|e| Error::Source(format!("kubernetes client: {e}")))?;

    let (listed_tx, listed_rx) = mpsc::unbounded_channel();
    let config = kube::runtime::watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
    let decoder = |kind| Decoder::new(kind, metrics.undecodable(kind));
    let services = Delivery {
        kind: "Service",
        reduce: |s: Service| Arc::new(ServiceObj::from(&s)),
        wrap: |c| Some(SourceEvent::Services(c)),
    };
    tokio::spawn(watch_kind(
        untyped::<Service>(&client),
        config.clone(),
        decoder("Service"),
        services,
        events.clone(),
        listed_tx.clone(),
    ));
    let slices = Delivery {
        kind: "EndpointSlice",
        reduce: |s: EndpointSlice| Arc::new(SliceObj::from(&s)),
        wrap: |c| Some(SourceEvent::Slices(c)),
    };
    tokio::spawn(watch_kind(
        untyped::<EndpointSlice>(&client),
        config,
        decoder("EndpointSlice"),
        slices,
        events.clone(),
        listed_tx,
    ));
    // The socket-translation opt-out: this node's Pods, and every
    // Namespace (metadata only). Not waited for by the first sync: an
    // agent whose RBAC lacks them (an upgrade that kept the old
    // ClusterRole) must still follow Services; the opt-out waits for its
    // own listings (`model::OptOuts::take_exempt`).
    let (opt_out_listed, _) = mpsc::unbounded_channel();
    let pods = kube::runtime::watcher::Config::default().fields(&format!("spec.nodeName={}", options.node_name));
    let pod_delivery = Delivery {
        kind: "Pod",
        reduce: |p: MetadataOnly| Arc::new(PodObj::from(&p.metadata)),
        wrap: |c| Some(SourceEvent::Pods(c)),
    };
    tokio::spawn(watch_kind(
        untyped::<Pod>(&client),
        pods,
        decoder("Pod"),
        pod_delivery,
        events.clone(),
        opt_out_listed.clone(),
    ));
    let namespace_delivery = Delivery {
        kind: "Namespace",
        reduce: |n: MetadataOnly| Arc::new(NamespaceObj::from(&n.metadata)),
        wrap: |c| Some(SourceEvent::Namespaces(c)),
    };
    tokio::spawn(watch_kind(
        untyped::<Namespace>(&client),
        kube::runtime::watcher::Config::default(),
        decoder("Namespace"),
        namespace_delivery,
        events.clone(),
        opt_out_listed,
    ));
    tokio::spawn(announce_sync(listed_rx, events.clone()));

    if let Some(zone) = options.zone {
        tracing::info!(%zone, "zone from --zone; the Node's {ZONE_LABEL} label is not read");
        events.send(SourceEvent::NodeZone(Some(zone)));
        return Ok(());
    }
    let nodes = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={}", options.node_name));
    let (node_listed, _) = mpsc::unbounded_channel();
    let zone = Delivery { kind: "Node", reduce: |n: Node| zone_of(&n), wrap: node_zone };
    tokio::spawn(watch_kind(untyped::<Node>(&client), nodes, decoder("Node"), zone, events, node_listed));
    Ok(())
}

/// The kinds listed before the first sync: Services and EndpointSlices.
const SYNCED_KINDS: usize = 2;

/// Sends `Synced` once Services and EndpointSlices have both been listed
/// completely (the Node is not waited for: its zone only refines choices;
/// nor are Pods and Namespaces, see [`spawn`]).
async fn announce_sync(mut listed: mpsc::UnboundedReceiver<Listed>, events: EventSender) {
    let mut kinds = std::collections::BTreeSet::new();
    while let Some(Listed(kind)) = listed.recv().await {
        kinds.insert(kind);
        if kinds.len() == SYNCED_KINDS {
            tracing::info!("kubernetes source synced");
            events.send(SourceEvent::Synced);
            return;
        }
    }
}

/// What the opt-out reads of Pods and Namespaces: their metadata.
#[derive(Debug, serde::Deserialize)]
struct MetadataOnly {
    metadata: ObjectMeta,
}

/// The zone of our Node (reduced to its zone label), from any change to
/// it. A listing in which our Node could not be decoded keeps the zone
/// known so far.
fn node_zone(change: Change<Option<String>>) -> Option<SourceEvent> {
    let zone = match change {
        Change::Replace { objects, kept } if objects.is_empty() && !kept.is_empty() => return None,
        Change::Replace { objects, .. } => objects.into_iter().next().flatten(),
        Change::Upsert(zone) => zone,
        Change::Delete { .. } => None,
    };
    Some(SourceEvent::NodeZone(zone))
}

fn zone_of(node: &Node) -> Option<String> {
    node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
}

/// `--kubeconfig`; else, inside a pod (`$KUBERNETES_SERVICE_HOST` set), the
/// in-cluster service account; else `$KUBECONFIG` or ~/.kube/config.
/// Returns the configuration and a description of where it came from.
async fn client_config(kubeconfig: Option<&std::path::Path>) -> Result<(Config, String)> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Source(format!("reading kubeconfig {}: {e}", path.display())))?;
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Source(format!("kubeconfig {}: {e}", path.display())))?;
            Ok((config, format!("kubeconfig {}", path.display())))
        }
        None if std::env::var_os(IN_CLUSTER_ENV).is_some() => {
            let config = Config::incluster()
                .map_err(|e| Error::Source(format!("in-cluster configuration (${IN_CLUSTER_ENV} is set): {e}")))?;
            Ok((config, "in-cluster service account".to_owned()))
        }
        None => {
            let config = Config::from_kubeconfig(&KubeConfigOptions::default()).await.map_err(|e| {
                Error::Source(format!(
                    "no kubernetes configuration: not in a pod (${IN_CLUSTER_ENV} unset), no --kubeconfig, \
                     and no usable $KUBECONFIG or ~/.kube/config: {e}"
                ))
            })?;
            Ok((config, "kubeconfig from $KUBECONFIG or ~/.kube/config".to_owned()))
        }
    }
}
