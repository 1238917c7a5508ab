//! `--source kube`: Services, EndpointSlices and this node's Node object
//! from the Kubernetes API, with kube-proxy's list semantics:
//!
//! - the same server-side filters as kube-proxy (Services and slices that
//!   belong to another proxy, or are headless, are never even listed);
//! - a (re)list replaces what it lists only once it is complete: objects
//!   missing from a completed list are removed then, never before;
//! - on any watch failure the agent keeps its last state, backs off, and
//!   relists from scratch (as client-go's reflector does), which also
//!   covers an API server that comes back with a different store.

mod backoff;
mod watch;

use std::path::PathBuf;

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{Api, Client, Config, config::KubeConfigOptions};
use tokio::sync::mpsc;

use self::watch::{Listed, watch_kind};
use super::{Change, EventSender, SourceEvent};
use crate::error::{Error, Result};

/// kube-proxy's label selector for Services and EndpointSlices.
pub const PROXY_LABEL_SELECTOR: &str = "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Node label holding the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Where to find the API server.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// `--kubeconfig`; otherwise in-cluster config, then $KUBECONFIG / ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, for the Node watch.
    pub node_name: String,
}

/// Starts the watches. Returns once the client is configured; the API
/// server need not be reachable yet (the watches wait for it).
pub async fn spawn(options: KubeOptions, events: EventSender) -> Result<()> {
    let config = client_config(options.kubeconfig.as_deref()).await?;
    tracing::info!(server = %config.cluster_url, node = %options.node_name, "kubernetes source");
    let client = Client::try_from(config).map_err(|e| Error::Source(format!("kubernetes client: {e}")))?;

    let (listed_tx, listed_rx) = mpsc::unbounded_channel();
    let config = kube::runtime::watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
    tokio::spawn(watch_kind(
        Api::<Service>::all(client.clone()),
        config.clone(),
        "Service",
        events.clone(),
        listed_tx.clone(),
        SourceEvent::Services,
    ));
    tokio::spawn(watch_kind(
        Api::<EndpointSlice>::all(client.clone()),
        config,
        "EndpointSlice",
        events.clone(),
        listed_tx,
        SourceEvent::Slices,
    ));
    tokio::spawn(announce_sync(listed_rx, events.clone()));

    let nodes = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={}", options.node_name));
    let (node_listed, _) = mpsc::unbounded_channel();
    tokio::spawn(watch_kind(Api::<Node>::all(client), nodes, "Node", events, node_listed, node_zone));
    Ok(())
}

/// Sends `Synced` once Services and EndpointSlices have both been listed
/// completely (the Node is not waited for: its zone only refines choices).
async fn announce_sync(mut listed: mpsc::UnboundedReceiver<Listed>, events: EventSender) {
    let mut kinds = std::collections::BTreeSet::new();
    while let Some(Listed(kind)) = listed.recv().await {
        kinds.insert(kind);
        if kinds.len() == 2 {
            tracing::info!("kubernetes source synced");
            events.send(SourceEvent::Synced);
            return;
        }
    }
}

/// The zone of our Node, from any change to it.
fn node_zone(change: Change<Node>) -> SourceEvent {
    let zone = match change {
        Change::Replace(nodes) => nodes.into_iter().next().and_then(|n| zone_of(&n)),
        Change::Upsert(node) => zone_of(&node),
        Change::Delete { .. } => None,
    };
    SourceEvent::NodeZone(zone)
}

fn zone_of(node: &Node) -> Option<String> {
    node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
}

/// `--kubeconfig`, else in-cluster, else the usual kubeconfig lookup.
async fn client_config(kubeconfig: Option<&std::path::Path>) -> Result<Config> {
    match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Source(format!("reading kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Source(format!("kubeconfig {}: {e}", path.display())))
        }
        None => Config::infer().await.map_err(|e| Error::Source(format!("no kubernetes configuration found: {e}"))),
    }
}
