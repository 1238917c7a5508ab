//! The fast way through a manifest: a document whose `apiVersion` and
//! `kind` come first (as kubectl, Helm and Kustomize write them) is decoded
//! straight into its k8s-openapi type, with no `serde_yaml::Value` tree in
//! between. That cuts the parse by about a third (the tree was built, then
//! walked again); parsing is about half of a cold start at 100k Services.
//!
//! Anything else ends the fast way for the whole file: [`super::parse`]
//! then reads it through `Value`, which tells a syntax error (the file is
//! rejected) from a bad object (only it is skipped) and names what went
//! wrong. A file is never half read one way and half the other.

use k8s_openapi::{
    api::{
        core::v1::{Endpoints, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{
    Deserialize as _, Deserializer,
    de::{self, MapAccess, value::MapAccessDeserializer},
};

/// One document, decoded as far as the model needs it.
#[derive(Debug)]
pub(super) enum Decoded {
    /// An empty document (a trailing `---`).
    Empty,
    /// Boxed: three times the size of the others.
    Service(Box<Service>),
    Slice(EndpointSlice),
    Endpoints(Endpoints),
    /// A Pod's metadata (the rest is not read).
    Pod(ObjectMeta),
    /// A Namespace's metadata.
    Namespace(ObjectMeta),
    /// Any other kind or apiVersion, with its metadata (for its name).
    Other {
        kind: String,
        api_version: String,
        metadata: ObjectMeta,
    },
}

/// Decodes every document of `text` the fast way; `None` if any document
/// cannot be (the caller then reads the file through `Value`).
pub(super) fn decode_all(text: &str) -> Option<Vec<Decoded>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        // Stop at the first failure: after a syntax error the parser
        // would keep yielding failing documents.
        docs.push(doc.deserialize_any(DocumentVisitor).ok()?);
    }
    Some(docs)
}

/// Only the metadata of an object; its other fields are skipped unread.
#[derive(serde::Deserialize)]
struct MetadataOnly {
    #[serde(default)]
    metadata: ObjectMeta,
}

struct DocumentVisitor;

impl<'de> de::Visitor<'de> for DocumentVisitor {
    type Value = Decoded;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Kubernetes object with apiVersion and kind first")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Decoded, E> {
        Ok(Decoded::Empty)
    }

    fn visit_none<E: de::Error>(self) -> Result<Decoded, E> {
        Ok(Decoded::Empty)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Decoded, A::Error> {
        let (mut kind, mut api_version) = (None::<String>, None::<String>);
        while kind.is_none() || api_version.is_none() {
            match map.next_key::<std::borrow::Cow<'de, str>>()?.as_deref() {
                Some("kind") => kind = Some(map.next_value()?),
                Some("apiVersion") => api_version = Some(map.next_value()?),
                // A body field before the type is known, or no type.
                _ => return Err(de::Error::custom("apiVersion and kind do not come first")),
            }
        }
        let (kind, api_version) = (kind.unwrap_or_default(), api_version.unwrap_or_default());
        // The rest of the map goes to the type's own decoder, which skips
        // fields it does not know, as a full decode would.
        let rest = MapAccessDeserializer::new(map);
        Ok(match (kind.as_str(), api_version.as_str()) {
            ("Service", "v1") => Decoded::Service(Box::new(Service::deserialize(rest)?)),
            ("EndpointSlice", "discovery.k8s.io/v1") => Decoded::Slice(EndpointSlice::deserialize(rest)?),
            ("Endpoints", "v1") => Decoded::Endpoints(Endpoints::deserialize(rest)?),
            ("Pod", "v1") => Decoded::Pod(MetadataOnly::deserialize(rest)?.metadata),
            ("Namespace", "v1") => Decoded::Namespace(MetadataOnly::deserialize(rest)?.metadata),
            // A List's items are each their own object, skipped alone when
            // bad: the `Value` way does that.
            ("List", _) => return Err(de::Error::custom("a List")),
            _ => Decoded::Other { metadata: MetadataOnly::deserialize(rest)?.metadata, kind, api_version },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_first_documents_decode_straight_into_their_types() {
        let docs = decode_all(
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\nunknownField: 1\n---\n\
             kind: EndpointSlice\napiVersion: discovery.k8s.io/v1\nmetadata: {name: a-1}\naddressType: IPv4\nendpoints: []\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {anything: [1, 2]}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: not-read}\n---\n",
        )
        .expect("every document is head-first");
        assert!(
            matches!(&docs[0], Decoded::Service(s) if s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port == 80)
        );
        assert!(matches!(&docs[1], Decoded::Slice(s) if s.address_type == "IPv4"));
        assert!(
            matches!(&docs[2], Decoded::Other { kind, metadata, .. } if kind == "Deployment" && metadata.name.as_deref() == Some("d"))
        );
        assert!(matches!(&docs[3], Decoded::Pod(meta) if meta.name.as_deref() == Some("p")));
        assert!(matches!(docs[4], Decoded::Empty), "the trailing ---");
    }

    #[test]
    fn anything_else_sends_the_whole_file_the_slow_way() {
        let good = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n";
        for other in [
            "metadata: {name: b}\napiVersion: v1\nkind: Service\n",
            "apiVersion: v1\nkind: List\nitems: []\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: b}\nspec: {ports: [{port: eighty}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: [unclosed\n",
            "just a string\n",
        ] {
            assert!(decode_all(&format!("{good}{other}")).is_none(), "{other}");
        }
    }
}
