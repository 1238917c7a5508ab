//! Datapath sections: connect latency per size and target, bulk
//! throughput, in-kernel program cost.

use std::fmt::Write as _;

use super::{secs, thousands, us};
use crate::{
    addressing::Family,
    modes::Mode,
    protocol::Target,
    results::{Cell, DatapathResult, Results},
};

pub(super) fn datapath(o: &mut String, dp: &DatapathResult) {
    let _ = writeln!(
        o,
        "## Datapath: {} Services x {} endpoints{}\n",
        thousands(f64::from(dp.services)),
        dp.endpoints,
        ct_suffix(dp)
    );
    if dp.conntrack {
        let _ = writeln!(
            o,
            "Conntrack active in every mode's namespace (a table whose rules match on `ct state`, as CNI and \
             NetworkPolicy rules switch it on on a real node): direct and ours pay for tracking each connection \
             too, as they would there. The other datapath sections are conntrack-free (only the netfilter modes \
             track); the Targets table's headline row is the conntrack-free one.\n"
        );
    }
    let setup: Vec<String> = dp
        .setup_secs
        .iter()
        .filter(|(m, _)| *m != Mode::Direct)
        .map(|(m, s)| format!("{} {} s", m.short(), secs(*s)))
        .collect();
    let _ = writeln!(
        o,
        "Programming this size, for the record (agent: start to in sync; iptables loaded without `--noflush` into the empty namespace): {}.\n",
        setup.join(", ")
    );
    let families = if dp.families.is_empty() { vec![Family::Inet] } else { dp.families.clone() };
    for family in families {
        if family != Family::Inet {
            let _ = writeln!(o, "### Client sockets: {}\n", family.label());
            let _ = writeln!(o, "{}\n", family_note(family));
        }
        for target in Target::TCP.into_iter().chain(Target::UDP) {
            connect_table(o, dp, family, target);
        }
    }
    if !dp.conntrack_peak.is_empty() {
        let peaks: Vec<String> = dp.conntrack_peak.iter().map(|(m, n)| format!("{} {}", m.short(), n)).collect();
        let which = if dp.conntrack { "every mode" } else { "netfilter modes" };
        let _ = writeln!(o, "Peak conntrack entries after a round ({which}): {}.\n", peaks.join(", "));
    }
}

/// `, conntrack active` for a size measured so.
fn ct_suffix(dp: &DatapathResult) -> &'static str {
    if dp.conntrack { ", conntrack active" } else { "" }
}

/// What the cells of a non-IPv4 client family measure.
fn family_note(family: Family) -> &'static str {
    match family {
        Family::Inet => "",
        Family::Mapped => {
            "The same IPv4 Services, dialled from AF_INET6 sockets as `::ffff:<VIP>` (Java's default): ours \
             through connect6 and the IPv4 maps; netfilter sees IPv4 packets (its `ip` tables); direct dials \
             `::ffff:<backend>`."
        }
        Family::Ipv6 => {
            "The IPv6 twin of every Service (`fd00::a60:0/108`, endpoints `fd00::a40:0/108`; the Services are \
             dual-stack for ours and nftables at this size): ours through connect6 and the `*6` maps; kube-proxy's \
             nftables layout in its `ip6 kube-proxy` table, as a dual-stack kube-proxy programs it; the iptables \
             modes are not set up for IPv6 (no ip6tables layout)."
        }
    }
}

fn connect_table(o: &mut String, dp: &DatapathResult, family: Family, target: Target) {
    let suffix = if family == Family::Inet { String::new() } else { format!(", {}", family.label()) };
    let what = match target {
        Target::Last | Target::Random => "connect latency",
        Target::Datagram => "sendto + recvfrom round trip over one unconnected socket (per row: round trips)",
        Target::Query => "connect latency of a DNS-like query (socket, connect, send, recv, close; per row: queries)",
    };
    let title = format!("{}: {what} ({}{}{suffix})", target.label(), thousands(f64::from(dp.services)), ct_suffix(dp));
    connect_cells(o, &title, &dp.cells, family, target, Mode::label);
}

/// One target's connect-latency table of `cells` (and ours against each
/// baseline), under the heading `title`; the north-south section's too.
/// `label` names the modes.
pub(super) fn connect_cells(
    o: &mut String,
    title: &str,
    cells: &[Cell],
    family: Family,
    target: Target,
    label: fn(Mode) -> &'static str,
) {
    let find =
        |mode: Mode, target: Target| cells.iter().find(|c| c.mode == mode && c.family == family && c.target == target);
    {
        let Some(direct) = find(Mode::Direct, target) else { return };
        let _ = writeln!(o, "### {title}\n");
        let _ = writeln!(
            o,
            "| mode | p50 us | p90 us | p99 us | p50 over direct us | connections/s | client thread CPU us/conn | client+backend process CPU us/conn | samples | connect > 10 ms |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for mode in Mode::ALL {
            let Some(c) = find(mode, target) else { continue };
            let over = if mode == Mode::Direct { "-".into() } else { us(c.connect.p50 - direct.connect.p50) };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                label(mode),
                us(c.connect.p50),
                us(c.connect.p90),
                us(c.connect.p99),
                over,
                thousands(c.conns_per_sec),
                us(c.client_cpu_ns_per_conn),
                us(c.process_cpu_ns_per_conn),
                thousands(c.samples as f64),
                c.slow
            );
        }
        if let Some(ours) = find(Mode::Ours, target) {
            let ours_over = ours.connect.p50 - direct.connect.p50;
            let rows: Vec<&Cell> = Mode::BASELINES.iter().filter_map(|m| find(*m, target)).collect();
            if !rows.is_empty() {
                let _ = writeln!(o, "\nOurs against each baseline (p50):\n");
                let _ = writeln!(
                    o,
                    "| baseline | its overhead over direct us | ours us | ours / baseline overhead | baseline latency / ours | baseline CPU / ours (process, per conn) |"
                );
                let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
                for b in rows {
                    let b_over = b.connect.p50 - direct.connect.p50;
                    let frac = if b_over > 0.0 { format!("{:.3}", ours_over / b_over) } else { "n/a".into() };
                    let _ = writeln!(
                        o,
                        "| {} | {} | {} | {} | {:.2}x | {:.2}x |",
                        label(b.mode),
                        us(b_over),
                        us(ours_over),
                        frac,
                        b.connect.p50 / ours.connect.p50,
                        b.process_cpu_ns_per_conn / ours.process_cpu_ns_per_conn
                    );
                }
            }
        }
        let _ = writeln!(o);
    }
}

pub(super) fn bulk(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Datapath: bulk throughput of one long-lived connection\n");
    let _ = writeln!(
        o,
        "The claim under test: after `connect()` our dataplane costs nothing per packet. netfilter modes still pass every packet through conntrack.\n"
    );
    bulk_table(
        o,
        r.datapath.iter().filter(|dp| !dp.conntrack).map(|dp| (dp.services, dp.bulk.as_slice())),
        Mode::label,
    );
    let _ = writeln!(o);
}

/// The bulk table: a row per (size, mode), throughput against direct's at
/// that size (the north-south section's too); `label` names the modes.
pub(super) fn bulk_table<'a>(
    o: &mut String,
    sizes: impl Iterator<Item = (u32, &'a [crate::results::BulkCell])>,
    label: fn(Mode) -> &'static str,
) {
    let _ = writeln!(o, "| Services | mode | Gbit/s | vs direct | client CPU s/GiB |\n|---:|---|---:|---:|---:|");
    for (services, cells) in sizes {
        let direct = cells.iter().find(|b| b.mode == Mode::Direct).map_or(0.0, |b| b.gbit_per_sec);
        for b in cells {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2} | {:.3} | {:.3} |",
                thousands(f64::from(services)),
                label(b.mode),
                b.gbit_per_sec,
                if direct > 0.0 { b.gbit_per_sec / direct } else { 0.0 },
                b.client_cpu_secs_per_gib
            );
        }
    }
}

pub(super) fn bpf(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## In-kernel cost of our programs\n");
    let _ = writeln!(o, "| Services | program | scenario | calls | ns per call |\n|---:|---|---|---:|---:|");
    let mut programs = None;
    for dp in &r.datapath {
        let Some(b) = &dp.bpf else { continue };
        cost_rows(o, dp.services, &b.costs);
        programs = Some(&b.programs);
    }
    if let Some(programs) = programs {
        let _ = writeln!(o, "\nVerifier statistics (from the kernel's program info):\n");
        let _ =
            writeln!(o, "| program | verified instructions | translated bytes | JITed bytes |\n|---|---:|---:|---:|");
        for p in programs {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                p.name,
                p.verified_insns.map_or("n/a".into(), |v| v.to_string()),
                p.xlated_bytes.map_or("n/a".into(), |v| v.to_string()),
                p.jited_bytes
            );
        }
    }
    let _ = writeln!(o);
}

/// One row per program and scenario: Services, program, scenario, calls,
/// ns per call (the north-south section's table too).
pub(super) fn cost_rows(o: &mut String, services: u32, costs: &[crate::results::ProgCost]) {
    for c in costs {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} |",
            thousands(f64::from(services)),
            c.program,
            c.scenario,
            thousands(c.calls as f64),
            c.ns_per_call
        );
    }
}
