//! `svc-agent cleanup`: detach the programs and remove every pin.

use std::{fs, io, path::Path};

use super::pins::PinLayout;
use crate::{
    error::{Error, Result},
    sys,
};

/// What cleanup removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Removed {
    /// Links detached.
    pub links: usize,
    /// Pins removed (links, programs, maps).
    pub pins: usize,
}

/// Detaches every pinned link (even if a running agent still holds it),
/// then removes link, program and map pins and the directories.
pub(crate) fn cleanup(layout: &PinLayout) -> Result<Removed> {
    let mut removed = Removed::default();
    if !layout.root().exists() {
        return Ok(removed);
    }
    for path in entries(&layout.links_dir())? {
        match sys::detach_pinned_link(&path) {
            Ok(()) => removed.links += 1,
            // Already detached (e.g. its cgroup is gone): just unpin.
            Err(e) if e.raw_os_error() == Some(libc::ENOLINK) || e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(Error::io(format!("detaching {}", path.display()), e)),
        }
        remove(&path, &mut removed)?;
    }
    for dir in [layout.programs_dir(), layout.maps_dir()] {
        for path in entries(&dir)? {
            remove(&path, &mut removed)?;
        }
    }
    for dir in [layout.links_dir(), layout.programs_dir(), layout.maps_dir(), layout.root().to_owned()] {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
        }
    }
    Ok(removed)
}

fn entries(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("listing {}", dir.display()), e)),
    }
}

fn remove(path: &Path, removed: &mut Removed) -> Result<()> {
    fs::remove_file(path).map_err(|e| Error::io(format!("unpinning {}", path.display()), e))?;
    removed.pins += 1;
    Ok(())
}
