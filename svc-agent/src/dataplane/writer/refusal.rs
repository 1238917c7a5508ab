//! Why a Service was not (fully) programmed.

use std::fmt;

use crate::{dataplane::table::TableError, model::ServiceKey};

/// One frontend address that another Service already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// `TCP 10.96.0.10:80`.
    pub frontend: String,
    /// The Service that holds it.
    pub owner: ServiceKey,
}

/// Why a Service was refused. The Service keeps its previous state and is
/// retried after later changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Some frontends belong to other Services (the rest is programmed).
    #[error("{}", conflicts(.0))]
    Conflict(Vec<Conflict>),
    /// A map (or the agent's id space) has no room for the update.
    #[error("{map} is full ({used} of {capacity} {unit} used, up to {needed} more needed during the update)")]
    Full {
        /// Map name, or the id space.
        map: &'static str,
        /// What one entry is.
        unit: &'static str,
        /// Entries in use.
        used: u64,
        /// Capacity.
        capacity: u64,
        /// Entries the update needs while old and new coexist.
        needed: u64,
    },
    /// The kernel refused a write.
    #[error("{0}")]
    Kernel(#[from] TableError),
}

impl Refusal {
    /// Every value of [`Self::label`].
    pub(crate) const LABELS: [&'static str; 3] = ["conflict", "full", "kernel"];

    /// The `reason` label of the refused-Services metric.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Conflict(_) => "conflict",
            Self::Full { .. } => "full",
            Self::Kernel(e) if e.full => "full",
            Self::Kernel(_) => "kernel",
        }
    }

    /// Whether a map had no room (room that retired sets may free).
    pub(crate) fn is_full(&self) -> bool {
        self.label() == "full"
    }
}

fn conflicts(list: &[Conflict]) -> String {
    let parts: Vec<String> = list.iter().map(|c| format!("{} is already used by {}", c.frontend, c.owner)).collect();
    parts.join("; ")
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is already used by {}", self.frontend, self.owner)
    }
}
