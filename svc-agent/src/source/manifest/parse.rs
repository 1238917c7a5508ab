//! One manifest file -> typed objects. Multi-document YAML, JSON (a YAML
//! subset) and `kind: List` are accepted; kinds other than Service,
//! EndpointSlice, Endpoints, Pod and Namespace are ignored (of Pods and
//! Namespaces only the metadata is read: the socket-translation opt-out).

use std::sync::Arc;

use k8s_openapi::api::{
    core::v1::{Endpoints, Service},
    discovery::v1::EndpointSlice,
};
use serde::Deserialize as _;

use crate::model::{NamespaceObj, PodObj, ServiceObj, SliceObj};

/// A file that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParseError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Read(String),
    /// The text is not YAML/JSON.
    #[error("not valid YAML/JSON: {0}")]
    Syntax(String),
}

/// The usable objects of a file (reduced to what the model reads), and
/// what was wrong with the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ParsedFile {
    /// Services.
    pub services: Vec<Arc<ServiceObj>>,
    /// EndpointSlices (discovery.k8s.io/v1).
    pub slices: Vec<Arc<SliceObj>>,
    /// Endpoints (v1), mirrored into slices for selector-less Services.
    pub endpoints: Vec<Arc<Endpoints>>,
    /// Pods (v1), all taken to run on this node.
    pub pods: Vec<Arc<PodObj>>,
    /// Namespaces (v1).
    pub namespaces: Vec<Arc<NamespaceObj>>,
    /// One line per skipped object, naming it.
    pub problems: Vec<String>,
}

/// Parses a whole file. A syntax error anywhere rejects the file (we cannot
/// know what the author meant after it); a bad object only skips itself.
pub(crate) fn parse_manifest(text: &str) -> Result<ParsedFile, ParseError> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ParseError::Syntax(e.to_string()))?;
        docs.push(value);
    }
    let mut out = ParsedFile::default();
    for (index, doc) in docs.into_iter().enumerate() {
        add_document(&mut out, doc, index + 1);
    }
    Ok(out)
}

fn add_document(out: &mut ParsedFile, doc: serde_yaml::Value, number: usize) {
    if doc.is_null() {
        return; // empty document, e.g. a trailing `---`
    }
    let kind = doc.get("kind").and_then(serde_yaml::Value::as_str).unwrap_or("").to_owned();
    let api_version = doc.get("apiVersion").and_then(serde_yaml::Value::as_str).unwrap_or("").to_owned();
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let what = format!("document {number} ({kind} {name})");
    match (kind.as_str(), api_version.as_str()) {
        ("List", _) => {
            let items = doc.get("items").and_then(serde_yaml::Value::as_sequence).cloned().unwrap_or_default();
            for item in items {
                add_document(out, item, number);
            }
        }
        ("Service", "v1") => match decode::<Service>(doc) {
            Ok(svc) if svc.metadata.name.is_some() => out.services.push(Arc::new(ServiceObj::from(&svc))),
            Ok(_) => out.problems.push(format!("{what}: metadata.name is required")),
            Err(e) => out.problems.push(format!("{what}: {e}")),
        },
        ("EndpointSlice", "discovery.k8s.io/v1") => match decode::<EndpointSlice>(doc) {
            Ok(slice) if slice.metadata.name.is_some() => out.slices.push(Arc::new(SliceObj::from(&slice))),
            Ok(_) => out.problems.push(format!("{what}: metadata.name is required")),
            Err(e) => out.problems.push(format!("{what}: {e}")),
        },
        ("Endpoints", "v1") => match decode::<Endpoints>(doc) {
            Ok(ep) if ep.metadata.name.is_some() => out.endpoints.push(Arc::new(ep)),
            Ok(_) => out.problems.push(format!("{what}: metadata.name is required")),
            Err(e) => out.problems.push(format!("{what}: {e}")),
        },
        ("Pod", "v1") => match metadata(&doc) {
            Ok(meta) if meta.name.is_some() => out.pods.push(Arc::new(PodObj::from(&meta))),
            Ok(_) => out.problems.push(format!("{what}: metadata.name is required")),
            Err(e) => out.problems.push(format!("{what}: {e}")),
        },
        ("Namespace", "v1") => match metadata(&doc) {
            Ok(meta) if meta.name.is_some() => out.namespaces.push(Arc::new(NamespaceObj::from(&meta))),
            Ok(_) => out.problems.push(format!("{what}: metadata.name is required")),
            Err(e) => out.problems.push(format!("{what}: {e}")),
        },
        ("Service" | "EndpointSlice" | "Endpoints" | "Pod" | "Namespace", _) => {
            out.problems.push(format!("{what}: unsupported apiVersion {api_version:?}"));
        }
        ("", _) => out.problems.push(format!("{what}: no kind")),
        _ => tracing::debug!("ignoring {what}"),
    }
}

/// An object's metadata (the rest is not read, so it need not be valid).
fn metadata(doc: &serde_yaml::Value) -> Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, String> {
    decode(doc.get("metadata").cloned().unwrap_or_default())
}

fn decode<T: serde::de::DeserializeOwned>(doc: serde_yaml::Value) -> Result<T, String> {
    serde_yaml::from_value(doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_skips_other_kinds() {
        let parsed = parse_manifest(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1}\naddressType: IPv4\nendpoints: []\n---\n",
        )
        .unwrap();
        assert_eq!(parsed.services.len(), 1);
        assert_eq!(parsed.slices.len(), 1);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    }

    #[test]
    fn reads_json_and_lists() {
        let parsed = parse_manifest(
            r#"{"apiVersion":"v1","kind":"List","items":[
                {"apiVersion":"v1","kind":"Service","metadata":{"name":"a"},"spec":{"ports":[{"port":80}]}},
                {"apiVersion":"v1","kind":"Endpoints","metadata":{"name":"a"},"subsets":[]}]}"#,
        )
        .unwrap();
        assert_eq!(parsed.services.len(), 1);
        assert_eq!(parsed.endpoints.len(), 1);
    }

    #[test]
    fn bad_object_is_named_and_others_kept() {
        let parsed = parse_manifest(
            "apiVersion: v1\nkind: Service\nmetadata: {name: good}\nspec: {ports: [{port: 80}]}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec: {ports: [{port: eighty}]}\n",
        )
        .unwrap();
        assert_eq!(parsed.services.len(), 1);
        assert_eq!(parsed.problems.len(), 1);
        assert!(parsed.problems[0].contains("Service broken"), "{:?}", parsed.problems);
    }

    #[test]
    fn reads_the_metadata_of_pods_and_namespaces() {
        let parsed = parse_manifest(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: mesh, uid: u-1, \
             annotations: {svc.dataplane.io/socket-lb: disabled}}\nspec: {containers: not-read}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh, annotations: {svc.dataplane.io/socket-lb: disabled}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {namespace: mesh}\n",
        )
        .unwrap();
        assert_eq!(parsed.pods.len(), 1);
        assert_eq!((&*parsed.pods[0].namespace, parsed.pods[0].uid.as_deref()), ("mesh", Some("u-1")));
        assert_eq!(parsed.namespaces[0].socket_lb.as_deref(), Some("disabled"));
        assert_eq!(parsed.problems.len(), 1, "a Pod without a name: {:?}", parsed.problems);
    }

    #[test]
    fn syntax_error_rejects_the_file() {
        let err = parse_manifest("kind: Service\nmetadata: {name: [unclosed\n").unwrap_err();
        assert!(matches!(err, ParseError::Syntax(_)));
    }

    #[test]
    fn wrong_api_version_is_reported() {
        let parsed =
            parse_manifest("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: s}\n").unwrap();
        assert!(parsed.slices.is_empty());
        assert!(parsed.problems[0].contains("unsupported apiVersion"));
    }
}
