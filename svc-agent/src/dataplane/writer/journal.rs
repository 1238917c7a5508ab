//! Undo information for one Service's update, and the rollback.

use super::{PortEntry, Writer, log_delete};
use crate::dataplane::family::{FrontendKey, FrontendValue};
use crate::{dataplane::table::Table, model::ServicePortKey};

/// What one Service's update wrote, to undo it if a later write fails.
#[derive(Debug, Default)]
pub(super) struct Journal {
    pub(super) new_sets: Vec<u32>,
    pub(super) new_ports: Vec<ServicePortKey>,
    pub(super) old_meta: Vec<(ServicePortKey, PortEntry)>,
    pub(super) frontends: Vec<(FrontendKey, Option<FrontendValue>)>,
}

impl<T: Table> Writer<T> {
    /// Undoes a failed update in reverse order.
    pub(super) fn rollback(&mut self, journal: Journal) {
        for (fk, old) in journal.frontends.into_iter().rev() {
            self.write_best_effort(&fk, old.as_ref());
        }
        for id in journal.new_sets {
            self.retire_set(id);
        }
        for (port, old) in journal.old_meta.into_iter().rev() {
            log_delete(self.table.put_meta(old.id, &old.meta));
            self.ports.insert(port, old);
        }
        for port in journal.new_ports {
            if let Some(entry) = self.ports.remove(&port) {
                log_delete(self.table.delete_meta(entry.id));
                self.svc_ids.release(entry.id);
            }
        }
    }
}
