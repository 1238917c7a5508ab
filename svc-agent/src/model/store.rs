//! The objects a source has delivered so far, indexed so that a change to
//! one object tells which Services need recomputing.

use std::{collections::BTreeSet, sync::Arc};

use super::{
    ServiceKey,
    objects::{ServiceObj, SliceObj},
};
use crate::fast_hash::{FastMap, FastSet};

/// Label that ties an EndpointSlice to its Service.
pub(crate) const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Services whose desired state may have changed, in key order; or, made
/// with [`Dirty::ignored`], a sink that keeps none: before the first sync
/// every Service is reconciled anyway, and at a cold start with 100k
/// Services marking each one for each of its objects was a tenth of the
/// apply (string compares in the set).
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    keys: BTreeSet<ServiceKey>,
    ignore: bool,
}

impl Dirty {
    /// An empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A sink that keeps nothing.
    pub(crate) fn ignored() -> Self {
        Self { keys: BTreeSet::new(), ignore: true }
    }

    /// Marks `key` (cloned only if new).
    pub(crate) fn mark(&mut self, key: &ServiceKey) {
        if !self.ignore && !self.keys.contains(key) {
            self.keys.insert(key.clone());
        }
    }

    /// Marks every key of `keys`.
    pub(crate) fn mark_all<'a>(&mut self, keys: impl Iterator<Item = &'a ServiceKey>) {
        if !self.ignore {
            keys.for_each(|key| self.mark(key));
        }
    }

    /// Whether none is marked.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl IntoIterator for Dirty {
    type Item = ServiceKey;
    type IntoIter = std::collections::btree_set::IntoIter<ServiceKey>;

    fn into_iter(self) -> Self::IntoIter {
        self.keys.into_iter()
    }
}

/// Namespace and name of a slice.
type SliceKey = (Box<str>, Box<str>);

/// Current Services and EndpointSlices (shared with the source that
/// delivered them, never copied).
#[derive(Debug, Default)]
pub(crate) struct Store {
    services: FastMap<ServiceKey, Arc<ServiceObj>>,
    slices: FastMap<SliceKey, Arc<SliceObj>>,
    /// Slice names per Service, from the service-name label, sorted: a
    /// `Vec` because most Services have one or two (a one-name `BTreeSet`
    /// allocates a 192-byte node; at 100k Services that was 17 MiB).
    slices_by_service: FastMap<ServiceKey, Vec<Box<str>>>,
}

fn slice_key(slice: &SliceObj) -> SliceKey {
    (slice.namespace.clone(), slice.name.clone())
}

/// The Service a slice belongs to, if labelled.
fn slice_owner(slice: &SliceObj) -> Option<ServiceKey> {
    Some(ServiceKey::new(&*slice.namespace, &**slice.service.as_ref()?))
}

impl Store {
    /// A Service by key.
    pub(crate) fn service(&self, key: &ServiceKey) -> Option<&ServiceObj> {
        self.services.get(key).map(AsRef::as_ref)
    }

    /// Every Service key.
    pub(crate) fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Number of Services.
    pub(crate) fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The EndpointSlices labelled for `key`, in name order.
    pub(crate) fn slices_of(&self, key: &ServiceKey) -> Vec<&SliceObj> {
        self.slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.namespace.as_str().into(), name.clone())))
            .map(AsRef::as_ref)
            .collect()
    }

    /// Adds or replaces a Service.
    pub(crate) fn upsert_service(&mut self, svc: Arc<ServiceObj>, dirty: &mut Dirty) {
        if self.services.get(&svc.key) == Some(&svc) {
            return;
        }
        dirty.mark(&svc.key);
        self.services.insert(svc.key.clone(), svc);
    }

    /// Removes a Service.
    pub(crate) fn delete_service(&mut self, key: &ServiceKey, dirty: &mut Dirty) {
        if self.services.remove(key).is_some() {
            dirty.mark(key);
        }
    }

    /// Replaces every Service (a complete listing); the Services named in
    /// `kept` (listed, but not decodable) keep what the store has of them.
    pub(crate) fn replace_services(&mut self, all: Vec<Arc<ServiceObj>>, kept: &[(String, String)], dirty: &mut Dirty) {
        let mut seen: FastSet<ServiceKey> = kept.iter().map(|(ns, name)| ServiceKey::new(ns, name)).collect();
        seen.reserve(all.len());
        for svc in all {
            seen.insert(svc.key.clone());
            self.upsert_service(svc, dirty);
        }
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in gone {
            self.delete_service(&key, dirty);
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub(crate) fn upsert_slice(&mut self, slice: Arc<SliceObj>, dirty: &mut Dirty) {
        let key = slice_key(&slice);
        if self.slices.get(&key) == Some(&slice) {
            return;
        }
        self.delete_slice(&key.0, &key.1, dirty);
        if let Some(owner) = slice_owner(&slice) {
            dirty.mark(&owner);
            let names = self.slices_by_service.entry(owner).or_default();
            if let Err(at) = names.binary_search(&key.1) {
                names.insert(at, key.1.clone());
            }
        }
        self.slices.insert(key, slice);
    }

    /// Removes an EndpointSlice.
    pub(crate) fn delete_slice(&mut self, namespace: &str, name: &str, dirty: &mut Dirty) {
        let Some(old) = self.slices.remove(&(namespace.into(), name.into())) else {
            return;
        };
        let Some(owner) = slice_owner(&old) else {
            return;
        };
        if let Some(names) = self.slices_by_service.get_mut(&owner) {
            if let Ok(at) = names.binary_search_by(|n| (**n).cmp(name)) {
                names.remove(at);
            }
            if names.is_empty() {
                self.slices_by_service.remove(&owner);
            }
        }
        dirty.mark(&owner);
    }

    /// Replaces every EndpointSlice (a complete listing); the slices named
    /// in `kept` (listed, but not decodable) keep what the store has of them.
    pub(crate) fn replace_slices(&mut self, all: Vec<Arc<SliceObj>>, kept: &[(String, String)], dirty: &mut Dirty) {
        let mut seen: FastSet<SliceKey> =
            kept.iter().map(|(ns, name)| (ns.as_str().into(), name.as_str().into())).collect();
        seen.reserve(all.len());
        for slice in all {
            seen.insert(slice_key(&slice));
            self.upsert_slice(slice, dirty);
        }
        let gone: Vec<SliceKey> = self.slices.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for (ns, name) in gone {
            self.delete_slice(&ns, &name, dirty);
        }
    }
}
