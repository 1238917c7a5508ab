//! A real kube-apiserver (v1.20.2) with etcd on loopback, for the tests of
//! `--source kube`: an RAII guard around `scripts/apiserver/{build,start,stop}.sh`
//! (facts and measurements: scripts/apiserver/README.md).
//!
//! Each [`ApiServer`] has its own state directory `/tmp/svcapi-<pid>-<n>`
//! (store, certificates, token, logs, kubeconfig). Drop stops both
//! processes and removes the directory. The processes run in their own
//! session (they must outlive `start.sh`), so a watchdog, also in its own
//! session, stops them within a second if the test process dies without
//! unwinding (SIGKILL, Ctrl-C); directories of dead test processes that are
//! left anyway are removed by the next run's sweep.
//!
//! Objects are written with kube-rs server-side apply (field manager
//! `svc-tests`), which takes a few milliseconds: the tests measure the
//! agent's latency from just before the write.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fmt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Once, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use anyhow::{Context as _, Result, bail};
use kube::{
    Api, Client, Config,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::{cmd, source::Source};

/// Prefix of API server state directories under /tmp. Not the harness's
/// `svct-` prefix: its sweep would delete the directory of a running server.
const DIR_PREFIX: &str = "svcapi-";

/// Seconds `stop.sh` waits after SIGTERM before SIGKILL (see [`ApiServer::stop`]).
const STOP_TIMEOUT: &str = "3";

/// The field manager of every write.
const FIELD_MANAGER: &str = "svc-tests";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();
static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// `scripts/apiserver` in this workspace.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/apiserver")
}

/// `deploy/base/` in this workspace: the kustomize base operators apply
/// (`kubectl apply -k`), or an overlay over it.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

/// `deploy/overlays/example/`: the example kustomize overlay.
pub fn example_overlay_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/overlays/example")
}

/// Runs `build.sh` once per process: 0.2 s when the binary is cached, about
/// 6 minutes on a fresh machine (`cargo xtask test` runs it before the tests).
fn ensure_built() -> Result<()> {
    BUILT
        .get_or_init(|| {
            let script = scripts_dir().join("build.sh");
            match Command::new(&script).stdin(Stdio::null()).output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => Err(format!(
                    "{} failed ({}):\n{}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )),
                Err(e) => Err(format!("running {}: {e}", script.display())),
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building kube-apiserver: {e}"))
}

/// Stops and removes API server directories whose test process is gone.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/tmp") else { return };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else { continue };
        let Some(pid) = name.strip_prefix(DIR_PREFIX).and_then(|r| r.split_once('-')).map(|(p, _)| p) else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(|pid| !cmd::pid_alive(pid)) {
            let dir = entry.path();
            if let Err(e) = Command::new(scripts_dir().join("stop.sh")).arg(&dir).output() {
                eprintln!("svc-tests sweep: stop.sh {}: {e}", dir.display());
            }
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                eprintln!("svc-tests sweep: remove {}: {e}", dir.display());
            }
        }
    }
}

/// How the server authorizes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authz {
    /// Everything allowed (the default).
    AlwaysAllow,
    /// Roles enforced (the admin token is in `system:masters`).
    Rbac,
}

/// One object written through [`ApiServer::apply`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ObjectRef {
    kind: String,
    namespace: Option<String>,
    name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// The kinds [`ApiServer::apply`] knows: (apiVersion, kind) -> (plural, namespaced).
fn resource_of(api_version: &str, kind: &str) -> Result<(ApiResource, bool)> {
    let (plural, namespaced) = match (api_version, kind) {
        ("v1", "Service") => ("services", true),
        ("v1", "Endpoints") => ("endpoints", true),
        ("v1", "Node") => ("nodes", false),
        ("v1", "Namespace") => ("namespaces", false),
        ("v1", "Pod") => ("pods", true),
        ("v1", "ServiceAccount") => ("serviceaccounts", true),
        ("discovery.k8s.io/v1", "EndpointSlice") => ("endpointslices", true),
        _ => bail!("ApiServer::apply does not know {api_version} {kind}"),
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    Ok((ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural), namespaced))
}

/// A running (or stopped) kube-apiserver + etcd; see the module docs.
pub struct ApiServer {
    dir: PathBuf,
    authz: Authz,
    running: bool,
    watchdog: Option<Child>,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    /// What each `apply` unit wrote (for re-apply and `delete`).
    units: RefCell<BTreeMap<String, BTreeSet<ObjectRef>>>,
    /// Namespaces known to exist in the current store.
    namespaces: RefCell<BTreeSet<String>>,
    /// Services whose status was written (a later apply without one clears it).
    with_status: RefCell<BTreeSet<ObjectRef>>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer").field("dir", &self.dir).field("running", &self.running).finish_non_exhaustive()
    }
}

impl ApiServer {
    /// A new server on a fresh store (everything allowed); returns once it
    /// serves EndpointSlice v1 (5-9 s).
    pub fn new() -> Result<Self> {
        Self::with_authz(Authz::AlwaysAllow)
    }

    /// As [`Self::new`], with the given authorization mode.
    pub fn with_authz(authz: Authz) -> Result<Self> {
        crate::require_root();
        SWEEP.call_once(sweep_stale);
        ensure_built()?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/{DIR_PREFIX}{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let mut server = Self {
            dir,
            authz,
            running: false,
            watchdog: None,
            rt,
            client: None,
            units: RefCell::default(),
            namespaces: RefCell::default(),
            with_status: RefCell::default(),
        };
        server.watchdog = Some(server.spawn_watchdog()?);
        server.start(true)?;
        Ok(server)
    }

    /// A shell in its own session that stops the server and removes its
    /// directory once this process is gone.
    fn spawn_watchdog(&self) -> Result<Child> {
        use std::os::unix::process::CommandExt as _;
        let mut command = Command::new("sh");
        command
            .args(["-c", r#"while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" "$3"; rm -rf "$3""#, "watchdog"])
            .arg(std::process::id().to_string())
            .arg(scripts_dir().join("stop.sh"))
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: setsid is async-signal-safe and touches no shared memory.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command.spawn().context("spawn the API server watchdog")
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin kubeconfig (bearer token, `insecure-skip-tls-verify`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The server's certificate chain (self-signed; it names 127.0.0.1).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("certs/apiserver.crt")
    }

    /// `https://127.0.0.1:PORT`, from `DIR/env`.
    pub fn url(&self) -> Result<String> {
        let env_file = self.dir.join("env");
        let env = std::fs::read_to_string(&env_file).with_context(|| format!("read {}", env_file.display()))?;
        env.lines()
            .find_map(|l| l.strip_prefix("export APISERVER_URL="))
            .map(|v| v.trim_matches(['\'', '"']).to_owned())
            .with_context(|| format!("no APISERVER_URL in {}", env_file.display()))
    }

    /// The port of [`Self::url`].
    pub fn port(&self) -> Result<u16> {
        let url = self.url()?;
        url.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).with_context(|| format!("no port in {url}"))
    }

    /// Whether [`Self::start`] ran and [`Self::stop`] did not since.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// `start.sh DIR`: on the previous store, or (`fresh`) an empty one.
    /// Same port and token as before, so clients reconnect unchanged.
    pub fn start(&mut self, fresh: bool) -> Result<()> {
        if self.running {
            bail!("ApiServer::start: already running; stop() it first");
        }
        let mut command = Command::new(scripts_dir().join("start.sh"));
        command.arg(&self.dir).stdin(Stdio::null());
        if fresh {
            command.env("FRESH", "1");
        }
        if self.authz == Authz::Rbac {
            command.env("SVC_APISERVER_AUTHZ", "RBAC");
        }
        // A caller that sourced some DIR/env must not break etcd (see start.sh).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                command.env_remove(key);
            }
        }
        self.running = true; // from here on, Drop runs stop.sh (it is idempotent)
        cmd::run(&mut command).context("scripts/apiserver/start.sh")?;
        self.namespaces.borrow_mut().clear();
        let kubeconfig = self.kubeconfig();
        let client = self.rt.block_on(async {
            let kc = Kubeconfig::read_from(&kubeconfig)?;
            let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
            anyhow::Ok(Client::try_from(config)?)
        });
        self.client = Some(client.with_context(|| format!("kube client for {}", kubeconfig.display()))?);
        Ok(())
    }

    /// `stop.sh DIR`; the store is kept. With watches open (an agent
    /// connected), kube-apiserver 1.20 does not exit on SIGTERM until its
    /// long-running requests end, which they do not; so SIGKILL follows
    /// after [`STOP_TIMEOUT`] (about 4 s in all), not after stop.sh's 15 s.
    pub fn stop(&mut self) -> Result<()> {
        self.client = None;
        if self.running {
            self.running = false;
            cmd::run(
                Command::new(scripts_dir().join("stop.sh"))
                    .arg(&self.dir)
                    .env("STOP_TIMEOUT", STOP_TIMEOUT)
                    .stdin(Stdio::null()),
            )
            .context("scripts/apiserver/stop.sh")?;
        }
        Ok(())
    }

    /// Replaces this (stopped) server's store with `seed`'s (stopped too),
    /// as restoring an etcd backup would: the next [`Self::start`]`(false)`
    /// serves exactly the objects `seed` held. `seed` is consumed.
    pub fn replace_store_with(&mut self, mut seed: Self) -> Result<()> {
        if self.running || seed.running {
            bail!("replace_store_with: stop both servers first");
        }
        seed.stop()?;
        let mine = self.dir.join("etcd-data");
        if mine.exists() {
            std::fs::remove_dir_all(&mine).with_context(|| format!("remove {}", mine.display()))?;
        }
        let theirs = seed.dir.join("etcd-data");
        std::fs::rename(&theirs, &mine).with_context(|| format!("move {} to {}", theirs.display(), mine.display()))?;
        Ok(())
    }

    fn client(&self) -> Result<Client> {
        self.client.clone().context("the API server is not running")
    }

    /// `kubectl --kubeconfig DIR/kubeconfig ARGS...` as admin; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        cmd::run(Command::new("kubectl").arg("--kubeconfig").arg(self.kubeconfig()).args(args).stdin(Stdio::null()))
    }

    /// Creates or updates (server-side apply) every object in `yaml` (one or
    /// more documents). Kinds: Service, EndpointSlice (v1), Endpoints, Node,
    /// Namespace. Namespaces that do not exist yet are created first. A
    /// Service's `status` is written too (it is a subresource).
    pub fn apply_yaml(&self, yaml: &str) -> Result<Vec<String>> {
        let mut written = Vec::new();
        for doc in parse_docs(yaml)? {
            written.push(self.apply_object(doc)?.to_string());
        }
        Ok(written)
    }

    fn apply_object(&self, mut doc: Value) -> Result<ObjectRef> {
        let api_version = doc["apiVersion"].as_str().context("object without apiVersion")?.to_owned();
        let kind = doc["kind"].as_str().context("object without kind")?.to_owned();
        let name = doc["metadata"]["name"].as_str().with_context(|| format!("{kind} without a name"))?.to_owned();
        let (resource, namespaced) = resource_of(&api_version, &kind)?;
        let namespace = namespaced.then(|| doc["metadata"]["namespace"].as_str().unwrap_or("default").to_owned());
        let object = ObjectRef { kind: kind.clone(), namespace: namespace.clone(), name: name.clone() };
        if let Some(ns) = &namespace {
            self.ensure_namespace(ns)?;
            doc["metadata"]["namespace"] = json!(ns);
        }
        if kind == "Namespace" {
            // Applied as written: `ensure_namespace` must not re-apply it
            // bare (which would drop its annotations).
            self.namespaces.borrow_mut().insert(name.clone());
        }
        if kind == "Pod" {
            // The server assigns uids (`Source::pod_uid` reads it back), and
            // its ServiceAccount admission wants the namespace's `default`
            // account (no controller-manager here creates it).
            if let Some(meta) = doc["metadata"].as_object_mut() {
                meta.remove("uid");
            }
            let ns = namespace.clone().unwrap_or_default();
            self.apply_object(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": { "name": "default", "namespace": ns },
            }))?;
        }
        let status = if kind == "Service" { doc.as_object_mut().and_then(|o| o.remove("status")) } else { None };
        let client = self.client()?;
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(client, ns, &resource),
            None => Api::all_with(client, &resource),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.rt
            .block_on(api.patch(&name, &params, &Patch::Apply(&doc)))
            .with_context(|| format!("server-side apply of {object}"))?;
        // A Service's status is a subresource, not written by the apply
        // above. A merge patch replaces lists; `ingress: null` clears what
        // an earlier apply of the object wrote.
        let had_status = self.with_status.borrow().contains(&object);
        let status = match status {
            Some(status) => Some(status),
            None if had_status => Some(json!({ "loadBalancer": { "ingress": null } })),
            None => None,
        };
        if let Some(status) = status {
            let patch = json!({ "status": status });
            self.rt
                .block_on(api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)))
                .with_context(|| format!("status of {object}"))?;
            self.with_status.borrow_mut().insert(object.clone());
        }
        Ok(object)
    }

    fn ensure_namespace(&self, ns: &str) -> Result<()> {
        if self.namespaces.borrow().contains(ns) {
            return Ok(());
        }
        let api: Api<DynamicObject> = Api::all_with(self.client()?, &resource_of("v1", "Namespace")?.0);
        let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        self.rt
            .block_on(api.patch(ns, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&body)))
            .with_context(|| format!("creating namespace {ns}"))?;
        self.namespaces.borrow_mut().insert(ns.to_owned());
        Ok(())
    }

    /// A dynamic client for `kind` objects (in `namespace`, default
    /// "default", when the kind is namespaced).
    fn dynamic_api(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Result<Api<DynamicObject>> {
        let (resource, namespaced) = resource_of(api_version, kind)?;
        let client = self.client()?;
        Ok(if namespaced {
            Api::namespaced_with(client, namespace.unwrap_or("default"), &resource)
        } else {
            Api::all_with(client, &resource)
        })
    }

    /// Deletes one object; a missing one is fine.
    pub fn delete_object(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Result<()> {
        let api = self.dynamic_api(api_version, kind, namespace)?;
        // A scheduled Pod is only marked for deletion until its kubelet
        // confirms; there is none here, so it goes at once.
        let params = if kind == "Pod" {
            DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }
        } else {
            DeleteParams::default()
        };
        match self.rt.block_on(api.delete(name, &params)) {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting {kind} {}/{name}", namespace.unwrap_or("-"))),
        }
    }

    /// Deletes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) -> Result<()> {
        self.delete_object("v1", "Service", Some(namespace), name)
    }

    /// Deletes an EndpointSlice.
    pub fn delete_slice(&self, namespace: &str, name: &str) -> Result<()> {
        self.delete_object("discovery.k8s.io/v1", "EndpointSlice", Some(namespace), name)
    }

    /// The object as the server has it (e.g. the `clusterIP` it allocated).
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Result<Value> {
        let api = self.dynamic_api(api_version, kind, namespace)?;
        let object = self.rt.block_on(api.get(name)).with_context(|| format!("get {kind} {name}"))?;
        serde_json::to_value(object).context("serialize object")
    }

    fn delete_ref(&self, object: &ObjectRef) -> Result<()> {
        let api_version = if object.kind == "EndpointSlice" { "discovery.k8s.io/v1" } else { "v1" };
        self.delete_object(api_version, &object.kind, object.namespace.as_deref(), &object.name)
    }

    /// The last lines of the server's logs (for failure reports).
    fn log_tails(&self) -> String {
        let mut text = String::new();
        for name in ["kube-apiserver", "etcd"] {
            let path = self.dir.join("logs").join(format!("{name}.log"));
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            text.push_str(&format!("----- last lines of {} -----\n{tail}\n", path.display()));
        }
        text
    }
}

/// Multi-document YAML as JSON values (empty documents skipped).
fn parse_docs(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for de in serde_yaml::Deserializer::from_str(yaml) {
        let doc = Value::deserialize(de).with_context(|| format!("parse YAML:\n{yaml}"))?;
        if !doc.is_null() {
            docs.push(doc);
        }
    }
    Ok(docs)
}

impl Source for ApiServer {
    /// Server-side apply of every object of `unit`; objects an earlier
    /// apply of `unit` wrote that are not in `yaml` any more are deleted
    /// (as rewriting a manifest file removes them).
    fn apply(&self, unit: &str, yaml: &str) -> Result<()> {
        let mut now = BTreeSet::new();
        for doc in parse_docs(yaml)? {
            now.insert(self.apply_object(doc)?);
        }
        let before = self.units.borrow_mut().insert(unit.to_owned(), now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            self.delete_ref(gone)?;
        }
        Ok(())
    }

    fn delete(&self, unit: &str) -> Result<()> {
        let objects = self.units.borrow_mut().remove(unit).with_context(|| format!("unit {unit} was never applied"))?;
        for object in &objects {
            self.delete_ref(object)?;
        }
        Ok(())
    }

    fn agent_args(&self) -> Vec<OsString> {
        vec!["--source".into(), "kube".into(), "--kubeconfig".into(), self.kubeconfig().into()]
    }

    /// The API server's port: an agent in a test node's network namespace
    /// reaches it through a relay at `127.0.0.1:PORT` there.
    fn loopback_ports(&self) -> Vec<u16> {
        self.port().map(|p| vec![p]).unwrap_or_default()
    }

    /// The kubeconfig's directory (its certificates are there too).
    fn agent_mounts(&self) -> Vec<PathBuf> {
        vec![self.dir.clone()]
    }

    fn pod_uid(&self, namespace: &str, name: &str, _written: &str) -> Result<String> {
        let pod = self.get("v1", "Pod", Some(namespace), name)?;
        pod["metadata"]["uid"].as_str().map(str::to_owned).with_context(|| format!("Pod {namespace}/{name} has no uid"))
    }

    /// Creates (or relabels) the Node object: the agent reads the zone label.
    fn node_zone(&self, node_name: &str, zone: &str) -> Result<Vec<OsString>> {
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": node_name, "labels": { "topology.kubernetes.io/zone": zone } },
        });
        self.apply_object(node)?;
        Ok(Vec::new())
    }
}

/// A fresh API server as a boxed [`Source`] (the scenarios' entry point;
/// the server stops when the box is dropped).
pub fn kube_source() -> Result<Box<dyn Source>> {
    Ok(Box::new(ApiServer::new()?))
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.client = None;
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        if let Err(e) = self.stop() {
            eprintln!("svc-tests: stopping the API server in {}: {e:#}", self.dir.display());
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            cmd::reap(&mut watchdog);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("svc-tests: removing {}: {e}", self.dir.display());
        }
    }
}
