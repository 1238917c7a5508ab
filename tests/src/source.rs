//! Where a scenario's Kubernetes objects go. Scenarios (`crate::scenarios`)
//! take a [`Source`] so that the same steps and assertions run through the
//! manifest source (a [`ManifestDir`], here) and through the Kubernetes
//! API server (an implementation next to the API server harness).

use std::ffi::OsString;

use anyhow::Result;

use crate::ManifestDir;

/// A source of Services and EndpointSlices for the agent.
pub trait Source: std::fmt::Debug {
    /// Makes the objects in `yaml` (one or more documents) exist exactly as
    /// written, replacing what an earlier `apply` of the same `unit`
    /// created (same object names; fields left out are removed, as
    /// `kubectl apply` does).
    fn apply(&self, unit: &str, yaml: &str) -> Result<()>;

    /// Deletes what `apply(unit, ..)` created.
    fn delete(&self, unit: &str) -> Result<()>;

    /// The `svc-agent run` arguments that select this source.
    fn agent_args(&self) -> Vec<OsString>;

    /// Makes `zone` the zone of node `node_name` before the agent starts.
    /// Returns extra `svc-agent run` arguments when the source needs them
    /// (the manifest source: `--zone ZONE`; the Kubernetes source instead
    /// labels the Node `topology.kubernetes.io/zone`).
    fn node_zone(&self, node_name: &str, zone: &str) -> Result<Vec<OsString>>;

    /// TCP ports on the host's loopback that an agent running in a test
    /// node's network namespace must reach as `127.0.0.1:PORT` there (an
    /// API server); [`crate::NodeEnv`] relays each one into the node
    /// namespace. None for the manifest source.
    fn loopback_ports(&self) -> Vec<u16> {
        Vec::new()
    }

    /// The uid of Pod `namespace/name` that `apply` created from YAML
    /// naming `written` (the manifest source keeps it; an API server
    /// assigns its own).
    fn pod_uid(&self, namespace: &str, name: &str, written: &str) -> Result<String>;

    /// Host paths the agent reads (the manifest directory, the kubeconfig
    /// and its certificates): mounted into its pod shape at their own
    /// paths, as a ConfigMap or Secret volume would be.
    fn agent_mounts(&self) -> Vec<std::path::PathBuf>;
}

/// The manifest source: one file `<unit>.yaml` per unit.
impl Source for ManifestDir {
    fn apply(&self, unit: &str, yaml: &str) -> Result<()> {
        self.write(&format!("{unit}.yaml"), yaml)
    }

    fn delete(&self, unit: &str) -> Result<()> {
        self.remove(&format!("{unit}.yaml"))
    }

    fn agent_args(&self) -> Vec<OsString> {
        vec!["--source".into(), self.path().into(), "--service-cidr".into(), "10.96.0.0/16,fd00:96::/108".into()]
    }

    fn node_zone(&self, _node_name: &str, zone: &str) -> Result<Vec<OsString>> {
        Ok(vec!["--zone".into(), zone.into()])
    }

    fn agent_mounts(&self) -> Vec<std::path::PathBuf> {
        vec![self.path().to_owned()]
    }

    fn pod_uid(&self, _namespace: &str, _name: &str, written: &str) -> Result<String> {
        Ok(written.to_owned())
    }
}

/// A fresh manifest directory as a boxed [`Source`].
pub fn manifests() -> Result<Box<dyn Source>> {
    Ok(Box::new(ManifestDir::new()?))
}
