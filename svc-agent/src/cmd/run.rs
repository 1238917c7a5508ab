//! `svc-agent run`: load and attach, adopt pinned state, then follow the
//! source until SIGINT/SIGTERM. Stopping leaves the pinned dataplane
//! serving (upgrades and crashes must not interrupt traffic); `cleanup`
//! is the explicit way to remove it.

use std::{path::Path, sync::Arc};

use crate::{
    cli::RunArgs,
    controller::{self, Controller},
    dataplane::{Writer, loader, pins::PinLayout, udp_reset},
    error::{Error, Result},
    metrics::{self, Metrics},
    model::NodeContext,
    source::{self, SourceEvent, kube::KubeOptions, manifest, node},
    sys,
};

pub(super) fn run(args: &RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;

    let cgroup = match &args.cgroup {
        Some(path) => path.clone(),
        None => sys::cgroup2_mount().map_err(|e| Error::io("finding the cgroup v2 mount", e))?,
    };
    let layout = PinLayout::new(&args.bpffs);
    let maps = loader::load_and_attach(&layout, &cgroup, &args.capacity)?;
    let writer = Writer::adopt(maps).map_err(|e| Error::Environment(format!("reading pinned state: {e}")))?;
    let udp_reset = udp_reset::spawn(&layout, cgroup.clone())?;
    let node = NodeContext { name: node_name(args), zone: args.zone.clone(), addresses: node::current_addresses() };
    tracing::info!(node = %node.name, addresses = ?node.addresses, zone = ?node.zone, "node");

    let metrics = Arc::new(Metrics::new());
    let (events_tx, events_rx) = source::channel();
    runtime.block_on(async {
        if let Some(addr) = args.metrics_addr {
            metrics::serve(addr, Arc::clone(&metrics)).await?;
        }
        node::spawn(node.addresses.clone(), events_tx.clone());
        if args.source == "kube" {
            let options = KubeOptions {
                kubeconfig: args.kubeconfig.clone(),
                node_name: node.name.clone(),
                zone: args.zone.clone(),
            };
            source::kube::spawn(options, events_tx, &metrics).await
        } else {
            if args.zone.is_some() {
                events_tx.send(SourceEvent::NodeZone(args.zone.clone()));
            }
            let allocation = manifest::Allocation {
                service_cidr: args.service_cidr,
                node_ports: args.service_node_port_range.clone(),
            };
            manifest::spawn(Path::new(&args.source), allocation, events_tx).map(|_| ())
        }
    })?;

    let controller = Controller::new(writer, node);
    let control_metrics = Arc::clone(&metrics);
    std::thread::Builder::new()
        .name("controller".into())
        .spawn(move || controller::run_blocking(events_rx, controller, &control_metrics, &udp_reset))
        .map_err(|e| Error::io("starting the controller thread", e))?;

    runtime.block_on(wait_for_signal())?;
    tracing::info!("stopping; the pinned dataplane keeps serving (svc-agent cleanup removes it)");
    Ok(())
}

/// `--node-name`, `$NODE_NAME` (clap reads both), else the host name.
fn node_name(args: &RunArgs) -> String {
    args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
    })
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("installing SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("installing SIGINT handler", e))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
