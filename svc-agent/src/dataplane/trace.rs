//! The trace switch (`SVC_TRACE_ON[0]`): the pid of the running
//! `svc-agent trace`, or 0, in which case the programs write no events.
//! A tracer that dies without clearing it (SIGKILL) would leave every
//! translation paying for an event nobody reads, so the agent's
//! housekeeping clears a switch whose process is gone ([`clear_stale`]).

use aya::maps::{Array, MapData};
use svc_common::names;

use super::{maps::open_pinned_map, pins::PinLayout};
use crate::error::{Error, Result};

/// The pinned switch.
pub(crate) struct TraceSwitch(Array<MapData, u32>);

impl TraceSwitch {
    pub(crate) fn open(layout: &PinLayout) -> Result<Self> {
        let map = open_pinned_map(layout, names::TRACE_ON)?;
        Ok(Self(Array::try_from(map).map_err(|e| Error::map(names::TRACE_ON, e))?))
    }

    /// The tracer's pid, or 0.
    pub(crate) fn tracer(&self) -> Result<u32> {
        self.0.get(&0, 0).map_err(|e| Error::map(names::TRACE_ON, e))
    }

    /// Sets the tracer (0: off).
    pub(crate) fn set(&mut self, pid: u32) -> Result<()> {
        self.0.set(0, pid, 0).map_err(|e| Error::map(names::TRACE_ON, e))
    }
}

/// Whether process `pid` exists (in this PID namespace: the DaemonSet runs
/// with `hostPID`, so a `kubectl exec`'d tracer is visible).
pub(crate) fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Turns the trace off if its tracer is gone; returns whether it did.
pub(crate) fn clear_stale(switch: &mut TraceSwitch) -> bool {
    match switch.tracer() {
        Ok(pid) if pid != 0 && !alive(pid) => {
            let cleared = switch.set(0).is_ok();
            if cleared {
                tracing::info!(pid, "trace switched off: its tracer (pid {pid}) is gone");
            }
            cleared
        }
        _ => false,
    }
}
