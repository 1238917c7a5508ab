//! Per-pod and per-namespace opt-out of socket translation: which pods'
//! sockets the hooks must leave alone (sidecar meshes that need to see the
//! ClusterIP, sandboxed runtimes, VM workloads).
//!
//! The rule, in one place ([`socket_lb_disabled`]): a pod's own
//! `svc.dataplane.io/socket-lb` annotation decides when it has one
//! (`disabled` or `enabled`); otherwise its namespace's does; otherwise the
//! pod is translated. Any other value is ignored, with a warning, as if
//! the annotation were absent. Turning a pod's cgroup into the dataplane's
//! key is the dataplane's job (`dataplane::exempt`): this only names pods.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::source::Change;

/// The annotation, on a Pod or a Namespace.
pub(crate) const ANNOTATION_SOCKET_LB: &str = "svc.dataplane.io/socket-lb";
/// Its value that exempts.
const DISABLED: &str = "disabled";
/// Its value that translates (a pod in an exempt namespace opts back in).
const ENABLED: &str = "enabled";

/// A Pod, as far as the opt-out cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodObj {
    /// Namespace.
    pub namespace: Box<str>,
    /// Name.
    pub name: Box<str>,
    /// `metadata.uid`: kubelet names the pod's cgroup after it.
    pub uid: Option<Box<str>>,
    /// The annotation's value, raw.
    pub socket_lb: Option<Box<str>>,
}

/// A Namespace, as far as the opt-out cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamespaceObj {
    /// Name.
    pub name: Box<str>,
    /// The annotation's value, raw.
    pub socket_lb: Option<Box<str>>,
}

fn annotation(meta: &ObjectMeta) -> Option<Box<str>> {
    meta.annotations.as_ref()?.get(ANNOTATION_SOCKET_LB).map(|v| v.as_str().into())
}

impl From<&ObjectMeta> for PodObj {
    fn from(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.as_deref().unwrap_or("default").into(),
            name: meta.name.as_deref().unwrap_or_default().into(),
            uid: meta.uid.as_deref().map(Into::into),
            socket_lb: annotation(meta),
        }
    }
}

impl From<&ObjectMeta> for NamespaceObj {
    fn from(meta: &ObjectMeta) -> Self {
        Self { name: meta.name.as_deref().unwrap_or_default().into(), socket_lb: annotation(meta) }
    }
}

/// A pod whose sockets are not translated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ExemptPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
}

/// What one annotation value says: `Some(true)` exempt, `Some(false)`
/// translate, `None` no say.
fn choice(value: Option<&str>) -> Option<bool> {
    match value? {
        DISABLED => Some(true),
        ENABLED => Some(false),
        _ => None,
    }
}

/// Whether a pod with these annotation values (its own, its namespace's)
/// is exempt.
pub(crate) fn socket_lb_disabled(pod: Option<&str>, namespace: Option<&str>) -> bool {
    choice(pod).or(choice(namespace)).unwrap_or(false)
}

/// The Pods of this node and every Namespace, and the exempt pods they
/// make.
#[derive(Debug, Default)]
pub(crate) struct OptOuts {
    pods: BTreeMap<(Box<str>, Box<str>), Arc<PodObj>>,
    namespaces: HashMap<Box<str>, Arc<NamespaceObj>>,
    /// What was last handed over ([`Self::take_exempt`]).
    handed_over: Option<Vec<ExemptPod>>,
    /// A complete listing of each kind has arrived: before both have,
    /// nothing is handed over (the pinned exemptions stay as they are).
    pods_listed: bool,
    namespaces_listed: bool,
}

impl OptOuts {
    /// Folds in a change to this node's Pods.
    pub(crate) fn apply_pods(&mut self, change: Change<Arc<PodObj>>) {
        let key = |p: &PodObj| (p.namespace.clone(), p.name.clone());
        match change {
            Change::Replace { objects, kept } => {
                self.pods_listed = true;
                let kept: Vec<(Box<str>, Box<str>)> =
                    kept.into_iter().map(|(ns, name)| (ns.into_boxed_str(), name.into_boxed_str())).collect();
                self.pods.retain(|k, _| kept.contains(k));
                for pod in objects {
                    warn_unknown_value("Pod", &format!("{}/{}", pod.namespace, pod.name), pod.socket_lb.as_deref());
                    self.pods.insert(key(&pod), pod);
                }
            }
            Change::Upsert(pod) => {
                warn_unknown_value("Pod", &format!("{}/{}", pod.namespace, pod.name), pod.socket_lb.as_deref());
                self.pods.insert(key(&pod), pod);
            }
            Change::Delete { namespace, name } => {
                self.pods.remove(&(namespace.into_boxed_str(), name.into_boxed_str()));
            }
        }
    }

    /// Folds in a change to the Namespaces.
    pub(crate) fn apply_namespaces(&mut self, change: Change<Arc<NamespaceObj>>) {
        match change {
            Change::Replace { objects, kept } => {
                self.namespaces_listed = true;
                self.namespaces.retain(|name, _| kept.iter().any(|(_, k)| **k == **name));
                for ns in objects {
                    warn_unknown_value("Namespace", &ns.name, ns.socket_lb.as_deref());
                    self.namespaces.insert(ns.name.clone(), ns);
                }
            }
            Change::Upsert(ns) => {
                warn_unknown_value("Namespace", &ns.name, ns.socket_lb.as_deref());
                self.namespaces.insert(ns.name.clone(), ns);
            }
            Change::Delete { name, .. } => {
                self.namespaces.remove(name.as_str());
            }
        }
    }

    /// The exempt pods, sorted. A pod without a uid cannot be found in
    /// the cgroup tree: it is left out, with a warning.
    pub(crate) fn exempt(&self) -> Vec<ExemptPod> {
        self.pods
            .values()
            .filter(|pod| {
                let ns = self.namespaces.get(&pod.namespace).and_then(|n| n.socket_lb.as_deref());
                socket_lb_disabled(pod.socket_lb.as_deref(), ns)
            })
            .filter_map(|pod| {
                let Some(uid) = pod.uid.as_deref().filter(|u| !u.is_empty()) else {
                    tracing::warn!(
                        "Pod {}/{} opts out of socket translation but has no metadata.uid: its cgroup cannot be found",
                        pod.namespace,
                        pod.name
                    );
                    return None;
                };
                Some(ExemptPod {
                    namespace: pod.namespace.to_string(),
                    name: pod.name.to_string(),
                    uid: uid.to_owned(),
                })
            })
            .collect()
    }

    /// The exempt pods, if they differ from what the last call returned;
    /// `None` until both Pods and Namespaces have been listed (an agent
    /// whose RBAC does not allow them yet keeps the pinned exemptions, and
    /// everything else follows the source as usual).
    pub(crate) fn take_exempt(&mut self) -> Option<Vec<ExemptPod>> {
        if !(self.pods_listed && self.namespaces_listed) {
            return None;
        }
        let now = self.exempt();
        if self.handed_over.as_ref() == Some(&now) {
            return None;
        }
        self.handed_over = Some(now.clone());
        Some(now)
    }
}

fn warn_unknown_value(kind: &str, name: &str, value: Option<&str>) {
    if let Some(v) = value
        && choice(Some(v)).is_none()
    {
        tracing::warn!("{kind} {name}: {ANNOTATION_SOCKET_LB}: {v:?} is neither {DISABLED:?} nor {ENABLED:?}; ignored");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, value: Option<&str>) -> Arc<PodObj> {
        Arc::new(PodObj {
            namespace: ns.into(),
            name: name.into(),
            uid: Some(format!("uid-{name}").into()),
            socket_lb: value.map(Into::into),
        })
    }

    fn namespace(name: &str, value: Option<&str>) -> Arc<NamespaceObj> {
        Arc::new(NamespaceObj { name: name.into(), socket_lb: value.map(Into::into) })
    }

    fn names(o: &OptOuts) -> Vec<String> {
        o.exempt().into_iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect()
    }

    #[test]
    fn the_pod_decides_then_its_namespace() {
        assert!(socket_lb_disabled(Some("disabled"), None));
        assert!(socket_lb_disabled(None, Some("disabled")));
        assert!(!socket_lb_disabled(Some("enabled"), Some("disabled")), "a pod opts back in");
        assert!(socket_lb_disabled(Some("disabled"), Some("enabled")));
        assert!(!socket_lb_disabled(None, None));
        assert!(!socket_lb_disabled(Some("off"), None), "unknown values are ignored");
        assert!(
            socket_lb_disabled(Some("Disabled?"), Some("disabled")),
            "an ignored pod value defers to the namespace"
        );
    }

    #[test]
    fn an_exempt_namespace_covers_its_pods_and_follows_changes() {
        let mut o = OptOuts::default();
        o.apply_namespaces(Change::replace_all(vec![namespace("mesh", Some("disabled")), namespace("web", None)]));
        o.apply_pods(Change::replace_all(vec![
            pod("mesh", "a", None),
            pod("mesh", "b", Some("enabled")),
            pod("web", "c", None),
            pod("web", "d", Some("disabled")),
        ]));
        assert_eq!(names(&o), ["mesh/a", "web/d"]);
        assert_eq!(o.take_exempt().map(|v| v.len()), Some(2), "both kinds listed");
        assert_eq!(o.take_exempt(), None, "unchanged: nothing to hand over");
        // The namespace's annotation goes: only the pod's own stays.
        o.apply_namespaces(Change::Upsert(namespace("mesh", None)));
        assert_eq!(names(&o), ["web/d"]);
        // The pod's annotation goes too; then the pod itself.
        o.apply_pods(Change::Upsert(pod("web", "d", None)));
        assert!(names(&o).is_empty());
        o.apply_pods(Change::Upsert(pod("web", "d", Some("disabled"))));
        o.apply_pods(Change::Delete { namespace: "web".into(), name: "d".into() });
        assert!(names(&o).is_empty());
        assert_eq!(o.take_exempt(), Some(Vec::new()));
    }

    #[test]
    fn nothing_is_handed_over_before_both_kinds_are_listed() {
        let mut o = OptOuts::default();
        o.apply_pods(Change::Upsert(pod("a", "x", Some("disabled"))));
        o.apply_pods(Change::replace_all(vec![pod("a", "x", Some("disabled"))]));
        assert_eq!(o.take_exempt(), None, "Namespaces not listed yet");
        o.apply_namespaces(Change::replace_all(vec![]));
        assert_eq!(o.take_exempt().map(|v| v.len()), Some(1));
    }

    #[test]
    fn a_listing_keeps_undecodable_pods_and_drops_the_rest() {
        let mut o = OptOuts::default();
        o.apply_pods(Change::replace_all(vec![pod("a", "x", Some("disabled")), pod("a", "y", Some("disabled"))]));
        o.apply_pods(Change::Replace { objects: vec![], kept: vec![("a".into(), "x".into())] });
        assert_eq!(names(&o), ["a/x"]);
    }

    #[test]
    fn a_pod_without_uid_is_left_out() {
        let mut o = OptOuts::default();
        let mut p = (*pod("a", "x", Some("disabled"))).clone();
        p.uid = None;
        o.apply_pods(Change::Upsert(Arc::new(p)));
        assert!(o.exempt().is_empty());
    }

    #[test]
    fn objects_are_read_from_metadata() {
        let meta: ObjectMeta = serde_yaml::from_str(
            "{name: p, namespace: n, uid: 1234, annotations: {svc.dataplane.io/socket-lb: disabled}}",
        )
        .unwrap();
        let p = PodObj::from(&meta);
        assert_eq!(
            (&*p.namespace, &*p.name, p.uid.as_deref(), p.socket_lb.as_deref()),
            ("n", "p", Some("1234"), Some("disabled"))
        );
        assert_eq!(NamespaceObj::from(&meta).socket_lb.as_deref(), Some("disabled"));
    }
}
