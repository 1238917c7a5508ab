//! The directory's objects merged across files, kept up to date file by
//! file: a re-read touches the objects of the files that changed, not the
//! whole directory (at 10k Services a whole merge cost about 30 ms per
//! change).
//!
//! An object defined in more than one file is taken from the first file
//! in name order, as before; the others are reported.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Endpoints;

use super::ParsedFile;
use crate::{
    fast_hash::FastMap,
    model::{NamespaceObj, PodObj, ServiceObj, SliceObj},
    source::Change,
};

/// An object's namespace and name (a Namespace's namespace is empty).
pub(super) type ObjKey = (Box<str>, Box<str>);

/// Every definition of one kind of object, by key, each with its file (in
/// file-name order: the first one is in force), and what the current
/// re-read has touched.
#[derive(Debug)]
pub(super) struct Definitions<T> {
    kind: &'static str,
    by_key: FastMap<ObjKey, Vec<(Arc<Path>, T)>>,
    /// Keys touched since the last [`Self::take_changes`], with the
    /// object in force before the first touch.
    touched: FastMap<ObjKey, Option<T>>,
}

impl<T: Clone + PartialEq> Definitions<T> {
    pub(super) fn new(kind: &'static str) -> Self {
        Self { kind, by_key: FastMap::default(), touched: FastMap::default() }
    }

    fn in_force(&self, key: &ObjKey) -> Option<&T> {
        self.by_key.get(key).and_then(|defs| defs.first()).map(|(_, obj)| obj)
    }

    fn touch(&mut self, key: &ObjKey) {
        if !self.touched.contains_key(key) {
            let before = self.in_force(key).cloned();
            self.touched.insert(key.clone(), before);
        }
    }

    /// `path` no longer defines `key`.
    pub(super) fn remove(&mut self, key: &ObjKey, path: &Path) {
        self.touch(key);
        let Some(defs) = self.by_key.get_mut(key) else { return };
        defs.retain(|(p, _)| **p != *path);
        if defs.is_empty() {
            self.by_key.remove(key);
        }
    }

    /// `path` defines `key` as `obj`.
    pub(super) fn insert(&mut self, key: ObjKey, path: &Arc<Path>, obj: T) {
        self.touch(&key);
        let defs = self.by_key.entry(key).or_default();
        // After the file's earlier definitions too: within one file, the
        // first document wins.
        let at = defs.partition_point(|(p, _)| **p <= **path);
        defs.insert(at, (Arc::clone(path), obj));
    }

    /// The keys whose object in force changed since the last call, with
    /// the object now in force (`None`: deleted). Duplicates among the
    /// touched keys are reported here, once per re-read.
    pub(super) fn take_changes(&mut self) -> Vec<(ObjKey, Option<T>)> {
        let touched = std::mem::take(&mut self.touched);
        let mut out = Vec::new();
        for (key, before) in touched {
            if let Some(defs) = self.by_key.get(&key).filter(|defs| defs.len() > 1) {
                for (path, _) in &defs[1..] {
                    tracing::warn!(
                        file = %path.display(),
                        "{} {}/{} is defined more than once; keeping the first definition, from {} (files are read in name order)",
                        self.kind,
                        key.0,
                        key.1,
                        defs[0].0.display()
                    );
                }
            }
            let now = self.in_force(&key).cloned();
            if now != before {
                out.push((key, now));
            }
        }
        out
    }

    /// Every object in force, by key.
    pub(super) fn in_force_sorted(&self) -> Vec<T> {
        let mut all: Vec<(&ObjKey, &T)> =
            self.by_key.iter().filter_map(|(k, d)| d.first().map(|(_, o)| (k, o))).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter().map(|(_, o)| o.clone()).collect()
    }
}

/// Every kind's definitions across the files.
#[derive(Debug)]
pub(super) struct Merged {
    pub(super) services: Definitions<Arc<ServiceObj>>,
    pub(super) slices: Definitions<Arc<SliceObj>>,
    pub(super) endpoints: Definitions<Arc<Endpoints>>,
    pub(super) pods: Definitions<Arc<PodObj>>,
    pub(super) namespaces: Definitions<Arc<NamespaceObj>>,
}

impl Merged {
    pub(super) fn new() -> Self {
        Self {
            services: Definitions::new("Service"),
            slices: Definitions::new("EndpointSlice"),
            endpoints: Definitions::new("Endpoints"),
            pods: Definitions::new("Pod"),
            namespaces: Definitions::new("Namespace"),
        }
    }

    /// `path` held `old` and holds `new` now.
    pub(super) fn replace(&mut self, path: &Arc<Path>, old: Option<&ParsedFile>, new: Option<&ParsedFile>) {
        let svc_key = |s: &ServiceObj| -> ObjKey { (s.key.namespace.as_str().into(), s.key.name.as_str().into()) };
        let slice_key = |s: &SliceObj| -> ObjKey { (s.namespace.clone(), s.name.clone()) };
        let ep_key = |e: &Endpoints| -> ObjKey {
            let (namespace, name) = key_of(&e.metadata);
            (namespace.into(), name.into())
        };
        let pod_key = |p: &PodObj| -> ObjKey { (p.namespace.clone(), p.name.clone()) };
        let ns_key = |n: &NamespaceObj| -> ObjKey { ("".into(), n.name.clone()) };
        if let Some(old) = old {
            old.services.iter().for_each(|o| self.services.remove(&svc_key(o), path));
            old.slices.iter().for_each(|o| self.slices.remove(&slice_key(o), path));
            old.endpoints.iter().for_each(|o| self.endpoints.remove(&ep_key(o), path));
            old.pods.iter().for_each(|o| self.pods.remove(&pod_key(o), path));
            old.namespaces.iter().for_each(|o| self.namespaces.remove(&ns_key(o), path));
        }
        if let Some(new) = new {
            new.services.iter().for_each(|o| self.services.insert(svc_key(o), path, Arc::clone(o)));
            new.slices.iter().for_each(|o| self.slices.insert(slice_key(o), path, Arc::clone(o)));
            new.endpoints.iter().for_each(|o| self.endpoints.insert(ep_key(o), path, Arc::clone(o)));
            new.pods.iter().for_each(|o| self.pods.insert(pod_key(o), path, Arc::clone(o)));
            new.namespaces.iter().for_each(|o| self.namespaces.insert(ns_key(o), path, Arc::clone(o)));
        }
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (meta.namespace.clone().unwrap_or_else(|| "default".to_owned()), meta.name.clone().unwrap_or_default())
}

/// The changes as the source hands them on.
pub(super) fn as_source_changes<T>(changes: Vec<(ObjKey, Option<T>)>) -> Vec<Change<T>> {
    changes
        .into_iter()
        .map(|((namespace, name), now)| match now {
            Some(obj) => Change::Upsert(obj),
            None => Change::Delete { namespace: namespace.into(), name: name.into() },
        })
        .collect()
}

/// The upserts and deletes that turn `before` into `after`, for what is
/// derived from all objects of a kind (allocated addresses, mirrored
/// Endpoints): unchanged objects are shared (`Arc`s compare by pointer
/// first), so this costs a pass, and only on changes of that kind.
pub(super) fn delta<T: Eq>(
    before: &[Arc<T>],
    after: &[Arc<T>],
    key: impl Fn(&T) -> (&str, &str),
) -> Vec<Change<Arc<T>>> {
    let old: FastMap<(&str, &str), &Arc<T>> = before.iter().map(|o| (key(o), o)).collect();
    let new: std::collections::HashSet<(&str, &str)> = after.iter().map(|o| key(o)).collect();
    let mut changes: Vec<Change<Arc<T>>> =
        after.iter().filter(|o| old.get(&key(o)) != Some(o)).map(|o| Change::Upsert(Arc::clone(o))).collect();
    changes.extend(
        old.keys()
            .filter(|k| !new.contains(*k))
            .map(|(namespace, name)| Change::Delete { namespace: (*namespace).to_owned(), name: (*name).to_owned() }),
    );
    changes
}

/// A file's path, shared by every definition it holds.
pub(super) fn shared_path(path: &Path) -> Arc<Path> {
    Arc::from(PathBuf::from(path).into_boxed_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjKey {
        ("ns".into(), name.into())
    }

    #[test]
    fn the_first_file_in_name_order_wins_and_only_changes_are_reported() {
        let (a, b) = (shared_path(Path::new("/d/a.yaml")), shared_path(Path::new("/d/b.yaml")));
        let mut defs: Definitions<u32> = Definitions::new("Service");
        defs.insert(key("web"), &b, 2);
        defs.insert(key("web"), &a, 1);
        defs.insert(key("db"), &b, 7);
        let mut first = defs.take_changes();
        first.sort();
        assert_eq!(first, [(key("db"), Some(7)), (key("web"), Some(1))]);
        // b is rewritten with the same content, and loses its copy of web:
        // a still defines web, db is unchanged, so nothing changes.
        defs.remove(&key("web"), &b);
        defs.remove(&key("db"), &b);
        defs.insert(key("db"), &b, 7);
        assert!(defs.take_changes().is_empty());
        // a goes: web is gone too (b no longer defines it).
        defs.remove(&key("web"), &a);
        assert_eq!(defs.take_changes(), [(key("web"), None)]);
        assert_eq!(defs.in_force_sorted(), [7]);
    }

    #[test]
    fn within_one_file_the_first_document_wins() {
        let a = shared_path(Path::new("/d/a.yaml"));
        let mut defs: Definitions<u32> = Definitions::new("Service");
        defs.insert(key("web"), &a, 1);
        defs.insert(key("web"), &a, 2);
        assert_eq!(defs.take_changes(), [(key("web"), Some(1))]);
    }

    #[test]
    fn a_later_file_takes_over_when_the_first_definition_goes() {
        let (a, b) = (shared_path(Path::new("/d/a.yaml")), shared_path(Path::new("/d/b.yaml")));
        let mut defs: Definitions<u32> = Definitions::new("Service");
        defs.insert(key("web"), &a, 1);
        defs.insert(key("web"), &b, 2);
        defs.take_changes();
        defs.remove(&key("web"), &a);
        assert_eq!(defs.take_changes(), [(key("web"), Some(2))]);
    }

    fn obj(ns: &'static str, name: &'static str, v: u32) -> Arc<(&'static str, &'static str, u32)> {
        Arc::new((ns, name, v))
    }

    fn obj_key<'a>(o: &'a (&'static str, &'static str, u32)) -> (&'a str, &'a str) {
        (o.0, o.1)
    }

    #[test]
    fn delta_names_only_what_changed() {
        let (kept, edited, gone) = (obj("a", "kept", 1), obj("a", "edited", 1), obj("b", "gone", 1));
        let before = vec![Arc::clone(&kept), edited, gone];
        let (edited2, added) = (obj("a", "edited", 2), obj("c", "added", 1));
        let after = vec![kept, Arc::clone(&edited2), Arc::clone(&added)];
        let mut got: Vec<String> = delta(&before, &after, obj_key)
            .into_iter()
            .map(|c| match c {
                Change::Upsert(o) => format!("upsert {}/{} v{}", o.0, o.1, o.2),
                Change::Delete { namespace, name } => format!("delete {namespace}/{name}"),
                Change::Replace { .. } => "replace".to_owned(),
            })
            .collect();
        got.sort();
        assert_eq!(got, ["delete b/gone", "upsert a/edited v2", "upsert c/added v1"]);
        assert!(delta(&after, &after, obj_key).is_empty());
    }
}
