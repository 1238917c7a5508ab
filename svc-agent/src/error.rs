//! The agent's error type (one enum for the crate, as in bpfman).

use std::{io, path::PathBuf};

/// Everything that can go wrong in the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading or verifying the eBPF object failed.
    #[error("loading the eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),

    /// A program operation (load, attach, pin) failed.
    #[error("program {name}: {source}")]
    Program {
        /// Program name.
        name: String,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
    },

    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        /// Map name.
        name: String,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },

    /// A pinned map does not have the layout this agent writes.
    #[error(
        "pinned map {path} is incompatible with this agent ({detail}); \
         it was created by another version: run `svc-agent cleanup` first"
    )]
    IncompatiblePin {
        /// Pin path.
        path: PathBuf,
        /// What differs.
        detail: String,
    },

    /// Pinning a program or link failed.
    #[error("pinning the {what} of {name} at {path}: {source}")]
    Pin {
        /// Program name.
        name: String,
        /// "program" or "link".
        what: &'static str,
        /// Pin path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: aya::pin::PinError,
    },

    /// A program's attachment is not a pinnable link.
    #[error("the link of program {name}: {source}")]
    Link {
        /// Program name.
        name: String,
        /// Cause.
        #[source]
        source: aya::programs::links::LinkError,
    },

    /// The embedded eBPF object lacks something this agent needs (a build
    /// mismatch).
    #[error("the eBPF object has no {0}")]
    MissingInObject(String),

    /// The pinned state could not be read back.
    #[error("reading the pinned state: {0}")]
    Adopt(#[source] Box<dyn std::error::Error + Send + Sync>),

    /// Nothing is pinned where we looked.
    #[error("no dataplane pinned under {0} (is the agent running with this --bpffs?)")]
    NotPinned(PathBuf),

    /// A filesystem or syscall error with context.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: io::Error,
    },

    /// The environment is not usable (no cgroup v2, no bpffs, ...).
    #[error("{0}")]
    Environment(String),

    /// A source of desired state failed.
    #[error("source: {0}")]
    Source(String),
}

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }

    /// Wraps a map error with the map's name.
    pub fn map(name: &str, source: aya::maps::MapError) -> Self {
        Self::Map { name: name.to_owned(), source }
    }

    /// Wraps a program error with the program's name.
    pub fn program(name: &str, source: aya::programs::ProgramError) -> Self {
        Self::Program { name: name.to_owned(), source }
    }
}

/// Result alias for the agent.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
