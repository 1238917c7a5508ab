//! The agent's `--source DIR`: a temp directory of manifests, removed on Drop.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::names;

#[derive(Debug)]
pub struct ManifestDir {
    path: PathBuf,
}

impl ManifestDir {
    pub fn new() -> Result<Self> {
        let path = Path::new(names::TMP_DIR).join(names::unique_name());
        std::fs::create_dir(&path).with_context(|| format!("mkdir {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `file_name` atomically: the content goes to `.file_name.tmp`
    /// (a name the agent ignores: not .yaml/.yml/.json) and is renamed into
    /// place, so the agent never reads a half-written file.
    pub fn write(&self, file_name: &str, yaml: &str) -> Result<()> {
        let tmp = self.path.join(format!(".{file_name}.tmp"));
        let dst = self.path.join(file_name);
        std::fs::write(&tmp, yaml).with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst).with_context(|| format!("rename {} to {}", tmp.display(), dst.display()))
    }

    pub fn remove(&self, file_name: &str) -> Result<()> {
        let path = self.path.join(file_name);
        std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
    }
}

impl Drop for ManifestDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("svc-tests: removing {}: {e}", self.path.display());
        }
    }
}
