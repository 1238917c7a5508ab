//! The manifests operators apply (`deploy/`): kubectl accepts them, the
//! RBAC rules are exactly the minimal ones, and the DaemonSet gives the
//! agent what its flags point at. (kube_incluster.rs applies them to a
//! server that enforces RBAC and runs the agent with those roles.)

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde::Deserialize as _;
use serde_json::{Value, json};
use svc_tests::{
    agent_bin,
    apiserver::{ApiServer, deploy_dir, example_overlay_dir},
};

/// Every manifest of the kustomize base (deploy/base/, without its
/// kustomization.yaml), in file name order.
fn manifest_files() -> Result<Vec<PathBuf>> {
    let dir = deploy_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("read {}", dir.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no manifests in {}", dir.display());
    Ok(files)
}

/// Every object of every manifest.
fn objects() -> Result<Vec<Value>> {
    let mut all = Vec::new();
    for file in manifest_files()? {
        let text = std::fs::read_to_string(&file)?;
        for de in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(de).with_context(|| format!("parse {}", file.display()))?;
            if !doc.is_null() {
                all.push(doc);
            }
        }
    }
    Ok(all)
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn only<'a>(objects: &'a [Value], kind: &str) -> Result<&'a Value> {
    match of_kind(objects, kind).as_slice() {
        [one] => Ok(one),
        other => bail!("expected exactly one {kind} in deploy/, found {}", other.len()),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

#[test]
fn manifests_pass_kubectl_dry_run() -> Result<()> {
    // kubectl needs a server for its schemas and resource mapping, even for
    // a client-side dry run: a real (1.20) API server, so the manifests
    // also stay valid for older clusters.
    let api = ApiServer::new()?;
    let out =
        api.kubectl(&["apply", "--dry-run=client", "--validate=strict", "-k", &deploy_dir().display().to_string()])?;
    let objects = objects()?;
    for object in &objects {
        // `daemonset.apps/svc-agent created (dry run)`
        let kind = object["kind"].as_str().context("object without kind")?.to_lowercase();
        let name = object["metadata"]["name"].as_str().context("object without name")?;
        let accepted = out.lines().any(|l| {
            l.ends_with(&format!("/{name} created (dry run)"))
                && l.split('/').next().is_some_and(|k| k == kind || k.starts_with(&format!("{kind}.")))
        });
        ensure!(accepted, "kubectl did not accept {kind} {name}; it said:\n{out}");
    }
    ensure!(out.lines().count() == objects.len(), "not one line per object:\n{out}");
    Ok(())
}

#[test]
fn rbac_is_exactly_the_minimal_rules() -> Result<()> {
    let objects = objects()?;
    ensure!(of_kind(&objects, "Role").is_empty() && of_kind(&objects, "RoleBinding").is_empty(), "no namespaced roles");
    let role = only(&objects, "ClusterRole")?;
    ensure!(role.get("aggregationRule").is_none(), "an aggregated ClusterRole can grow: {role}");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().context("ClusterRole without rules")? {
        for key in ["resourceNames", "nonResourceURLs"] {
            ensure!(rule.get(key).is_none(), "unexpected {key} in {rule}");
        }
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    granted.insert((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    let expected: BTreeSet<(String, String, String)> = [
        ("", "services", "list"),
        ("", "services", "watch"),
        ("discovery.k8s.io", "endpointslices", "list"),
        ("discovery.k8s.io", "endpointslices", "watch"),
        ("", "nodes", "get"),
        ("", "nodes", "list"),
        ("", "nodes", "watch"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
    ]
    .into_iter()
    .map(|(g, r, v)| (g.to_owned(), r.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(granted, expected, "ClusterRole rules (apiGroup, resource, verb)");

    // Bound to the agent's service account, which the DaemonSet uses.
    let binding = only(&objects, "ClusterRoleBinding")?;
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]})
    );
    let account = only(&objects, "ServiceAccount")?;
    let subject = json!([{
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": account["metadata"]["namespace"],
    }]);
    assert_eq!(binding["subjects"], subject, "binding subjects");
    let ds = only(&objects, "DaemonSet")?;
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], account["metadata"]["name"]);
    assert_eq!(ds["metadata"]["namespace"], account["metadata"]["namespace"]);
    Ok(())
}

/// `--flag=value` or `--flag value` from an argument list.
fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix(&format!("--{name}="))
            .map(str::to_owned)
            .or_else(|| (a == &format!("--{name}")).then(|| args.get(i + 1).cloned()).flatten())
    })
}

/// The host path that backs `path` inside the container, through the
/// container's volume mounts and the pod's hostPath volumes.
fn host_path_of(pod: &Value, container: &Value, path: &str) -> Option<String> {
    let mount = container["volumeMounts"]
        .as_array()?
        .iter()
        .filter(|m| m["mountPath"].as_str().is_some_and(|p| Path::new(path).starts_with(p)))
        .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))?;
    let volume = pod["volumes"].as_array()?.iter().find(|v| v["name"] == mount["name"])?;
    let base = volume["hostPath"]["path"].as_str()?;
    let rest = Path::new(path).strip_prefix(mount["mountPath"].as_str()?).ok()?;
    let host: PathBuf = Path::new(base).join(rest).components().collect();
    Some(host.display().to_string())
}

#[test]
fn daemonset_wires_the_agent_to_the_host() -> Result<()> {
    let objects = objects()?;
    let ds = only(&objects, "DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().context("no containers")?;
    ensure!(containers.len() == 1, "one container expected");
    let c = &containers[0];
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    let args = &argv[1..];

    // The image's binary (Dockerfile) and only flags the agent knows.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("../../Dockerfile")).context("read Dockerfile")?;
    ensure!(
        dockerfile.contains(&format!("ENTRYPOINT [\"{}\"]", argv[0])),
        "the DaemonSet runs {}, which the Dockerfile does not install as its entrypoint",
        argv[0]
    );
    assert_eq!(args.first().map(String::as_str), Some("run"), "{argv:?}");
    let help = Command::new(agent_bin()?).args(["run", "--help"]).output()?;
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let name = arg.split('=').next().unwrap_or(arg);
        ensure!(
            help.contains(&format!("{name} ")) || help.contains(&format!("{name}\n")),
            "svc-agent run has no {name}"
        );
    }
    assert_eq!(flag(args, "source").as_deref(), Some("kube"));

    // Host network (node addresses, host netns cookie); privileged (bpf(),
    // cgroup attach); the node name from the downward API.
    assert_eq!(pod["hostNetwork"], json!(true));
    assert_eq!(c["securityContext"]["privileged"], json!(true));
    let env = c["env"].as_array().context("no env")?;
    let node_name = env.iter().find(|e| e["name"] == "NODE_NAME").context("no NODE_NAME")?;
    assert_eq!(node_name["valueFrom"]["fieldRef"]["fieldPath"], json!("spec.nodeName"));

    // --cgroup is the host's cgroup v2 root, --bpffs a directory on the
    // host's bpffs, both through hostPath volumes.
    let cgroup = flag(args, "cgroup").context("no --cgroup: the container's own cgroup namespace would be used")?;
    assert_eq!(host_path_of(pod, c, &cgroup).as_deref(), Some("/sys/fs/cgroup"), "--cgroup {cgroup}");
    let bpffs = flag(args, "bpffs").context("no --bpffs")?;
    let host_bpffs = host_path_of(pod, c, &bpffs).with_context(|| format!("--bpffs {bpffs} is not on a hostPath"))?;
    ensure!(Path::new(&host_bpffs).starts_with("/sys/fs/bpf"), "--bpffs {bpffs} is {host_bpffs} on the host");

    // Readiness is /readyz (first sync programmed), liveness /healthz, on
    // the port of --metrics-addr.
    let metrics = flag(args, "metrics-addr").context("no --metrics-addr")?;
    let port: u16 = metrics.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).context("bad --metrics-addr")?;
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], json!("/readyz"));
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], json!(port));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], json!("/healthz"));
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], json!(port));

    // Requests and limits; every node, whatever its taints.
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            ensure!(c["resources"][kind][resource].is_string(), "no {kind}.{resource}");
        }
    }
    let tolerations = pod["tolerations"].as_array().context("no tolerations")?;
    ensure!(
        tolerations.iter().any(|t| t["operator"] == "Exists" && t.get("key").is_none() && t.get("effect").is_none()),
        "the DaemonSet does not tolerate every taint: {tolerations:?}"
    );
    Ok(())
}

/// The example overlay renders (`kubectl kustomize`) to the base with its
/// changes, and that rendering is accepted by a real API server (client
/// dry run): the image, the extra agent flags (which the agent parses),
/// the log level.
#[test]
fn example_overlay_renders_and_passes_kubectl_dry_run() -> Result<()> {
    let overlay = example_overlay_dir().display().to_string();
    let out = Command::new("kubectl").args(["kustomize", &overlay]).output()?;
    ensure!(out.status.success(), "kubectl kustomize {overlay}: {}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout)?;
    let daemonset = serde_yaml::Deserializer::from_str(&rendered)
        .map(Value::deserialize)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .find(|o| o["kind"] == "DaemonSet")
        .context("no DaemonSet in the overlay's output")?;
    let container = &daemonset["spec"]["template"]["spec"]["containers"][0];
    ensure!(container["image"] == "registry.example.com/svc-agent:0.1.0", "image: {}", container["image"]);
    let args = strings(&container["args"]);
    for flag in ["--nodeport-addresses=10.0.0.0/8", "--devices=eth0", "--service-cidr=10.96.0.0/16,fd00:96::/108"] {
        ensure!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let log = container["env"].as_array().into_iter().flatten().find(|e| e["name"] == "RUST_LOG");
    ensure!(log.is_some_and(|e| e["value"] == "info,svc_agent=debug"), "RUST_LOG: {log:?}");
    // The agent accepts every flag the overlay sets.
    let mut run = Command::new(agent_bin()?);
    run.args(&args).arg("--help");
    let help = run.output()?;
    ensure!(help.status.success(), "svc-agent {args:?}: {}", String::from_utf8_lossy(&help.stderr));

    let api = ApiServer::new()?;
    let applied = api.kubectl(&["apply", "--dry-run=client", "--validate=strict", "-k", &overlay])?;
    ensure!(applied.contains("daemonset.apps/svc-agent created (dry run)"), "{applied}");
    Ok(())
}
