//! The objects a source has delivered so far, indexed so that a change to
//! one object tells which Services need recomputing.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::ServiceKey;

/// Label that ties an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Services whose desired state may have changed.
pub type Dirty = BTreeSet<ServiceKey>;

/// Namespace and name of any namespaced object.
type ObjectKey = (String, String);

/// Current Services and EndpointSlices.
#[derive(Debug, Default)]
pub struct Store {
    services: HashMap<ServiceKey, Service>,
    slices: HashMap<ObjectKey, EndpointSlice>,
    /// Slice names per Service, from the service-name label.
    slices_by_service: HashMap<ServiceKey, BTreeSet<String>>,
}

fn service_key(svc: &Service) -> ServiceKey {
    ServiceKey::new(
        svc.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

fn slice_key(slice: &EndpointSlice) -> ObjectKey {
    (
        slice.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

/// The Service a slice belongs to, if labelled.
fn slice_owner(slice: &EndpointSlice) -> Option<ServiceKey> {
    let name = slice.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some(ServiceKey::new(slice.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()), name.clone()))
}

impl Store {
    /// A Service by key.
    pub fn service(&self, key: &ServiceKey) -> Option<&Service> {
        self.services.get(key)
    }

    /// Every Service key.
    pub fn service_keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services.keys()
    }

    /// Number of Services.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The EndpointSlices labelled for `key`, in name order.
    pub fn slices_of(&self, key: &ServiceKey) -> Vec<&EndpointSlice> {
        self.slices_by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.namespace.clone(), name.clone())))
            .collect()
    }

    /// Adds or replaces a Service.
    pub fn upsert_service(&mut self, svc: Service) -> Dirty {
        let key = service_key(&svc);
        if self.services.get(&key) == Some(&svc) {
            return Dirty::new();
        }
        self.services.insert(key.clone(), svc);
        Dirty::from([key])
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Dirty {
        if self.services.remove(key).is_some() { Dirty::from([key.clone()]) } else { Dirty::new() }
    }

    /// Replaces every Service (a complete listing).
    pub fn replace_services(&mut self, all: Vec<Service>) -> Dirty {
        let mut dirty = Dirty::new();
        let mut seen = BTreeSet::new();
        for svc in all {
            seen.insert(service_key(&svc));
            dirty.extend(self.upsert_service(svc));
        }
        let gone: Vec<ServiceKey> = self.services.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in gone {
            dirty.extend(self.delete_service(&key));
        }
        dirty
    }

    /// Adds or replaces an EndpointSlice.
    pub fn upsert_slice(&mut self, slice: EndpointSlice) -> Dirty {
        let key = slice_key(&slice);
        if self.slices.get(&key) == Some(&slice) {
            return Dirty::new();
        }
        let mut dirty = self.delete_slice(&key.0, &key.1);
        if let Some(owner) = slice_owner(&slice) {
            self.slices_by_service.entry(owner.clone()).or_default().insert(key.1.clone());
            dirty.insert(owner);
        }
        self.slices.insert(key, slice);
        dirty
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) -> Dirty {
        let Some(old) = self.slices.remove(&(namespace.to_owned(), name.to_owned())) else {
            return Dirty::new();
        };
        let Some(owner) = slice_owner(&old) else {
            return Dirty::new();
        };
        if let Some(names) = self.slices_by_service.get_mut(&owner) {
            names.remove(name);
            if names.is_empty() {
                self.slices_by_service.remove(&owner);
            }
        }
        Dirty::from([owner])
    }

    /// Replaces every EndpointSlice (a complete listing).
    pub fn replace_slices(&mut self, all: Vec<EndpointSlice>) -> Dirty {
        let mut dirty = Dirty::new();
        let mut seen = BTreeSet::new();
        for slice in all {
            seen.insert(slice_key(&slice));
            dirty.extend(self.upsert_slice(slice));
        }
        let gone: Vec<ObjectKey> = self.slices.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for (ns, name) in gone {
            dirty.extend(self.delete_slice(&ns, &name));
        }
        dirty
    }
}
