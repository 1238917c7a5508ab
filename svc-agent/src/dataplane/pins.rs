//! Layout of the pin directory (`--bpffs`):
//!
//! ```text
//! <bpffs>/maps/<MAP NAME>     every map (svc_common::names)
//! <bpffs>/progs/<program>     the socket programs (names::SOCK_PROGRAMS)
//! <bpffs>/links/<program>     their cgroup attachments (bpf_link)
//! ```
//!
//! Pinned links keep the programs attached while no agent runs; removing a
//! link's pin (with no process holding it) detaches it.

use std::path::{Path, PathBuf};

/// Paths under one pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PinLayout {
    root: PathBuf,
}

impl PinLayout {
    /// Layout rooted at `root`.
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The pin directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of map pins.
    pub(crate) fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// Directory of program pins.
    pub(crate) fn programs_dir(&self) -> PathBuf {
        self.root.join("progs")
    }

    /// Directory of link pins.
    pub(crate) fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// A map's pin.
    pub(crate) fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// A program's pin.
    pub(crate) fn program(&self, name: &str) -> PathBuf {
        self.programs_dir().join(name)
    }

    /// A link's pin.
    pub(crate) fn link(&self, name: &str) -> PathBuf {
        self.links_dir().join(name)
    }

    /// Where a replacement link is pinned before it takes the old one's
    /// name (bpffs refuses names with a dot).
    pub(crate) fn staged_link(&self, name: &str) -> PathBuf {
        self.links_dir().join(format!("{name}_new"))
    }
}
