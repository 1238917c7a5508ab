//! One manifest file -> typed objects. Multi-document YAML, JSON (a YAML
//! subset) and `kind: List` are accepted; kinds other than Service,
//! EndpointSlice, Endpoints, Pod and Namespace are ignored (of Pods and
//! Namespaces only the metadata is read: the socket-translation opt-out).

use std::sync::Arc;

use k8s_openapi::{api::core::v1::Endpoints, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::Deserialize as _;

use super::head_first::{self, Decoded};
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
/// Files whose documents all put `apiVersion` and `kind` first take the
/// fast way ([`head_first`]); the others, and any file with a problem, are
/// read through `serde_yaml::Value`.
pub(crate) fn parse_manifest(text: &str) -> Result<ParsedFile, ParseError> {
    let mut out = ParsedFile::default();
    if let Some(docs) = head_first::decode_all(text) {
        for (index, doc) in docs.into_iter().enumerate() {
            add_decoded(&mut out, doc, index + 1);
        }
        return Ok(out);
    }
    parse_via_value(text)
}

/// Parses a whole file through `serde_yaml::Value` (the slow way).
fn parse_via_value(text: &str) -> Result<ParsedFile, ParseError> {
    let mut out = ParsedFile::default();
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ParseError::Syntax(e.to_string()))?;
        docs.push(value);
    }
    for (index, doc) in docs.into_iter().enumerate() {
        add_value(&mut out, doc, index + 1);
    }
    Ok(out)
}

/// How a problem names document `number`.
fn what(number: usize, kind: &str, metadata: &ObjectMeta) -> String {
    format!("document {number} ({kind} {})", metadata.name.as_deref().unwrap_or("<unnamed>"))
}

/// Adds one document read through `Value` (the slow way).
fn add_value(out: &mut ParsedFile, doc: serde_yaml::Value, number: usize) {
    if doc.is_null() {
        return; // empty document, e.g. a trailing `---`
    }
    let text = |key: &str| doc.get(key).and_then(serde_yaml::Value::as_str).unwrap_or("").to_owned();
    let (kind, api_version) = (text("kind"), text("apiVersion"));
    if kind == "List" {
        let items = doc.get("items").and_then(serde_yaml::Value::as_sequence).cloned().unwrap_or_default();
        for item in items {
            add_value(out, item, number);
        }
        return;
    }
    let name = doc.get("metadata").and_then(|m| m.get("name")).and_then(serde_yaml::Value::as_str).map(str::to_owned);
    let named = ObjectMeta { name, ..ObjectMeta::default() };
    let decoded = match (kind.as_str(), api_version.as_str()) {
        ("Service", "v1") => decode(doc).map(|svc| Decoded::Service(Box::new(svc))),
        ("EndpointSlice", "discovery.k8s.io/v1") => decode(doc).map(Decoded::Slice),
        ("Endpoints", "v1") => decode(doc).map(Decoded::Endpoints),
        ("Pod", "v1") => metadata(&doc).map(Decoded::Pod),
        ("Namespace", "v1") => metadata(&doc).map(Decoded::Namespace),
        _ => Ok(Decoded::Other { kind: kind.clone(), api_version, metadata: named.clone() }),
    };
    match decoded {
        Ok(decoded) => add_decoded(out, decoded, number),
        Err(e) => out.problems.push(format!("{}: {e}", what(number, &kind, &named))),
    }
}

/// Adds one decoded document, or the reason it is skipped.
fn add_decoded(out: &mut ParsedFile, doc: Decoded, number: usize) {
    let unnamed = |out: &mut ParsedFile, kind: &str, meta: &ObjectMeta| {
        out.problems.push(format!("{}: metadata.name is required", what(number, kind, meta)));
    };
    match doc {
        Decoded::Empty => {}
        Decoded::Service(svc) if svc.metadata.name.is_some() => out.services.push(Arc::new(ServiceObj::from(&*svc))),
        Decoded::Service(svc) => unnamed(out, "Service", &svc.metadata),
        Decoded::Slice(slice) if slice.metadata.name.is_some() => out.slices.push(Arc::new(SliceObj::from(&slice))),
        Decoded::Slice(slice) => unnamed(out, "EndpointSlice", &slice.metadata),
        Decoded::Endpoints(ep) if ep.metadata.name.is_some() => out.endpoints.push(Arc::new(ep)),
        Decoded::Endpoints(ep) => unnamed(out, "Endpoints", &ep.metadata),
        Decoded::Pod(meta) if meta.name.is_some() => out.pods.push(Arc::new(PodObj::from(&meta))),
        Decoded::Pod(meta) => unnamed(out, "Pod", &meta),
        Decoded::Namespace(meta) if meta.name.is_some() => out.namespaces.push(Arc::new(NamespaceObj::from(&meta))),
        Decoded::Namespace(meta) => unnamed(out, "Namespace", &meta),
        Decoded::Other { kind, api_version, metadata } => {
            let what = what(number, &kind, &metadata);
            match kind.as_str() {
                "Service" | "EndpointSlice" | "Endpoints" | "Pod" | "Namespace" => {
                    out.problems.push(format!("{what}: unsupported apiVersion {api_version:?}"));
                }
                "" => out.problems.push(format!("{what}: no kind")),
                _ => tracing::debug!("ignoring {what}"),
            }
        }
    }
}

/// An object's metadata (the rest is not read, so it need not be valid).
fn metadata(doc: &serde_yaml::Value) -> Result<ObjectMeta, String> {
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
    fn the_fast_way_reads_what_the_value_way_reads() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: n, annotations: {x: y}}\n\
             spec: {type: LoadBalancer, clusterIPs: [10.0.0.1, 'fd00::1'], ipFamilyPolicy: PreferDualStack, \
             ports: [{name: p, port: 80, targetPort: 8080, nodePort: 30080}], externalTrafficPolicy: Local}\n\
             status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {namespace: n}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: a-1, namespace: n, \
             labels: {kubernetes.io/service-name: a}}\naddressType: IPv4\nports: [{name: p, port: 8080}]\n\
             endpoints: [{addresses: [10.1.0.1], conditions: {ready: true}, nodeName: n1, zone: z}]\n---\n\
             apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\nsubsets: [{addresses: [{ip: 10.2.0.1}]}]\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: p, uid: u}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n---\n\
             apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: old}\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        assert!(head_first::decode_all(text).is_some(), "this file takes the fast way");
        let fast = parse_manifest(text).unwrap();
        assert_eq!(fast, parse_via_value(text).unwrap());
        assert_eq!((fast.services.len(), fast.slices.len(), fast.endpoints.len()), (1, 1, 1));
        assert_eq!(fast.problems.len(), 2, "{:?}", fast.problems);
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
