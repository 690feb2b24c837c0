//! Real Kubernetes clients through lite-apiserver, online and offline (issue 5): kubectl
//! (the default one plus the oldest and newest shipped), the official Python client in a
//! virtualenv, and client-go's reflector protocol (list, watch, bookmarks, resume, 410,
//! discovery, protobuf) played with the harness client. "Offline" means the fake cloud was
//! stopped after the same requests had been answered once online.

mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const SEEDED_PODS: [&str; 3] = ["db-1", "web-1", "web-2"];
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// A bound for any one client command (kubectl, python) that is expected to finish.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The names of a list's items.
fn item_names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().unwrap_or_else(|| panic!("not a list: {list}"));
    items
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn assert_lists_seeded_pods(list: &Value) {
    let names = item_names(list);
    for seeded in SEEDED_PODS {
        assert!(names.iter().any(|n| n == seeded), "{seeded} missing from {names:?}");
    }
}

fn assert_served_from_cache(resp: &Response) {
    assert_eq!(
        resp.header("x-lite-apiserver-cache"),
        Some("hit"),
        "expected a cache answer: {:?}",
        resp.headers
    );
}

// ---------------------------------------------------------------------------------------
// kubectl
// ---------------------------------------------------------------------------------------

/// Where the Google Cloud CLI ships its versioned kubectl binaries.
const GCLOUD_KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The kubectl on PATH (`None`), or the shipped `kubectl.<version>`; `None` with a printed
/// note when it is not installed, so a machine without it skips rather than fails.
fn kubectl_binary(version: Option<&str>) -> Option<PathBuf> {
    let found = match version {
        Some(version) => Some(Path::new(GCLOUD_KUBECTL_DIR).join(format!("kubectl.{version}"))),
        None => std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|dir| dir.join("kubectl")).find(|p| p.is_file())
        }),
    }
    .filter(|path| path.is_file());
    if found.is_none() {
        eprintln!(
            "note: skipping: kubectl {} is not installed",
            version.unwrap_or("(default, on PATH)")
        );
    }
    found
}

/// One kubectl binary with its own HOME, kubeconfig (the admin client certificate, server =
/// lite-apiserver) and discovery cache dir, so every discovery request reaches the proxy.
struct Kubectl {
    bin: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

/// What a finished kubectl printed.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(bin: &Path, edge: &Edge) -> Kubectl {
        let dir = edge.env.dir.join("kubectl");
        std::fs::create_dir_all(dir.join("home")).expect("create kubectl HOME");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&edge.env.pki, edge.lite.port))
            .expect("write kubeconfig");
        let kubectl =
            Kubectl { bin: bin.to_path_buf(), dir, kubeconfig, cache_dir: PathBuf::new() };
        kubectl.with_fresh_cache("online")
    }

    /// The same kubectl with an empty discovery cache: it must ask the proxy for discovery.
    fn with_fresh_cache(&self, name: &str) -> Kubectl {
        Kubectl {
            bin: self.bin.clone(),
            dir: self.dir.clone(),
            kubeconfig: self.kubeconfig.clone(),
            cache_dir: self.dir.join(format!("cache-{name}")),
        }
    }

    /// Starts `kubectl <args>` (through `env`, to give it its own HOME).
    fn spawn(&self, args: &[&str]) -> Proc {
        let mut argv = vec![
            format!("HOME={}", self.dir.join("home").display()),
            self.bin.display().to_string(),
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--cache-dir={}", self.cache_dir.display()),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        Proc::spawn(Path::new("/usr/bin/env"), &argv)
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut proc = self.spawn(args);
        let status = proc.wait_output(COMMAND_TIMEOUT);
        proc.kill();
        let status = status.unwrap_or_else(|| {
            panic!("kubectl {args:?} still running after {COMMAND_TIMEOUT:?}:\n{}", proc.output())
        });
        Run { success: status.success(), stdout: proc.stdout(), stderr: proc.stderr() }
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(run.success, "kubectl {args:?} failed:\n{}\n{}", run.stderr, run.stdout);
        run.stdout
    }
}

fn kubeconfig_yaml(pki: &Pki, port: u16) -> String {
    let path = |file: &str| pki.path(file).display().to_string();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: edge\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
         certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\n\
         contexts:\n- name: edge\n  context: {{cluster: edge, user: admin}}\ncurrent-context: edge\n",
        path("ca.crt"),
        path("admin.crt"),
        path("admin.key"),
    )
}

/// Writes `object` as a JSON manifest (kubectl reads JSON as well as YAML).
fn manifest(edge: &Edge, file: &str, object: &Value) -> String {
    let path = edge.env.dir.join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(object).expect("serialize manifest"))
        .expect("write manifest");
    path.display().to_string()
}

/// The server-side Table has the pod columns kube prints; a client-side fallback for an
/// unknown answer would show only NAME and AGE.
fn assert_pod_table(table: &str) {
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(header.contains(column), "no {column} column in:\n{table}");
    }
    for name in SEEDED_PODS {
        assert!(
            table.lines().any(|line| line.starts_with(name) && line.contains("Running")),
            "no {name} row in:\n{table}"
        );
    }
}

/// The reads kubectl makes in the field, each checked for content. Returns the last
/// answers, which the offline reads must reproduce.
fn kubectl_reads(kubectl: &Kubectl) -> (String, Value, String) {
    let table = kubectl.ok(&["get", "pods"]);
    assert_pod_table(&table);
    let list: Value =
        serde_json::from_str(&kubectl.ok(&["get", "pods", "-o", "json"])).expect("-o json is JSON");
    assert_lists_seeded_pods(&list);
    let names = kubectl.ok(&["get", "pods", "-o", "name"]);
    for name in SEEDED_PODS {
        assert!(
            names.lines().any(|line| line == format!("pod/{name}")),
            "no pod/{name} in:\n{names}"
        );
    }
    let widgets = kubectl.ok(&["get", "widgets"]);
    assert!(
        widgets.lines().any(|line| line.starts_with("sprocket")),
        "no sprocket widget in:\n{widgets}"
    );
    let version: Value =
        serde_json::from_str(&kubectl.ok(&["get", "--raw", "/version"])).expect("/version is JSON");
    assert_eq!(version["gitVersion"], "v1.30.0-fake", "{version}");
    (table, list, widgets)
}

/// create, apply (create then configure) and delete, each checked on the cloud itself.
fn kubectl_writes(kubectl: &Kubectl, edge: &Edge) {
    let created = manifest(edge, "created.json", &pod("kubectl-created"));
    let out = kubectl.ok(&["create", "-f", &created]);
    assert!(out.contains("pod/kubectl-created created"), "{out}");
    edge.upstream_pod("kubectl-created").expect_status(200);

    let mut applied_pod = pod("kubectl-applied");
    let applied = manifest(edge, "applied.json", &applied_pod);
    let out = kubectl.ok(&["apply", "-f", &applied]);
    assert!(out.contains("pod/kubectl-applied created"), "{out}");
    applied_pod["metadata"]["labels"]["revision"] = json!("2");
    let reapplied = manifest(edge, "reapplied.json", &applied_pod);
    let out = kubectl.ok(&["apply", "-f", &reapplied]);
    assert!(out.contains("pod/kubectl-applied configured"), "{out}");
    let upstream = edge.upstream_pod("kubectl-applied").expect_status(200).json();
    assert_eq!(upstream["metadata"]["labels"]["revision"], "2", "{upstream}");

    let out = kubectl.ok(&["delete", "pod", "kubectl-created", "kubectl-applied"]);
    assert!(
        out.contains("\"kubectl-created\" deleted") && out.contains("\"kubectl-applied\" deleted"),
        "{out}"
    );
    for name in ["kubectl-created", "kubectl-applied"] {
        assert_eq!(edge.upstream_pod(name).status, 404, "{name} still exists upstream");
    }
}

/// Waits until `proc` has printed `text` on stdout; panics if it exits first.
fn wait_for_output(proc: &mut Proc, text: &str, what: &str) {
    let seen = wait_for(EVENT_TIMEOUT, || {
        if proc.stdout().contains(text) {
            return Some(());
        }
        if let Some(status) = proc.exit_status() {
            panic!("{what} exited ({status}) before printing {text:?}:\n{}", proc.output());
        }
        None
    });
    assert!(
        seen.is_some(),
        "{what} did not print {text:?} within {EVENT_TIMEOUT:?}:\n{}",
        proc.output()
    );
}

/// `get pods -w` prints the list, then a pod created in the cloud.
fn kubectl_watch_sees_upstream_change(kubectl: &Kubectl, edge: &Edge) {
    let mut watch = kubectl.spawn(&["get", "pods", "-w"]);
    wait_for_output(&mut watch, "web-1", "kubectl get pods -w");
    edge.create_pod_upstream("kubectl-watched");
    wait_for_output(&mut watch, "kubectl-watched", "kubectl get pods -w");
    watch.kill();
    edge.delete_pod_upstream("kubectl-watched");
}

/// Online: reads, writes and a watch; offline with a fresh discovery cache: the same reads
/// answer the same, and a write fails saying why.
fn kubectl_online_then_offline(label: &str, version: Option<&str>) {
    let Some(bin) = kubectl_binary(version) else { return };
    let mut edge = Edge::start(label, &[], &[]);
    let kubectl = Kubectl::new(&bin, &edge);
    eprintln!("{}", kubectl.ok(&["version", "--client"]).lines().next().unwrap_or_default());
    kubectl_reads(&kubectl);
    kubectl_writes(&kubectl, &edge);
    kubectl_watch_sees_upstream_change(&kubectl, &edge);
    let (table, list, widgets) = kubectl_reads(&kubectl);

    edge.fake.stop();
    let offline = kubectl.with_fresh_cache("offline");
    assert_eq!(offline.ok(&["get", "pods"]), table, "offline `get pods` differs from online");
    let offline_list: Value =
        serde_json::from_str(&offline.ok(&["get", "pods", "-o", "json"])).expect("-o json is JSON");
    assert_eq!(offline_list, list, "offline `get pods -o json` differs from online");
    assert_eq!(
        offline.ok(&["get", "widgets"]),
        widgets,
        "offline `get widgets` differs from online"
    );

    let created = manifest(&edge, "offline.json", &pod("kubectl-offline"));
    let write = offline.run(&["create", "-f", &created]);
    assert!(!write.success, "an offline create succeeded:\n{}", write.stdout);
    assert!(
        write.stderr.contains("ServiceUnavailable") && write.stderr.contains("unreachable"),
        "the offline create should say the cloud is unreachable (503):\n{}",
        write.stderr
    );
}

/// Offline, `get pods -w` lists from the cache and then waits quietly: held open until
/// killed, and ended without error by kubectl's own `--request-timeout`.
fn kubectl_offline_watch(label: &str, version: Option<&str>) {
    let Some(bin) = kubectl_binary(version) else { return };
    let mut edge = Edge::start(label, &[], &[]);
    let kubectl = Kubectl::new(&bin, &edge);
    let mut online = kubectl.spawn(&["get", "pods", "-w"]);
    wait_for_output(&mut online, "web-1", "online kubectl get pods -w");
    online.kill();

    edge.fake.stop();
    let offline = kubectl.with_fresh_cache("offline");
    let mut watch = offline.spawn(&["get", "pods", "-w", "--request-timeout=60s"]);
    wait_for_output(&mut watch, "web-1", "offline kubectl get pods -w");
    let open_for = Duration::from_secs(3);
    let exited = wait_for(open_for, || watch.exit_status());
    assert!(
        exited.is_none(),
        "offline `get pods -w` ended ({exited:?}) instead of waiting:\n{}",
        watch.output()
    );
    assert!(
        !watch.stderr().to_lowercase().contains("error"),
        "offline watch reported an error:\n{}",
        watch.output()
    );
    watch.kill();

    let run = offline.run(&["get", "pods", "-w", "--request-timeout=3s"]);
    assert!(
        run.success,
        "offline `get pods -w --request-timeout=3s` failed:\n{}\n{}",
        run.stderr, run.stdout
    );
    assert!(run.stdout.contains("web-1"), "{}", run.stdout);
    assert!(!run.stderr.to_lowercase().contains("error"), "{}", run.stderr);
}

#[test]
fn kubectl_default_online_then_offline() {
    kubectl_online_then_offline("kubectl-default", None);
}

#[test]
fn kubectl_1_27_online_then_offline() {
    kubectl_online_then_offline("kubectl-1-27", Some("1.27"));
}

#[test]
fn kubectl_1_33_online_then_offline() {
    kubectl_online_then_offline("kubectl-1-33", Some("1.33"));
}

#[test]
fn kubectl_default_offline_watch_waits_without_error() {
    kubectl_offline_watch("kubectl-default-watch", None);
}

#[test]
fn kubectl_1_27_offline_watch_waits_without_error() {
    kubectl_offline_watch("kubectl-1-27-watch", Some("1.27"));
}

#[test]
fn kubectl_1_33_offline_watch_waits_without_error() {
    kubectl_offline_watch("kubectl-1-33-watch", Some("1.33"));
}

// ---------------------------------------------------------------------------------------
// The official Python client
// ---------------------------------------------------------------------------------------

/// The PyPI requirement installed into the test virtualenv.
const PYTHON_CLIENT: &str = "kubernetes==37.0.2";
const PIP_TIMEOUT: Duration = Duration::from_secs(900);

/// The python of a virtualenv holding [`PYTHON_CLIENT`], made once under the target dir and
/// reused by later runs (a marker file names what was installed).
fn python_with_kubernetes() -> PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone().unwrap_or_else(|message| panic!("{message}"))
}

fn make_venv() -> Result<PathBuf, String> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-kubernetes-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join("installed-requirement");
    // Another test process may be making it at the same moment.
    let _lock = FileLock::acquire(&venv.with_extension("lock"))?;
    if std::fs::read_to_string(&marker).is_ok_and(|installed| installed == PYTHON_CLIENT) {
        return Ok(python);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let venv_arg = venv.display().to_string();
    run_setup_step(Path::new("python3"), &["-m", "venv", &venv_arg]).map_err(|e| {
        format!("cannot make a virtualenv with `python3 -m venv` (is python3-venv installed?): {e}")
    })?;
    run_setup_step(&python, &["-m", "pip", "install", "--quiet", PYTHON_CLIENT])
        .map_err(|e| format!("pip could not install {PYTHON_CLIENT} (is PyPI reachable?): {e}"))?;
    std::fs::write(&marker, PYTHON_CLIENT)
        .map_err(|e| format!("write {}: {e}", marker.display()))?;
    Ok(python)
}

fn run_setup_step(program: &Path, args: &[&str]) -> Result<(), String> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut proc = Proc::spawn(program, &args);
    match proc.wait_output(PIP_TIMEOUT) {
        Some(status) if status.success() => Ok(()),
        Some(status) => {
            Err(format!("{} {args:?} exited {status}:\n{}", program.display(), proc.output()))
        }
        None => Err(format!("{} {args:?} still running after {PIP_TIMEOUT:?}", program.display())),
    }
}

/// An exclusive `flock` on a file, released when dropped (the descriptor closes).
struct FileLock {
    _file: File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<FileLock, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        let file = File::create(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {}: {}", path.display(), std::io::Error::last_os_error()));
        }
        Ok(FileLock { _file: file })
    }
}

/// `tests/python/kube_client.py` against lite-apiserver with the given credentials.
fn python_client(edge: &Edge, credentials: &[String], command: &[&str]) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kube_client.py");
    let mut args = vec![
        script.display().to_string(),
        format!("--server=https://127.0.0.1:{}", edge.lite.port),
        format!("--ca={}", edge.env.pki.path("ca.crt").display()),
    ];
    args.extend(credentials.iter().cloned());
    args.extend(command.iter().map(|a| a.to_string()));
    Proc::spawn(&python_with_kubernetes(), &args)
}

/// The JSON lines a script printed.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// `list_namespaced_pod` and `watch.Watch().stream(list_namespaced_pod, ...)` as `user`.
fn python_lists_and_watches(edge: &Edge, credentials: &[String], user: &str, new_pod: &str) {
    let mut list = python_client(edge, credentials, &["list", "default"]);
    let status = list
        .wait_output(COMMAND_TIMEOUT)
        .unwrap_or_else(|| panic!("python list hangs:\n{}", list.output()));
    assert!(status.success(), "python list failed:\n{}", list.output());
    let answer = json_lines(&list.stdout()).pop().expect("python list printed its answer");
    assert_eq!(answer["user"], user, "the cloud saw another identity: {answer}");
    for name in SEEDED_PODS {
        assert!(
            answer["pods"].as_array().is_some_and(|pods| pods.iter().any(|p| p == name)),
            "{name} missing: {answer}"
        );
    }

    let mut watch = python_client(
        edge,
        credentials,
        &["watch", "default", "--timeout=30", &format!("--expect={new_pod}")],
    );
    for name in SEEDED_PODS {
        wait_for_output(&mut watch, &format!("\"name\": \"{name}\""), "python watch");
    }
    edge.create_pod_upstream(new_pod);
    let status = watch
        .wait_output(COMMAND_TIMEOUT)
        .unwrap_or_else(|| panic!("python watch hangs:\n{}", watch.output()));
    assert!(status.success(), "python watch did not see ADDED {new_pod}:\n{}", watch.output());
    let events = json_lines(&watch.stdout());
    assert!(events.iter().any(|e| e["type"] == "ADDED" && e["name"] == new_pod), "{events:?}");
}

#[test]
fn python_client_lists_and_watches_with_token_and_with_client_cert() {
    let edge = Edge::start("python", &["--token", "python-token=python-user"], &[]);
    let token = vec!["--token=python-token".to_string()];
    python_lists_and_watches(&edge, &token, "python-user", "python-token-pod");
    let pki = &edge.env.pki;
    let cert = vec![
        format!("--cert={}", pki.path("kubelet.crt").display()),
        format!("--key={}", pki.path("kubelet.key").display()),
    ];
    python_lists_and_watches(&edge, &cert, "system:node:edge-1", "python-cert-pod");
}

// ---------------------------------------------------------------------------------------
// client-go reflector semantics, played with the harness client
// ---------------------------------------------------------------------------------------

/// client-go's first LIST: any version will do, in pages of 500.
const REFLECTOR_LIST: &str = "/api/v1/namespaces/default/pods?limit=500&resourceVersion=0";

fn reflector_watch_path(resource_version: &str) -> String {
    format!(
        "{PODS}?allowWatchBookmarks=true&resourceVersion={resource_version}&timeoutSeconds=300&watch=true"
    )
}

/// LIST, WATCH from its version with BOOKMARKs, then the proxy dies (kill -9); changes made
/// meanwhile arrive when the watch resumes from the last version seen.
#[test]
fn reflector_lists_watches_with_bookmarks_and_resumes_after_proxy_restart() {
    let mut edge = Edge::start("reflector-resume", &["--bookmark-interval-ms", "200"], &[]);
    let mut kubelet = edge.client(Some("kubelet"));
    let list = kubelet.get(REFLECTOR_LIST).expect_status(200).json();
    assert_lists_seeded_pods(&list);
    let mut last_seen = resource_version(&list);

    let mut watch = kubelet.watch(&reflector_watch_path(&last_seen));
    let bookmark = watch.next_event(EVENT_TIMEOUT).expect("a BOOKMARK");
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(bookmark["object"]["kind"], "Pod", "{bookmark}");
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"].as_str().is_some_and(|rv| !rv.is_empty()),
        "{bookmark}"
    );
    edge.create_pod_upstream("before-restart");
    let added = watch.expect_change(EVENT_TIMEOUT, "ADDED", "before-restart");
    last_seen = resource_version(&added["object"]);

    edge.lite.kill9();
    assert!(watch.wait_closed(EVENT_TIMEOUT), "the watch outlived the proxy");
    edge.create_pod_upstream("during-restart");
    edge.delete_pod_upstream("before-restart");
    edge.restart_lite();

    let mut watch = edge.client(Some("kubelet")).watch(&reflector_watch_path(&last_seen));
    watch.expect_change(EVENT_TIMEOUT, "ADDED", "during-restart");
    watch.expect_change(EVENT_TIMEOUT, "DELETED", "before-restart");
}

/// History gone: the in-stream `410 Expired` ERROR passes through unchanged, and a re-list
/// followed by a watch from its version works. Offline the same cycle is answered from the
/// cache.
#[test]
fn reflector_relists_after_410_expired() {
    let mut edge = Edge::start("reflector-410", &["--history", "3"], &[]);
    let mut kubelet = edge.client(Some("kubelet"));
    let stale = resource_version(&kubelet.get(REFLECTOR_LIST).expect_status(200).json());
    for i in 0..5 {
        edge.create_pod_upstream(&format!("churn-{i}"));
    }

    let through_proxy =
        kubelet.watch(&reflector_watch_path(&stale)).next_event(EVENT_TIMEOUT).expect("an event");
    let direct =
        edge.direct(Some("kubelet")).watch(&reflector_watch_path(&stale)).next_event(EVENT_TIMEOUT);
    assert_eq!(through_proxy["type"], "ERROR", "{through_proxy}");
    assert_eq!(through_proxy["object"]["code"], 410, "{through_proxy}");
    assert_eq!(through_proxy["object"]["reason"], "Expired", "{through_proxy}");
    assert_eq!(Some(&through_proxy), direct.as_ref(), "the proxy changed the ERROR event");

    let mut kubelet = edge.client(Some("kubelet"));
    let relist = kubelet.get(REFLECTOR_LIST).expect_status(200).json();
    assert_eq!(item_names(&relist).len(), SEEDED_PODS.len() + 5, "{relist}");
    let fresh = resource_version(&relist);
    let mut watch = kubelet.watch(&reflector_watch_path(&fresh));
    edge.create_pod_upstream("after-relist");
    watch.expect_change(EVENT_TIMEOUT, "ADDED", "after-relist");
    drop(watch);

    // Offline: the plain list (no resourceVersion) is cached, a watch from before it expires,
    // the re-list answers from the cache and a watch from there stays open.
    let current =
        edge.client(Some("kubelet")).get(&format!("{PODS}?limit=500")).expect_status(200).json();
    edge.fake.stop();
    let mut kubelet = edge.client(Some("kubelet"));
    let expired =
        kubelet.watch(&reflector_watch_path(&stale)).next_event(EVENT_TIMEOUT).expect("an event");
    assert_eq!(
        (expired["type"].as_str(), &expired["object"]["code"]),
        (Some("ERROR"), &json!(410)),
        "{expired}"
    );
    let offline = kubelet.get(REFLECTOR_LIST).expect_status(200);
    assert_served_from_cache(&offline);
    assert_eq!(item_names(&offline.json()), item_names(&current));
    let mut watch = kubelet.watch(&reflector_watch_path(&resource_version(&offline.json())));
    watch.assert_open_for(Duration::from_secs(2));
}

/// Aggregated discovery (`/api`, `/apis` as APIGroupDiscoveryList) and legacy discovery
/// (APIVersions, APIGroupList, APIResourceList) are distinct answers, cached apart and
/// replayed offline with the same body and Content-Type.
#[test]
fn discovery_aggregated_and_legacy_cached_apart_and_replayed_offline() {
    const AGGREGATED: &str =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    const LEGACY: &str = "application/json, */*";
    let requests = [
        ("/api", AGGREGATED, "APIGroupDiscoveryList"),
        ("/apis", AGGREGATED, "APIGroupDiscoveryList"),
        ("/api", LEGACY, "APIVersions"),
        ("/apis", LEGACY, "APIGroupList"),
        ("/api/v1", LEGACY, "APIResourceList"),
        ("/apis/example.com/v1", LEGACY, "APIResourceList"),
    ];
    let mut edge = Edge::start("discovery", &[], &[]);
    let mut client = edge.client(Some("kubelet"));
    let online: Vec<Response> = requests
        .iter()
        .map(|(path, accept, kind)| {
            let resp = client.request("GET", path, &[("Accept", accept)], b"").expect_status(200);
            assert_eq!(resp.json()["kind"], *kind, "GET {path} with Accept {accept}");
            let content_type = resp.header("content-type").unwrap_or_default();
            let aggregated = content_type.contains("as=APIGroupDiscoveryList");
            assert_eq!(
                aggregated,
                *accept == AGGREGATED,
                "GET {path}: Content-Type {content_type}"
            );
            resp
        })
        .collect();
    // The cache thread stores them in the background: all six, before the cloud goes.
    edge.wait_stored(requests.len() as u64);

    edge.fake.stop();
    let mut client = edge.client(Some("kubelet"));
    for ((path, accept, _), online) in requests.iter().zip(&online) {
        let offline = client.request("GET", path, &[("Accept", accept)], b"").expect_status(200);
        assert_served_from_cache(&offline);
        assert_eq!(
            offline.header("content-type"),
            online.header("content-type"),
            "GET {path} ({accept})"
        );
        assert_eq!(
            offline.text(),
            online.text(),
            "GET {path} ({accept}) replayed a different body"
        );
    }
}

/// kubelet and kube-proxy ask for protobuf first.
const PROTOBUF_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn get_protobuf(client: &mut Client, path: &str) -> Response {
    client.request("GET", path, &[("Accept", PROTOBUF_ACCEPT)], b"").expect_status(200)
}

/// With `--modify-request-accept=true` a protobuf-first client gets JSON, which it accepts
/// too, online and from the cache.
#[test]
fn protobuf_accept_answered_with_json_online_and_offline() {
    let mut edge = Edge::start("protobuf-json", &[], &["--modify-request-accept=true"]);
    let paths = [PODS.to_string(), format!("{PODS}/web-1")];
    let mut kubelet = edge.client(Some("kubelet"));
    let online: Vec<Value> = paths
        .iter()
        .map(|path| {
            let resp = get_protobuf(&mut kubelet, path);
            let content_type = resp.header("content-type").unwrap_or_default();
            assert!(
                content_type.starts_with("application/json"),
                "GET {path}: Content-Type {content_type}"
            );
            resp.json()
        })
        .collect();
    assert_lists_seeded_pods(&online[0]);
    assert_eq!(online[1]["metadata"]["name"], "web-1");
    edge.wait_stored(paths.len() as u64);

    edge.fake.stop();
    let mut kubelet = edge.client(Some("kubelet"));
    for (path, online) in paths.iter().zip(&online) {
        let offline = get_protobuf(&mut kubelet, path);
        assert_served_from_cache(&offline);
        assert!(offline.header("content-type").unwrap_or_default().starts_with("application/json"));
        assert_eq!(&offline.json(), online, "GET {path} offline differs from online");
    }
}

/// With `--modify-request-accept=false` the cloud's protobuf bytes pass through untouched
/// and are replayed offline byte for byte.
#[test]
fn protobuf_passes_through_and_replays_byte_identical() {
    let mut edge = Edge::start("protobuf-raw", &[], &["--modify-request-accept=false"]);
    let paths = [PODS.to_string(), format!("{PODS}/web-1")];
    let mut kubelet = edge.client(Some("kubelet"));
    let mut cloud = edge.direct(Some("kubelet"));
    let online: Vec<Response> = paths
        .iter()
        .zip(["PodList", "Pod"])
        .map(|(path, kind)| {
            let resp = get_protobuf(&mut kubelet, path);
            assert_eq!(resp.header("content-type"), Some(PROTOBUF), "GET {path}");
            // Real protobuf (k8s\0 + runtime.Unknown) around the generated message.
            let unknown = common::protobuf::open_envelope(&resp.body);
            assert_eq!(common::protobuf::type_meta(&unknown).1, kind, "GET {path}");
            assert_eq!(
                resp.body,
                get_protobuf(&mut cloud, path).body,
                "GET {path}: the proxy changed the bytes"
            );
            resp
        })
        .collect();
    edge.wait_stored(paths.len() as u64);

    edge.fake.stop();
    let mut kubelet = edge.client(Some("kubelet"));
    for (path, online) in paths.iter().zip(&online) {
        let offline = get_protobuf(&mut kubelet, path);
        assert_served_from_cache(&offline);
        assert_eq!(offline.header("content-type"), Some(PROTOBUF), "GET {path}");
        assert_eq!(
            sha256_hex(&offline.body),
            sha256_hex(&online.body),
            "GET {path}: offline bytes differ"
        );
    }
}
