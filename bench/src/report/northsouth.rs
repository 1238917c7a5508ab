//! The north-south section: an outside client through NodePorts, per
//! size, against kube-proxy's NodePort layouts; our TC programs' cost per
//! packet; the target line.

use std::fmt::Write as _;

use super::{
    datapath::{bulk_table, connect_cells, cost_rows},
    secs, thousands, us,
};
use crate::{
    addressing::Family,
    modes::Mode,
    protocol::Target,
    results::{NorthSouthResult, Results},
};

/// Target: our per-packet overhead at most this fraction of nftables'.
pub(super) const PER_PACKET_FRACTION: f64 = 1.0 / 3.0;

/// Packets through the node per timed connect(): the SYN in, the SYN/ACK
/// out (connect() returns on the SYN/ACK).
const PACKETS_PER_CONNECT: f64 = 2.0;

/// Our per-packet overhead over direct at p50 and nftables', at one size
/// and target (connect latency over direct / packets through the node).
pub(super) fn per_packet(ns: &NorthSouthResult, target: Target) -> Option<(f64, f64)> {
    let p50 = |mode: Mode| ns.cells.iter().find(|c| c.mode == mode && c.target == target).map(|c| c.connect.p50);
    let direct = p50(Mode::Direct)?;
    Some(((p50(Mode::Ours)? - direct) / PACKETS_PER_CONNECT, (p50(Mode::Nftables)? - direct) / PACKETS_PER_CONNECT))
}

/// The target rows: per-packet overhead against nftables' at every size
/// and target, and its growth from the smallest to the largest size.
pub(super) fn target_rows(o: &mut String, r: &Results) {
    let mut worst: Option<(f64, f64, u32, Target)> = None;
    for ns in &r.north_south {
        for t in [Target::Last, Target::Random] {
            if let Some((ours, nft)) = per_packet(ns, t)
                && nft > 0.0
                && worst.is_none_or(|w| ours / nft > w.0 / w.1)
            {
                worst = Some((ours, nft, ns.services, t));
            }
        }
    }
    if let Some((ours, nft, services, t)) = worst {
        let frac = ours / nft;
        let verdict = if frac <= PER_PACKET_FRACTION {
            "met".to_owned()
        } else {
            format!("**missed**: {frac:.2} of nftables' ({:.1}x the target)", frac / PER_PACKET_FRACTION)
        };
        let _ = writeln!(
            o,
            "| north-south per-packet overhead over direct <= 1/3 of nftables', every size | worst {} us vs nftables' {} \
             us ({} services, {}) | {verdict} |",
            us(ours),
            us(nft),
            thousands(f64::from(services)),
            t.label()
        );
    }
    let (Some(small), Some(large)) = (r.north_south.first(), r.north_south.last()) else { return };
    if small.services == large.services {
        return;
    }
    if let (Some((a, _)), Some((b, _))) = (per_packet(small, Target::Random), per_packet(large, Target::Random)) {
        let verdict =
            if b - a <= 100.0 { "met (within 0.1 us)".to_owned() } else { format!("**missed**: +{} us", us(b - a)) };
        let _ = writeln!(
            o,
            "| north-south per-packet overhead does not grow with Services | {} us at {} -> {} us at {} (random \
             Services) | {verdict} |",
            us(a),
            thousands(f64::from(small.services)),
            us(b),
            thousands(f64::from(large.services))
        );
    }
}

/// Mode names in this section: ours is the TC path here.
fn label(mode: Mode) -> &'static str {
    match mode {
        Mode::Ours => "ours (eBPF, TC)",
        other => other.label(),
    }
}

/// The method paragraph of the section.
fn method(o: &mut String, r: &Results) {
    let _ = writeln!(
        o,
        "An outside client connects to `nodeIP:nodePort`. Each mode gets three namespaces of its own: the client \
         (`198.18.0.1/24`), the node (`198.18.0.2/24` on its uplink `n0`, forwarding on, the pods' range \
         `10.64.0.0/12` routed to the pods namespace over a second veth pair) and the pods (every endpoint address \
         local there, as in the socket bench); no default route anywhere. Every Service is of type NodePort \
         (`externalTrafficPolicy: Cluster`, node port 20000 + i; the bulk Service too) with its endpoints behind the \
         node. Modes: direct (the client dials the endpoint, which the node routes: forwarding without a Service), \
         ours (the release agent in the node namespace with `--devices n0 --nodeport-addresses 198.18.0.2/32`: its TC \
         programs translate, no netfilter rule exists there), and kube-proxy's iptables (both backends) and nftables \
         layouts with their NodePort rules (iptables: `KUBE-NODEPORTS` `--dport` rules reached after every \
         `KUBE-SERVICES` rule, a `KUBE-EXT-*` chain that marks for masquerade; nftables: the `service-nodeports` \
         verdict map to an `external-*` chain). kube-proxy masquerades external NodePort traffic with \
         `externalTrafficPolicy: Cluster` even to a local endpoint; ours, like Cilium, SNATs only when the endpoint \
         is behind another node (docs/north-south.md), so here the pods see the client's address."
    );
    let _ = writeln!(
        o,
        "\n- Each mode is verified before timing: {} connects from outside to the first and the last Service's node \
         port must reach only their endpoints and every one of them (recorded by the pods' backends).",
        20 * r.config.datapath_endpoints
    );
    let _ = writeln!(
        o,
        "- Rounds, bursts, interleaving, warm-up and the connect sample are those of the socket datapath (Method), \
         the client in its own namespace. *Per packet*: a timed `connect()` puts two packets through the node (the \
         SYN in, the SYN/ACK out), so a mode's p50 overhead over direct divided by two is its mean cost per packet \
         of connection setup (for the netfilter modes the SYN carries the rule walk and the conntrack entry's \
         creation, the SYN/ACK a conntrack lookup)."
    );
    let _ = writeln!(
        o,
        "- Our TC programs' own cost: `kernel.bpf_stats_enabled=1` for this step only, {} connects (or one bulk \
         transfer) per scenario, run_time_ns / run_cnt deltas of the programs behind the uplink's link pins (one run \
         per packet on `n0`: a connect + close cycle is SYN, ACK, RST in and the SYN/ACK out).\n",
        r.config.bpf_stat_calls
    );
}

/// The whole section (nothing if the run measured no north-south size).
pub(super) fn section(o: &mut String, r: &Results) {
    if r.north_south.is_empty() {
        return;
    }
    let _ = writeln!(o, "## North-south: an outside client through NodePorts\n");
    method(o, r);
    for ns in &r.north_south {
        let _ = writeln!(o, "### {} Services x {} endpoints\n", thousands(f64::from(ns.services)), ns.endpoints);
        let setup: Vec<String> = ns
            .setup_secs
            .iter()
            .filter(|(m, _)| *m != Mode::Direct)
            .map(|(m, s)| format!("{} {} s", m.short(), secs(*s)))
            .collect();
        let _ = writeln!(o, "Programming, for the record: {}.\n", setup.join(", "));
        for target in [Target::Last, Target::Random] {
            let title = format!(
                "{}: connect latency from outside ({} NodePort Services)",
                target.label(),
                thousands(f64::from(ns.services))
            );
            connect_cells(o, &title, &ns.cells, Family::Inet, target, label);
            if let Some((ours, nft)) = per_packet(ns, target) {
                let _ = writeln!(
                    o,
                    "Per packet (p50 overhead over direct / 2): ours {} us, nftables {} us ({:.2} of nftables').\n",
                    us(ours),
                    us(nft),
                    if nft > 0.0 { ours / nft } else { f64::NAN }
                );
            }
        }
        for f in &ns.failures {
            let _ = writeln!(o, "**Failed:** {}\n", f.replace('\n', " "));
        }
        if !ns.conntrack_peak.is_empty() {
            let peaks: Vec<String> = ns.conntrack_peak.iter().map(|(m, n)| format!("{} {}", m.short(), n)).collect();
            let _ = writeln!(o, "Conntrack entries in the node namespace at the end: {}.\n", peaks.join(", "));
        }
    }
    let _ = writeln!(o, "### Bulk throughput through a node port\n");
    bulk_table(o, r.north_south.iter().map(|ns| (ns.services, ns.bulk.as_slice())), label);
    let _ = writeln!(o, "\n### Our TC programs' cost per packet\n");
    let _ = writeln!(o, "| Services | program | scenario | runs (packets) | ns per packet |\n|---:|---|---|---:|---:|");
    for ns in &r.north_south {
        cost_rows(o, ns.services, &ns.tc);
    }
    let _ = writeln!(o);
}
