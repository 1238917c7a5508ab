//! Control-plane sections: cold programming, single changes, memory.

use std::fmt::Write as _;

use super::{mib, run_median, secs, thousands};
use crate::{
    modes::Loader,
    results::{ColdResult, ColdSystem, Results},
    stats::{median, percentile},
};

fn cold_cell(c: &ColdResult) -> String {
    if let Some(why) = &c.skipped {
        return format!("skipped: {why}");
    }
    if c.runs.iter().any(Option::is_none) {
        return format!("**> {} s** (killed)", c.timeout_secs);
    }
    let runs: Vec<String> = c.runs.iter().flatten().map(|s| secs(*s)).collect();
    match run_median(c) {
        Some(m) if runs.len() > 1 => format!("{} (runs: {})", secs(m), runs.join(", ")),
        Some(m) => secs(m),
        None => "n/a".into(),
    }
}

pub(super) fn cold(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Control plane: cold programming\n");
    let _ = writeln!(o, "Seconds from start to programmed (median; individual runs in brackets).\n");
    let _ = writeln!(
        o,
        "| Services x endpoints | ours: agent, manifest source | iptables-legacy-restore | iptables-nft-restore | nft -f |\n|---|---:|---:|---:|---:|"
    );
    let sizes: Vec<(u32, u32)> = {
        let mut v: Vec<(u32, u32)> = r.control.cold.iter().map(|c| (c.services, c.endpoints)).collect();
        v.dedup();
        v
    };
    for (s, e) in &sizes {
        let get = |sys: ColdSystem| {
            r.control.cold.iter().find(|c| c.system == sys && c.services == *s).map_or("-".into(), cold_cell)
        };
        let _ = writeln!(
            o,
            "| {} x {e} | {} | {} | {} | {} |",
            thousands(f64::from(*s)),
            get(ColdSystem::OursManifest),
            get(ColdSystem::Baseline(Loader::IptablesLegacy)),
            get(ColdSystem::Baseline(Loader::IptablesNft)),
            get(ColdSystem::Baseline(Loader::Nft))
        );
    }
    let mut inputs: Vec<String> = Vec::new();
    for c in r.control.cold.iter().filter(|c| c.input_bytes > 0) {
        let line = format!(
            "{} at {} Services {:.1} MiB",
            short(c.system),
            thousands(f64::from(c.services)),
            c.input_bytes as f64 / 1_048_576.0
        );
        if !inputs.contains(&line) {
            inputs.push(line);
        }
    }
    let _ = writeln!(o, "\nInput sizes: {}.\n", inputs.join("; "));
    let _ = writeln!(o, "Where the agent's time goes (median of runs; phases from its log lines, timed on arrival):\n");
    let _ = writeln!(
        o,
        "| Services x endpoints | total s | load + attach programs s | read + parse manifests s | apply (model + map writes, agent's `apply_us`) s | agent flags |\n|---|---:|---:|---:|---:|---|"
    );
    for c in r.control.cold.iter().filter(|c| c.system == ColdSystem::OursManifest) {
        let m = |f: &dyn Fn(&crate::results::AgentRun) -> Option<f64>| {
            let v: Vec<f64> = c.agent.iter().filter_map(f).collect();
            if v.is_empty() { "n/a".into() } else { secs(median(v.into_iter())) }
        };
        let _ = writeln!(
            o,
            "| {} x {} | {} | {} | {} | {} | {} |",
            thousands(f64::from(c.services)),
            c.endpoints,
            m(&|a| Some(a.total_secs)),
            m(&|a| a.attach_secs),
            m(&|a| a.source_secs.zip(a.attach_secs).map(|(s, a)| s - a)),
            m(&|a| a.apply_secs),
            if c.agent_flags.is_empty() { "defaults".into() } else { format!("`{}`", c.agent_flags.join(" ")) }
        );
    }
    let _ = writeln!(o);
}

fn short(s: ColdSystem) -> &'static str {
    match s {
        ColdSystem::OursManifest => "manifests",
        ColdSystem::Baseline(Loader::Nft) => "nft ruleset",
        ColdSystem::Baseline(_) => "iptables ruleset",
    }
}

pub(super) fn churn(o: &mut String, r: &Results) {
    if r.control.churn.is_empty() {
        return;
    }
    let _ = writeln!(o, "## Control plane: single-change latency\n");
    let _ = writeln!(
        o,
        "One endpoint added per change (a new EndpointSlice file), one change at a time, manifest source. Latency: from the rename into the watched directory to the Service's frontend in SVC_FRONTENDS showing the new backend count.\n"
    );
    let _ = writeln!(
        o,
        "| Services x endpoints | changes | | p50 ms | p90 ms | p99 ms | max ms | not visible within 10 s |\n|---|---:|---|---:|---:|---:|---:|---:|"
    );
    let row = |v: &[f64]| {
        format!(
            "{:.2} | {:.2} | {:.2} | {:.2}",
            percentile(v, 50.0),
            percentile(v, 90.0),
            percentile(v, 99.0),
            v.iter().copied().fold(0.0, f64::max)
        )
    };
    for c in &r.control.churn {
        let size = format!("{} x {}", thousands(f64::from(c.services)), c.endpoints);
        let _ = writeln!(o, "| {size} | {} | rename -> visible | {} | {} |", c.changes, row(&c.latency_ms), c.failures);
        if !c.apply_ms.is_empty() {
            let _ = writeln!(o, "| {size} | | of which the agent's apply (`apply_us`) | {} | |", row(&c.apply_ms));
        }
    }
    for c in r.control.churn.iter().filter(|c| c.rss_before_kib > 0) {
        let _ = writeln!(
            o,
            "\nAt {} Services the agent used {:.2} s of CPU per change on average ({:.1} s over {} changes), and its RSS went from {} MiB before the first change to {} MiB after the last.",
            thousands(f64::from(c.services)),
            c.agent_cpu_secs / f64::from(c.changes.max(1)),
            c.agent_cpu_secs,
            c.changes,
            mib(c.rss_before_kib),
            mib(c.rss_after_kib)
        );
    }
    if let Some(d) = r.control.churn.iter().find_map(|c| c.debounce_ms) {
        let _ = writeln!(
            o,
            "\nThe bench renames each change into the directory, which the manifest source re-reads at once (other file events, such as writes in progress and removals, wait `DEBOUNCE`, {d} ms, svc-agent/src/source/manifest/watch.rs). A re-read parses only the changed files and merges only their objects; an EndpointSlice change does not revisit the other Services. The rest is the agent's batch, which handles only the changed objects. A batch asks for an RCU grace period and does not wait for it (a helper thread does, docs/maps.md); `apply_us` includes a wait only where a batch writes a key again before the grace period that followed its last write has ended (the first change after the cold sync, whose Service the cold batch wrote)."
        );
    }
    let _ = writeln!(o);
}

pub(super) fn memory(o: &mut String, r: &Results) {
    let _ = writeln!(o, "## Control plane: agent memory and BPF map memory\n");
    let _ = writeln!(
        o,
        "| Services x endpoints | agent peak RSS MiB | RSS after attach / after parse / in sync MiB | BPF maps total MiB | largest maps |\n|---|---:|---|---:|---|"
    );
    for c in r.control.cold.iter().filter(|c| c.system == ColdSystem::OursManifest) {
        let Some(a) = c.agent.iter().max_by_key(|a| a.rss_peak_kib) else { continue };
        // The peak is at least every RSS reading of the run.
        let peak = a.rss_at_phases_kib.iter().map(|(_, k)| *k).fold(a.rss_peak_kib, u64::max);
        let phases: Vec<String> = a.rss_at_phases_kib.iter().map(|(_, k)| mib(*k)).collect();
        let total: u64 = a.maps.iter().map(|m| m.memlock_bytes).sum();
        let mut maps = a.maps.clone();
        maps.sort_by_key(|m| std::cmp::Reverse(m.memlock_bytes));
        let largest: Vec<String> = maps
            .iter()
            .take(4)
            .map(|m| {
                format!(
                    "{} {:.1} (max {})",
                    m.name,
                    m.memlock_bytes as f64 / 1048576.0,
                    thousands(f64::from(m.max_entries))
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "| {} x {} | {} | {} | {:.1} | {} |",
            thousands(f64::from(c.services)),
            c.endpoints,
            mib(peak),
            phases.join(" / "),
            total as f64 / 1048576.0,
            largest.join(", ")
        );
    }
    let _ = writeln!(
        o,
        "\nThe two LRU maps (SVC_REVNAT_SK, SVC_AFFINITY) are preallocated by the kernel at their capacity whatever the number of Services; the hash maps grow with their entries (`BPF_F_NO_PREALLOC`) plus a bucket array sized by capacity.\n"
    );
}

/// The shared-backends shape: many Services over one set of endpoints.
pub(super) fn shared(o: &mut String, r: &Results) {
    let Some(s) = &r.control.shared else { return };
    let _ = writeln!(o, "## Control plane: shared backends\n");
    let _ = writeln!(
        o,
        "{} Services over one set of {} endpoints (every Service its own EndpointSlice listing the same \
         endpoints, as Kubernetes writes them for Services selecting one Deployment; {:.1} MiB of manifests), \
         manifest source, agent flags: {}. Each Service gets its own backend set in the maps (sets are per \
         Service), so the maps hold {} backend slots for {} distinct endpoints; the endpoints' reverse owners \
         are {} entries (the first Service's ClusterIP owns them: the other Services' connected sockets keep \
         per-socket storage, docs/maps.md).\n",
        thousands(f64::from(s.services)),
        s.endpoints,
        s.input_bytes as f64 / 1048576.0,
        if s.agent_flags.is_empty() { "defaults".to_owned() } else { format!("`{}`", s.agent_flags.join(" ")) },
        thousands(f64::from(s.services) * f64::from(s.endpoints)),
        s.endpoints,
        s.endpoints,
    );
    let total: u64 = s.run.maps.iter().map(|m| m.memlock_bytes).sum();
    let peak = s.run.rss_at_phases_kib.iter().map(|(_, k)| *k).fold(s.run.rss_peak_kib, u64::max);
    let _ = writeln!(
        o,
        "| start to in sync s | of which apply s | agent peak RSS MiB | BPF maps total MiB |\n|---:|---:|---:|---:|\n| {:.3} | {} | {} | {:.1} |\n",
        s.run.total_secs,
        s.run.apply_secs.map_or("-".into(), |a| format!("{a:.3}")),
        mib(peak),
        total as f64 / 1048576.0,
    );
    let c = &s.churn;
    let row =
        |v: &[f64]| format!("{:.2} | {:.2} | {:.2}", percentile(v, 50.0), percentile(v, 90.0), percentile(v, 99.0));
    let _ = writeln!(
        o,
        "One endpoint added to one of those Services per change ({} changes, one at a time, as in the single-change \
         section): the cost must be that of the changed Service, not of the {} Services sharing its endpoints.\n",
        c.changes,
        thousands(f64::from(s.services)),
    );
    let _ = writeln!(o, "| | p50 ms | p90 ms | p99 ms |\n|---|---:|---:|---:|");
    let _ = writeln!(o, "| rename -> visible | {} |", row(&c.latency_ms));
    if !c.apply_ms.is_empty() {
        let _ = writeln!(o, "| of which the agent's apply (`apply_us`) | {} |", row(&c.apply_ms));
    }
    let _ = writeln!(
        o,
        "\nAgent CPU per change {:.3} s on average; not visible within 10 s: {}. Compare the single-change section's \
         row at the same number of Services (10 endpoints each, none shared).\n",
        c.agent_cpu_secs / f64::from(c.changes.max(1)),
        c.failures
    );
}
