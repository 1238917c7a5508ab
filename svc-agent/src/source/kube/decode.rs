//! Per-object decoding. The watches receive objects untyped
//! ([`DynamicObject`]: metadata plus raw JSON) and convert each one on its
//! own, so an object the typed client cannot read (version skew, a CRD or
//! aggregated API serving something else under the same name) costs only
//! that object: it is skipped, reported once by name, and counted. A typed
//! list would fail as a whole and stop the watch of the whole kind.

use std::collections::HashMap;

use kube::{ResourceExt as _, api::DynamicObject};
use prometheus_client::metrics::counter::Counter;
use serde::de::DeserializeOwned;

/// Namespace and name of an object.
pub(super) type ObjectName = (String, String);

/// The objects of one kind that are currently undecodable, so each is
/// reported once (until it is fixed, deleted or no longer listed).
#[derive(Debug)]
pub(super) struct Decoder {
    kind: &'static str,
    undecodable: HashMap<ObjectName, String>,
    counter: Counter,
}

impl Decoder {
    /// A decoder for `kind` that counts every newly reported object in
    /// `counter`.
    pub(super) fn new(kind: &'static str, counter: Counter) -> Self {
        Self { kind, undecodable: HashMap::new(), counter }
    }

    /// The typed object, or its name when it cannot be decoded.
    pub(super) fn decode<K: DeserializeOwned>(&mut self, obj: DynamicObject) -> Result<K, ObjectName> {
        let name = (obj.namespace().unwrap_or_default(), obj.name_any());
        match typed(obj) {
            Ok(typed) => {
                if self.undecodable.remove(&name).is_some() {
                    tracing::info!(kind = self.kind, object = %qualified(&name), "{} {} decodes again", self.kind, qualified(&name));
                }
                Ok(typed)
            }
            Err(err) => {
                let reason = err.to_string();
                if self.undecodable.get(&name) != Some(&reason) {
                    tracing::error!(
                        kind = self.kind,
                        object = %qualified(&name),
                        "{} {} cannot be decoded, skipped (what is known of it stays in effect): {reason}",
                        self.kind,
                        qualified(&name)
                    );
                    self.counter.inc();
                    self.undecodable.insert(name.clone(), reason);
                }
                Err(name)
            }
        }
    }

    /// The object is gone.
    pub(super) fn forget(&mut self, name: &ObjectName) {
        self.undecodable.remove(name);
    }

    /// A complete listing named exactly these undecodable objects; any
    /// other is gone.
    pub(super) fn listed(&mut self, undecodable: &[ObjectName]) {
        self.undecodable.retain(|name, _| undecodable.contains(name));
    }
}

/// The object as `K`. Its fields are moved back into one JSON object (not
/// serialized again as a whole: a cold list of 10k slices would copy every
/// one).
fn typed<K: DeserializeOwned>(obj: DynamicObject) -> serde_json::Result<K> {
    let DynamicObject { types, metadata, data } = obj;
    let mut fields = match data {
        serde_json::Value::Object(fields) => fields,
        // Not an object: nothing `K` could read; let serde say why.
        other => return serde_json::from_value(other),
    };
    fields.insert("metadata".into(), serde_json::to_value(metadata)?);
    if let Some(types) = types {
        fields.insert("apiVersion".into(), types.api_version.into());
        fields.insert("kind".into(), types.kind.into());
    }
    serde_json::from_value(serde_json::Value::Object(fields))
}

/// `namespace/name`, or `name` for cluster-scoped objects.
fn qualified(name: &ObjectName) -> String {
    if name.0.is_empty() { name.1.clone() } else { format!("{}/{}", name.0, name.1) }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    };

    use super::*;

    fn object(json: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json).expect("a DynamicObject only needs metadata")
    }

    fn bad_slice() -> DynamicObject {
        object(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "bad", "namespace": "default", "labels": {"kubernetes.io/service-name": "x"}},
            "addressType": "IPv4",
            "endpoints": "not-a-list",
            "ports": [{"port": "eighty"}],
        }))
    }

    #[test]
    fn a_bad_object_is_skipped_and_reported_once() {
        let counter = Counter::default();
        let mut decoder = Decoder::new("EndpointSlice", counter.clone());
        let name = ("default".to_owned(), "bad".to_owned());
        assert_eq!(decoder.decode::<EndpointSlice>(bad_slice()), Err(name.clone()));
        assert_eq!(decoder.decode::<EndpointSlice>(bad_slice()), Err(name.clone()));
        assert_eq!(counter.get(), 1, "reported once while it stays the same");

        decoder.forget(&name);
        assert!(decoder.decode::<EndpointSlice>(bad_slice()).is_err());
        assert_eq!(counter.get(), 2, "a new object of the same name is reported again");
    }

    #[test]
    fn good_objects_of_every_kind_decode() {
        let mut decoder = Decoder::new("any", Counter::default());
        let svc = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        }));
        let node = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "a"}},
        }));
        assert!(decoder.decode::<Service>(svc).is_ok());
        assert!(decoder.decode::<Node>(node).is_ok());
    }

    #[test]
    fn a_bad_node_or_service_is_skipped() {
        let counter = Counter::default();
        let mut decoder = Decoder::new("any", counter.clone());
        let node = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "spec": {"taints": "none"}, "status": {"addresses": [{"address": 7}]},
        }));
        let svc = object(serde_json::json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": "eighty"}]},
        }));
        assert_eq!(decoder.decode::<Node>(node), Err((String::new(), "n1".to_owned())));
        assert_eq!(decoder.decode::<Service>(svc), Err(("default".to_owned(), "web".to_owned())));
        assert_eq!(counter.get(), 2);
    }

    #[test]
    fn a_listing_forgets_objects_it_no_longer_has() {
        let counter = Counter::default();
        let mut decoder = Decoder::new("EndpointSlice", counter.clone());
        assert!(decoder.decode::<EndpointSlice>(bad_slice()).is_err());
        decoder.listed(&[]);
        assert!(decoder.decode::<EndpointSlice>(bad_slice()).is_err());
        assert_eq!(counter.get(), 2);
        decoder.listed(&[("default".to_owned(), "bad".to_owned())]);
        assert!(decoder.decode::<EndpointSlice>(bad_slice()).is_err());
        assert_eq!(counter.get(), 2, "still listed, still the same: not reported again");
    }
}
