//! This node's local addresses, polled so that NodePort frontends follow
//! address changes at run time (an address added to or removed from an
//! interface shows up within one interval).

use std::{net::Ipv4Addr, time::Duration};

use super::{EventSender, SourceEvent};
use crate::sys;

/// How often the interface addresses are re-read. getifaddrs costs a few
/// microseconds; a second is well inside what NodePort users notice.
const POLL: Duration = Duration::from_secs(1);

/// Current addresses (logged, not fatal, on error).
pub fn current_addresses() -> Vec<Ipv4Addr> {
    sys::local_ipv4_addresses().unwrap_or_else(|e| {
        tracing::warn!("cannot list local addresses, NodePort frontends limited to 127.0.0.1: {e}");
        Vec::new()
    })
}

/// Polls the addresses and reports changes until the controller is gone.
pub fn spawn(initial: Vec<Ipv4Addr>, events: EventSender) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = initial;
        loop {
            tokio::time::sleep(POLL).await;
            let now = current_addresses();
            if now != last {
                tracing::info!(old = ?last, new = ?now, "node addresses changed");
                if !events.send(SourceEvent::NodeAddresses(now.clone())) {
                    return;
                }
                last = now;
            }
            if events.is_closed() {
                return;
            }
        }
    })
}
