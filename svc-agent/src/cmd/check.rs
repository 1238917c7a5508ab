//! `svc-agent status --check`: the self-check ([`crate::dataplane::self_check`])
//! once, printed; non-zero exit with the reasons on any problem.

use std::io::Write as _;

use serde::Serialize;

use crate::{
    cli::{Output, StatusArgs},
    dataplane::{pins::PinLayout, self_check},
    error::{Error, Result},
};

#[derive(Debug, Serialize)]
struct CheckOutput {
    ok: bool,
    cgroup: String,
    problems: Vec<ProblemRow>,
}

#[derive(Debug, Serialize)]
struct ProblemRow {
    reason: &'static str,
    detail: String,
}

pub(super) fn check(args: &StatusArgs) -> Result<()> {
    let layout = PinLayout::new(&args.bpffs);
    let cgroup = super::cgroup_or_mount(args.cgroup.as_deref())?;
    let problems = self_check::check(&layout, &cgroup, Some(std::path::Path::new(self_check::SELF_EXE)));
    let out = CheckOutput {
        ok: problems.is_empty(),
        cgroup: cgroup.display().to_string(),
        problems: problems.iter().map(|p| ProblemRow { reason: p.label(), detail: p.to_string() }).collect(),
    };
    let text = match args.output {
        Output::Json => serde_json::to_string_pretty(&out).map_err(|e| Error::Environment(e.to_string()))? + "\n",
        Output::Table if out.ok => format!(
            "ok: {} programs pinned and attached at {}, a probe connect from a child cgroup was translated\n",
            svc_common::names::SOCK_PROGRAMS.len(),
            out.cgroup
        ),
        Output::Table => out.problems.iter().map(|p| format!("FAIL [{}] {}\n", p.reason, p.detail)).collect(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(|e| Error::io("writing", e))?;
    if out.ok {
        Ok(())
    } else {
        Err(Error::Environment(format!("self-check failed: {} problem(s)", out.problems.len())))
    }
}
