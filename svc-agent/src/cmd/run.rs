//! `svc-agent run`: load and attach, adopt pinned state, then follow the
//! source until SIGINT/SIGTERM. Stopping leaves the pinned dataplane
//! serving (upgrades and crashes must not interrupt traffic); `cleanup`
//! is the explicit way to remove it.

use std::{path::Path, sync::Arc, time::Duration};

use crate::{
    cli::RunArgs,
    controller::{self, Controller},
    dataplane::{Writer, devices, exempt, flows, loader, pins::PinLayout, self_check, source_ranges, udp_reset},
    error::{Error, Result},
    health::Health,
    health_check,
    metrics::{self, Metrics},
    model::NodeContext,
    source::{self, SourceEvent, kube::KubeOptions, manifest, node},
};

pub(super) fn run(args: &RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;

    let cgroup = super::cgroup_or_mount(args.cgroup.as_deref())?;
    let layout = PinLayout::new(&args.bpffs);
    let devices = devices::resolve(&args.devices)?;
    let maps = loader::load_and_attach(&layout, &cgroup, &devices, &(&args.capacity).into())?;
    let mut writer = Writer::adopt(maps).map_err(|e| Error::Adopt(Box::new(e)))?;
    writer.set_reverse_linger(Duration::from_secs(args.reverse_linger));
    // Loading parsed the object and the kernel's BTF; none of it is kept.
    crate::sys::trim_heap();
    let node = NodeContext {
        name: node_name(args),
        zone: args.zone.clone(),
        addresses: node::current_addresses(&args.nodeport_addresses),
    };
    tracing::info!(
        node = %node.name,
        addresses = ?node.addresses,
        nodeport_addresses = %args.nodeport_addresses,
        zone = ?node.zone,
        "node"
    );

    let metrics = Arc::new(Metrics::new());
    let udp_reset = udp_reset::spawn(&layout, cgroup.clone(), Arc::clone(&metrics))?;
    let source_ranges = source_ranges::SourceRangeTable::open(&layout)?;
    let kubelet_root = args.kubelet_cgroup_root.clone().unwrap_or_else(|| cgroup.clone());
    let exempt = exempt::spawn(&layout, kubelet_root, Arc::clone(&metrics))?;
    flows::spawn_sweeper(&layout, Duration::from_secs(args.flow_sweep_interval), Arc::clone(&metrics))?;
    if args.self_check_interval > 0 {
        self_check::spawn(
            layout.clone(),
            cgroup.clone(),
            Duration::from_secs(args.self_check_interval),
            Arc::clone(&metrics),
        )?;
    }
    let health = Arc::new(Health::new(Duration::from_secs(args.healthz_timeout)));
    let (events_tx, events_rx) = source::channel(Arc::clone(&health));
    let (health_checks_tx, health_checks_rx) = tokio::sync::watch::channel(health_check::HealthChecks::new());
    runtime.block_on(async {
        health_check::spawn(health_checks_rx);
        if let Some(addr) = args.metrics_addr {
            metrics::serve(addr, Arc::clone(&metrics), Arc::clone(&health)).await?;
        }
        node::spawn(args.nodeport_addresses.clone(), node.addresses.clone(), events_tx.clone());
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
                service_cidr: args.service_cidr.clone(),
                node_ports: args.service_node_port_range.clone(),
                previous: previous_allocations(&writer),
            };
            manifest::spawn(Path::new(&args.source), allocation, events_tx).map(|_| ())
        }
    })?;

    let controller = Controller::new(writer, node);
    let control_metrics = Arc::clone(&metrics);
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("controller".into())
        .spawn(move || {
            // Dropped when the loop ends, also by a panic (unwinding).
            let _stopped = stopped_tx;
            let outputs = controller::Outputs {
                udp_reset,
                health_checks: health_checks_tx,
                source_ranges: Some(source_ranges),
                exempt,
            };
            controller::run_blocking(events_rx, controller, &control_metrics, &health, outputs);
        })
        .map_err(|e| Error::io("starting the controller thread", e))?;

    runtime.block_on(until_stopped(wait_for_signal(), stopped_rx))?;
    tracing::info!("stopping; the pinned dataplane keeps serving (svc-agent cleanup removes it)");
    Ok(())
}

/// Waits for a signal, or for the control loop to end, which it only does
/// by panicking: the agent then exits with an error, so the kubelet
/// restarts it (the pinned dataplane keeps serving meanwhile) instead of
/// leaving a pod that looks alive and follows nothing.
async fn until_stopped(
    signal: impl Future<Output = Result<()>>,
    controller_stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    tokio::select! {
        result = signal => result,
        _ = controller_stopped => Err(Error::Environment(
            "the control loop stopped (it panicked; see above); exiting so that the agent is restarted".into(),
        )),
    }
}

/// What the pinned dataplane holds, so that a restarted manifest source
/// keeps every Service's cluster IP and node ports.
fn previous_allocations<T: crate::dataplane::Table>(writer: &Writer<T>) -> manifest::ipam::Sticky {
    manifest::ipam::Sticky {
        cluster_ips: writer
            .programmed_cluster_ips()
            .into_iter()
            .map(|(key, ip)| ((key, crate::model::IpFamily::of(ip)), ip))
            .collect(),
        node_ports: writer.programmed_node_ports().into_iter().map(|(key, name, port)| ((key, name), port)).collect(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_control_loop_stops_the_agent() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let loop_thread = std::thread::spawn(move || {
            let _stopped = tx;
            panic!("the control loop panics");
        });
        let never = std::future::pending::<Result<()>>();
        let result = runtime.block_on(until_stopped(never, rx));
        assert!(loop_thread.join().is_err());
        assert!(matches!(result, Err(Error::Environment(ref m)) if m.contains("control loop stopped")), "{result:?}");
    }

    #[test]
    fn a_signal_stops_the_agent_cleanly() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let result = runtime.block_on(until_stopped(async { Ok(()) }, rx));
        assert!(result.is_ok());
    }
}
