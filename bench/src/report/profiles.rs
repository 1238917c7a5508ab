//! Profiles taken for missed targets.

use std::fmt::Write as _;

use crate::results::{Profile, Results};

pub(super) fn profiles(o: &mut String, r: &Results) {
    let all: Vec<&Profile> = r.datapath.iter().flat_map(|d| d.profiles.iter()).chain(r.profiles.iter()).collect();
    let _ = writeln!(o, "## Where the time goes (profiles of missed targets)\n");
    if all.is_empty() {
        let _ =
            writeln!(o, "No profile was taken: every target with a time budget was met, or `perf` was not usable.\n");
        return;
    }
    for p in all {
        let _ = writeln!(o, "### {}\n", p.title);
        let _ = writeln!(o, "Method: {}.\n", p.method);
        if let Some(n) = &p.note {
            let _ = writeln!(o, "{n}\n");
        }
        let dsos: Vec<String> = p.by_dso.iter().take(8).map(|(pct, d)| format!("{d} {pct:.1}%")).collect();
        let _ = writeln!(o, "By shared object: {}.\n", dsos.join(", "));
        if let Some(reference) = &p.delta_vs {
            let _ =
                writeln!(o, "Symbols whose share of samples grew most against \"{reference}\" (percentage points):\n");
            let _ = writeln!(o, "| +pp | symbol |\n|---:|---|");
            for (d, sym) in &p.delta {
                let _ = writeln!(o, "| {d:.2} | `{}` |", sym.replace('|', "\\|"));
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(o, "Top symbols:\n");
        let _ = writeln!(o, "| % samples | object | symbol |\n|---:|---|---|");
        for (pct, dso, sym) in p.top.iter().take(20) {
            let sym = if sym.len() > 110 {
                format!("{}...", &sym[..sym.char_indices().nth(107).map_or(sym.len(), |(i, _)| i)])
            } else {
                sym.clone()
            };
            let _ = writeln!(o, "| {pct:.2} | {dso} | `{}` |", sym.replace('|', "\\|"));
        }
        let _ = writeln!(o);
    }
}
