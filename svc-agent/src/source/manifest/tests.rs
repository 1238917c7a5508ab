//! A re-read hands on exactly what changed in the files that changed.

use std::path::{Path, PathBuf};

use super::{Allocation, Changes, ManifestDir};
use crate::source::Change;

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("svc-manifest-{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `file` the way publishers do: a hidden temporary, renamed.
    fn write(&self, file: &str, text: &str) {
        let tmp = self.0.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.0.join(file)).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.0.join(file)).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("leaving {}: {e}", self.0.display());
        }
    }
}

fn service(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec: {{clusterIP: {ip}, selector: {{app: {name}}}, ports: [{{port: 80, protocol: TCP}}]}}\n"
    )
}

fn slice(name: &str, service: &str, addr: &str) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: [{{port: 8080, protocol: TCP}}]\n\
         endpoints: [{{addresses: [{addr}], conditions: {{ready: true}}}}]\n"
    )
}

fn dir(scratch: &Scratch) -> ManifestDir {
    let allocation = Allocation {
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        node_ports: 30000..=32767,
        previous: super::ipam::Sticky::default(),
    };
    ManifestDir::new(scratch.path(), allocation)
}

/// The changes as "upsert ns/name" and "delete ns/name" lines, sorted.
fn named(changes: &Changes) -> (Vec<String>, Vec<String>) {
    fn lines<T>(changes: &[Change<T>], name: impl Fn(&T) -> String) -> Vec<String> {
        let mut out: Vec<String> = changes
            .iter()
            .map(|c| match c {
                Change::Upsert(o) => format!("upsert {}", name(o)),
                Change::Delete { namespace, name } => format!("delete {namespace}/{name}"),
                Change::Replace { .. } => "replace".to_owned(),
            })
            .collect();
        out.sort();
        out
    }
    (
        lines(&changes.services, |s| format!("{}/{}", s.key.namespace, s.key.name)),
        lines(&changes.slices, |s| format!("{}/{}", s.namespace, s.name)),
    )
}

#[test]
fn a_changed_file_hands_on_only_its_objects() {
    let scratch = Scratch::new("changed");
    scratch.write("a.yaml", &format!("{}---\n{}", service("web", "10.96.0.10"), slice("web-1", "web", "10.1.0.1")));
    scratch.write("b.yaml", &slice("db-1", "db", "10.1.0.2"));
    let mut manifests = dir(&scratch);
    let first = manifests.reload().unwrap();
    assert_eq!(
        named(&first),
        (vec!["upsert default/web".into()], vec!["upsert default/db-1".into(), "upsert default/web-1".into()])
    );
    assert_eq!(manifests.snapshot().slices.len(), 2);

    // Nothing changed: nothing handed on.
    assert!(manifests.reload().unwrap().is_empty());

    // One slice edited: only it, and the Services are not recomputed.
    scratch.write("b.yaml", &slice("db-1", "db", "10.1.0.3"));
    let edited = manifests.reload().unwrap();
    assert_eq!(named(&edited), (vec![], vec!["upsert default/db-1".into()]));

    // A file rewritten with the same objects changes nothing.
    scratch.write("b.yaml", &slice("db-1", "db", "10.1.0.3"));
    assert!(manifests.reload().unwrap().is_empty());

    // A file removed: its objects are deleted.
    scratch.remove("a.yaml");
    let removed = manifests.reload().unwrap();
    assert_eq!(named(&removed), (vec!["delete default/web".into()], vec!["delete default/web-1".into()]));
    assert!(manifests.snapshot().services.is_empty());
}

#[test]
fn a_duplicate_takes_over_when_the_first_definition_goes() {
    let scratch = Scratch::new("duplicate");
    scratch.write("a.yaml", &slice("db-1", "db", "10.1.0.2"));
    scratch.write("b.yaml", &slice("db-1", "db", "10.1.0.9"));
    let mut manifests = dir(&scratch);
    manifests.reload().unwrap();
    let in_force = |m: &ManifestDir| m.snapshot().slices[0].endpoints[0].address.map(|a| a.to_string());
    assert_eq!(in_force(&manifests).as_deref(), Some("10.1.0.2"), "the first file in name order");
    scratch.remove("a.yaml");
    let changes = manifests.reload().unwrap();
    assert_eq!(named(&changes), (vec![], vec!["upsert default/db-1".into()]));
    assert_eq!(in_force(&manifests).as_deref(), Some("10.1.0.9"));
}

#[test]
fn a_broken_file_keeps_its_last_good_content() {
    let scratch = Scratch::new("broken");
    scratch.write("a.yaml", &slice("db-1", "db", "10.1.0.2"));
    let mut manifests = dir(&scratch);
    manifests.reload().unwrap();
    scratch.write("a.yaml", "kind: [unclosed\n");
    assert!(manifests.reload().unwrap().is_empty());
    assert_eq!(manifests.snapshot().slices.len(), 1);
}

#[test]
fn a_re_read_of_named_files_looks_at_those_files_only() {
    let scratch = Scratch::new("named");
    scratch.write("a.yaml", &slice("web-1", "web", "10.1.0.1"));
    scratch.write("b.yaml", &slice("db-1", "db", "10.1.0.2"));
    let mut manifests = dir(&scratch);
    manifests.reload().unwrap();
    // Both change, one is named: only that one is read.
    scratch.write("a.yaml", &slice("web-1", "web", "10.1.0.3"));
    scratch.write("b.yaml", &slice("db-1", "db", "10.1.0.4"));
    let a = scratch.path().join("a.yaml");
    assert_eq!(named(&manifests.reload_files([a.clone()])), (vec![], vec!["upsert default/web-1".into()]));
    // Named again, unchanged: nothing.
    assert!(manifests.reload_files([a.clone()]).is_empty());
    // A new file, and a removed one, by name.
    scratch.write("c.yaml", &slice("api-1", "api", "10.1.0.5"));
    scratch.remove("a.yaml");
    let changes = manifests.reload_files([a, scratch.path().join("c.yaml")]);
    assert_eq!(named(&changes), (vec![], vec!["delete default/web-1".into(), "upsert default/api-1".into()]));
    // A name that was never a file changes nothing.
    assert!(manifests.reload_files([scratch.path().join("gone.yaml")]).is_empty());
    // The full re-read still finds what no event named.
    assert_eq!(named(&manifests.reload().unwrap()), (vec![], vec!["upsert default/db-1".into()]));
}
