//! Kubelet's start-up path from a cold restart on a dead link (issue 13, item 2): the
//! requests kubelet sends when it starts — its Node; LIST + WATCH of its pods, services, its
//! own Node, RuntimeClasses and CSIDrivers; per-object LIST + WATCH of the ConfigMaps and
//! Secrets its pods mount (`kube-root-ca.crt` included); a TokenRequest per pod; its Lease;
//! a node status PATCH and an Event — replayed with kubelet's certificate, `Accept` and
//! User-Agent, first online through lite-apiserver, then after the link turns into a black
//! hole (connects hang, as on a dead link) and lite-apiserver is `kill -9`ed and started
//! again on its cache with `--timeout=10`.
//!
//! kubelet asks protobuf first, and lite-apiserver keeps protobuf on the cloud link: every
//! read is answered in protobuf (the fake serves all of kubelet's kinds in it) and read here
//! as kubelet reads it, with the generated types (k8s-pb), watches as length-prefixed frames.
//!
//! Offline, every read the cloud answered online is answered from the cache with the same
//! objects, every TokenRequest with the token the cloud issued, every other write with a `503`
//! `Status`, and watches are held open on the cached state. Every request has a client
//! deadline of 5 s, half of `--timeout`: a request that waits for the dead cloud fails.
//!
//! The fake apiserver serves neither `node.k8s.io` nor `storage.k8s.io`: RuntimeClasses and
//! CSIDrivers get `404` online, so the cache never holds them, and offline their LISTs get
//! `503` (the honest answer for what was never seen). It serves the node's Lease as kube
//! does: a renewal must name the version it replaces; offline the Lease read is answered
//! from the cache and its renewal with `503`. Its seeded pods carry no volumes; a real apiserver's
//! ServiceAccount admission gives every pod a `kube-api-access` volume, so each pod here reads
//! `kube-root-ca.crt` and asks for a token, and one pod created by the test mounts a
//! ConfigMap and a Secret of its own.

mod common;

use std::cell::RefCell;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use common::client::StreamEnd;
use common::protobuf::{
    KUBELET_ACCEPT, PROTOBUF, PROTOBUF_WATCH, decode, event_object, next_watch_event,
    open_envelope, type_meta,
};
use common::*;
use k8s_pb::api::coordination::v1 as coordinationv1;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::json;

const NODE: &str = "edge-1";
/// The client deadline of every request: half of `--timeout`, so a wait for it fails.
const PROMPT: Duration = Duration::from_secs(5);
/// How long the prober and the cloud's return get.
const SETTLE: Duration = Duration::from_secs(40);
const LITE_ARGS: &[&str] = &["--timeout=10", "--reconnect-spread=2"];
const USER_AGENT: &str = "kubelet/v1.30.0 (linux/amd64) kubernetes/7c48c2b";
const CACHE_HEADER: &str = "x-lite-apiserver-cache";
const NODE_PATH: &str = "/api/v1/nodes/edge-1";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/edge-1";
/// kubelet's `kube-api-access` TokenRequest lifetime.
const KUBE_API_ACCESS_SECONDS: i64 = 3607;
const ROOT_CA: &str = "kube-root-ca.crt";

// ---------------------------------------------------------------------------------------
// What kubelet asks for.
// ---------------------------------------------------------------------------------------

/// One reflector: a LIST from `resourceVersion=0`, then a WATCH from the list's version.
#[derive(Clone, Debug, PartialEq)]
struct Informer {
    path: String,
    /// A field selector such as `metadata.name=edge-1`.
    selector: Option<String>,
}

impl Informer {
    fn new(path: &str, selector: Option<&str>) -> Informer {
        Informer { path: path.to_string(), selector: selector.map(str::to_string) }
    }

    /// What kubelet's informers for its node watch.
    fn of_node() -> Vec<Informer> {
        vec![
            Informer::new("/api/v1/pods", Some("spec.nodeName=edge-1")),
            Informer::new("/api/v1/services", None),
            Informer::new("/api/v1/nodes", Some("metadata.name=edge-1")),
            Informer::new("/apis/node.k8s.io/v1/runtimeclasses", None),
            Informer::new("/apis/storage.k8s.io/v1/csidrivers", None),
        ]
    }

    /// kubelet's watch-based ConfigMap and Secret managers: one reflector per object.
    fn of_object(namespace: &str, plural: &str, name: &str) -> Informer {
        let path = format!("/api/v1/namespaces/{namespace}/{plural}");
        Informer { path, selector: Some(format!("metadata.name={name}")) }
    }

    fn selector_param(&self) -> String {
        self.selector
            .as_ref()
            .map(|s| format!("fieldSelector={}&", s.replace('=', "%3D")))
            .unwrap_or_default()
    }

    fn list_path(&self) -> String {
        format!("{}?{}limit=500&resourceVersion=0", self.path, self.selector_param())
    }

    fn watch_path(&self, resource_version: &str) -> String {
        format!(
            "{}?allowWatchBookmarks=true&{}resourceVersion={resource_version}\
             &timeoutSeconds=300&watch=true",
            self.path,
            self.selector_param()
        )
    }
}

/// A pod as its TokenRequest names it.
#[derive(Clone, Debug, PartialEq)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
    service_account: String,
}

impl PodRef {
    fn of(pod: &corev1::Pod) -> PodRef {
        let metadata = pod.metadata.clone().unwrap_or_default();
        let service_account = pod.spec.as_ref().and_then(|s| s.service_account_name.clone());
        PodRef {
            namespace: metadata.namespace.unwrap_or_default(),
            name: metadata.name.unwrap_or_default(),
            uid: metadata.uid.unwrap_or_default(),
            service_account: service_account.unwrap_or_else(|| "default".into()),
        }
    }

    fn token_path(&self) -> String {
        let PodRef { namespace, service_account, .. } = self;
        format!("/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token")
    }
}

/// The ConfigMap and Secret reflectors a set of pods needs, in order, without repeats:
/// their volumes' (projected ones included), and `kube-root-ca.crt` of every pod's
/// `kube-api-access` volume.
fn mounted_informers(pods: &[corev1::Pod]) -> Vec<Informer> {
    let mut informers: Vec<Informer> = Vec::new();
    for pod in pods {
        let namespace = pod.metadata.as_ref().and_then(|m| m.namespace.as_deref());
        let namespace = namespace.unwrap_or_default();
        let volumes = pod.spec.iter().flat_map(|spec| &spec.volumes);
        let sources = volumes.filter_map(|volume| volume.volume_source.as_ref());
        let root_ca = ("configmaps", ROOT_CA.to_string());
        for (plural, name) in std::iter::once(root_ca).chain(sources.flat_map(source_mounts)) {
            let informer = Informer::of_object(namespace, plural, &name);
            if !informers.contains(&informer) {
                informers.push(informer);
            }
        }
    }
    informers
}

/// The ConfigMaps and Secrets (as `(plural, name)`) a volume mounts, its projected sources'
/// included.
fn source_mounts(source: &corev1::VolumeSource) -> Vec<(&'static str, String)> {
    let own = [
        ("configmaps", source.config_map.as_ref().and_then(|c| name_of(&c.local_object_reference))),
        ("secrets", source.secret.as_ref().and_then(|s| s.secret_name.clone())),
    ];
    let projected = source.projected.iter().flat_map(|p| &p.sources).flat_map(|projection| {
        let config_map = projection.config_map.as_ref();
        let secret = projection.secret.as_ref();
        [
            ("configmaps", config_map.and_then(|c| name_of(&c.local_object_reference))),
            ("secrets", secret.and_then(|s| name_of(&s.local_object_reference))),
        ]
    });
    own.into_iter().chain(projected).filter_map(|(plural, name)| Some((plural, name?))).collect()
}

fn name_of(reference: &Option<corev1::LocalObjectReference>) -> Option<String> {
    reference.as_ref().and_then(|r| r.name.clone())
}

/// How a TokenRequest is encoded, asked and answered.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Json,
    Protobuf,
}

/// One request of kubelet's start.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Get(&'static str),
    List(Informer),
    Token(PodRef, Format),
    PutLease,
    PatchNodeStatus,
    PostEvent(&'static str),
}

impl Step {
    fn is_read(&self) -> bool {
        matches!(self, Step::Get(_) | Step::List(_))
    }
}

/// kubelet's `kube-api-access` TokenRequest for `pod`, in JSON.
fn token_request_json(pod: &PodRef) -> Vec<u8> {
    let request = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {
            "audiences": null,
            "expirationSeconds": KUBE_API_ACCESS_SECONDS,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.name,
                               "uid": pod.uid},
        },
        "status": {"token": "", "expirationTimestamp": null},
    });
    serde_json::to_vec(&request).expect("JSON")
}

/// The same request as kubelet's client-go encodes it: `k8s\0` + `runtime.Unknown`.
fn token_request_protobuf(pod: &PodRef) -> Vec<u8> {
    token_request::protobuf_body(&[], KUBE_API_ACCESS_SECONDS, &pod.name, &pod.uid)
}

/// `status.token` of a `201` TokenRequest answer in `format`.
fn token_of(resp: &Response, format: Format) -> String {
    assert_eq!(resp.status, 201, "{format:?} TokenRequest: {}", resp.text());
    match format {
        Format::Json => resp.json()["status"]["token"].as_str().expect("status.token").to_string(),
        Format::Protobuf => {
            assert_eq!(resp.header("content-type"), Some(PROTOBUF));
            token_request::protobuf_answer_token(&resp.body)
        }
    }
}

fn node_status_patch() -> Vec<u8> {
    let now = "2024-05-01T10:00:00Z";
    let ready = json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status",
                       "lastHeartbeatTime": now, "lastTransitionTime": now});
    serde_json::to_vec(&json!({"status": {"conditions": [ready]}})).expect("JSON")
}

/// kubelet's renewal of its node Lease, naming the version it replaces (a Lease cannot be
/// updated unconditionally).
fn lease(resource_version: &str) -> Vec<u8> {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": NODE, "namespace": "kube-node-lease",
                     "resourceVersion": resource_version},
        "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40,
                 "renewTime": "2024-05-01T10:00:00.000000Z"},
    });
    serde_json::to_vec(&lease).expect("JSON")
}

fn event(name: &str) -> Vec<u8> {
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Node", "name": NODE, "uid": NODE},
        "reason": "Starting",
        "message": "Starting kubelet.",
        "source": {"component": "kubelet", "host": NODE},
        "type": "Normal",
        "count": 1,
    });
    serde_json::to_vec(&event).expect("JSON")
}

// ---------------------------------------------------------------------------------------
// kubelet talking to lite-apiserver.
// ---------------------------------------------------------------------------------------

/// kubelet's requests to the proxy: its certificate, `Accept`, User-Agent, and a 5 s
/// deadline on each.
struct Kubelet<'a> {
    edge: &'a Edge,
    /// The resourceVersion of its Lease as last read or renewed.
    lease_version: RefCell<String>,
}

impl<'a> Kubelet<'a> {
    fn new(edge: &'a Edge) -> Kubelet<'a> {
        Kubelet { edge, lease_version: RefCell::new(String::new()) }
    }

    fn client(&self) -> Client {
        self.edge.kubelet().timeout(PROMPT)
    }

    fn send(&self, step: &Step) -> Response {
        if matches!(step, Step::PutLease) && self.lease_version.borrow().is_empty() {
            // kubelet's lease controller reads its Lease before the first renewal.
            self.send(&Step::Get(LEASE));
        }
        let resp = self.exchange(step);
        if matches!(step, Step::Get(LEASE) | Step::PutLease) && resp.status == 200 {
            let lease: coordinationv1::Lease = decode(&resp.body, "Lease");
            let version = lease.metadata.and_then(|m| m.resource_version).unwrap_or_default();
            *self.lease_version.borrow_mut() = version;
        }
        resp
    }

    fn exchange(&self, step: &Step) -> Response {
        let (method, path, content_type, body): (&str, String, &str, Vec<u8>) = match step {
            Step::Get(path) => ("GET", path.to_string(), "", Vec::new()),
            Step::List(informer) => ("GET", informer.list_path(), "", Vec::new()),
            Step::Token(pod, Format::Json) => {
                ("POST", pod.token_path(), "application/json", token_request_json(pod))
            }
            Step::Token(pod, Format::Protobuf) => {
                ("POST", pod.token_path(), PROTOBUF, token_request_protobuf(pod))
            }
            Step::PutLease => {
                let version = self.lease_version.borrow().clone();
                ("PUT", LEASE.to_string(), "application/json", lease(&version))
            }
            Step::PatchNodeStatus => (
                "PATCH",
                format!("{NODE_PATH}/status"),
                "application/strategic-merge-patch+json",
                node_status_patch(),
            ),
            Step::PostEvent(name) => (
                "POST",
                "/api/v1/namespaces/default/events".into(),
                "application/json",
                event(name),
            ),
        };
        let accept = match step {
            Step::Token(_, Format::Json) => "application/json",
            _ => KUBELET_ACCEPT,
        };
        let mut headers = vec![("Accept", accept), ("User-Agent", USER_AGENT)];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        self.client().try_request(method, &path, &headers, &body).unwrap_or_else(|e| {
            panic!("{step:?}: {method} {path} got no answer in {PROMPT:?}: {e}")
        })
    }

    fn run(&self, steps: &[Step]) -> Vec<Response> {
        steps.iter().map(|step| self.send(step)).collect()
    }

    /// A reflector's WATCH from `resource_version`; panics unless it answers `200` in time,
    /// as a protobuf watch.
    fn watch(&self, informer: &Informer, resource_version: &str) -> WatchStream {
        let path = informer.watch_path(resource_version);
        let headers = [("Accept", KUBELET_ACCEPT), ("User-Agent", USER_AGENT)];
        let watch = self
            .client()
            .try_watch(&path, &headers)
            .unwrap_or_else(|e| panic!("WATCH {path}: no 200 head in {PROMPT:?}: {e}"));
        assert_eq!(watch.head.headers.get("content-type"), Some(PROTOBUF_WATCH), "WATCH {path}");
        watch
    }
}

/// The reads of kubelet's start: its Node, its informers, then — from the pods listed —
/// the reflectors of what its pods mount. Returns the steps and their answers.
fn start_reads(kubelet: &Kubelet) -> (Vec<Step>, Vec<Response>) {
    let mut steps = vec![Step::Get(NODE_PATH)];
    steps.extend(Informer::of_node().into_iter().map(Step::List));
    let mut answers = kubelet.run(&steps);
    let pods = node_pods(&steps, &answers);
    let mounted: Vec<Step> = mounted_informers(&pods).into_iter().map(Step::List).collect();
    answers.extend(kubelet.run(&mounted));
    steps.extend(mounted);
    (steps, answers)
}

/// The writes of kubelet's start, from the pods it runs: a TokenRequest per pod (the first
/// in protobuf as kubelet sends them, the others in JSON as other clients do), its Lease
/// read and renewed, its status patched and an Event posted.
fn start_writes(pods: &[corev1::Pod], event_name: &'static str) -> Vec<Step> {
    let formats = std::iter::once(Format::Protobuf).chain(std::iter::repeat(Format::Json));
    let mut steps: Vec<Step> = pods
        .iter()
        .zip(formats)
        .map(|(pod, format)| Step::Token(PodRef::of(pod), format))
        .collect();
    steps.extend([Step::Get(LEASE), Step::PutLease, Step::PatchNodeStatus]);
    steps.push(Step::PostEvent(event_name));
    steps
}

/// The pods of kubelet's node, from the start's answers.
fn node_pods(steps: &[Step], answers: &[Response]) -> Vec<corev1::Pod> {
    let pods = Step::List(Informer::of_node().remove(0));
    let at = steps.iter().position(|step| *step == pods).expect("the pods are listed");
    match Read::of(&answers[at]) {
        Read::Pods(list) => list.items,
        other => panic!("the pods' LIST answered {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// kubelet reading the answers, as its protobuf decoder does.
// ---------------------------------------------------------------------------------------

/// A `200` answer to one of kubelet's reads, decoded as the kind its envelope names.
#[derive(Debug, PartialEq)]
enum Read {
    /// Boxed: a Node or a Lease is many times the size of a list.
    Node(Box<corev1::Node>),
    Pods(corev1::PodList),
    Nodes(corev1::NodeList),
    Services(corev1::ServiceList),
    ConfigMaps(corev1::ConfigMapList),
    Secrets(corev1::SecretList),
    Lease(Box<coordinationv1::Lease>),
}

impl Read {
    /// Panics unless `resp` is a `200` protobuf answer of a kind kubelet reads: the fake
    /// serves every one of them in protobuf, so a JSON answer here is the proxy's doing.
    fn of(resp: &Response) -> Read {
        assert_eq!(resp.status, 200, "a read: {}", resp.text());
        assert_eq!(resp.header("content-type"), Some(PROTOBUF), "a read: {}", resp.text());
        let body = resp.body.as_slice();
        match type_meta(&open_envelope(body)).1.as_str() {
            "Node" => Read::Node(Box::new(decode(body, "Node"))),
            "PodList" => Read::Pods(decode(body, "PodList")),
            "NodeList" => Read::Nodes(decode(body, "NodeList")),
            "ServiceList" => Read::Services(decode(body, "ServiceList")),
            "ConfigMapList" => Read::ConfigMaps(decode(body, "ConfigMapList")),
            "SecretList" => Read::Secrets(decode(body, "SecretList")),
            "Lease" => Read::Lease(Box::new(decode(body, "Lease"))),
            kind => panic!("kubelet reads no {kind}"),
        }
    }

    /// The answer as a reflector's list; panics for the Node.
    fn list(&self) -> &dyn ListView {
        match self {
            Read::Pods(list) => list,
            Read::Nodes(list) => list,
            Read::Services(list) => list,
            Read::ConfigMaps(list) => list,
            Read::Secrets(list) => list,
            Read::Node(node) => panic!("a Node is not a list: {node:?}"),
            Read::Lease(lease) => panic!("a Lease is not a list: {lease:?}"),
        }
    }
}

/// A list message of the generated types, with the kind of its items.
trait KubeList: Message + Default + PartialEq {
    type Item: Message
        + Default
        + PartialEq
        + Clone
        + Debug
        + k8s_pb::Metadata<Ty = meta::ObjectMeta>;
    fn items(&self) -> &[Self::Item];
    fn list_meta(&self) -> Option<&meta::ListMeta>;
}

macro_rules! kube_lists {
    ($($list:ident of $item:ident),* $(,)?) => {$(
        impl KubeList for corev1::$list {
            type Item = corev1::$item;
            fn items(&self) -> &[corev1::$item] {
                &self.items
            }
            fn list_meta(&self) -> Option<&meta::ListMeta> {
                self.metadata.as_ref()
            }
        }
    )*};
}

kube_lists!(
    PodList of Pod,
    NodeList of Node,
    ServiceList of Service,
    ConfigMapList of ConfigMap,
    SecretList of Secret,
);

/// What a reflector takes from a list, whatever its kind.
trait ListView {
    /// `metadata.resourceVersion`: where the reflector's WATCH starts.
    fn resource_version(&self) -> String;
    /// Reads a watch from `0`: one ADDED per item, replaying exactly the list's items.
    fn assert_replayed(&self, replay: &mut WatchStream, what: &str);
}

impl<L: KubeList> ListView for L {
    fn resource_version(&self) -> String {
        let version = self.list_meta().and_then(|m| m.resource_version.clone());
        version.filter(|v| !v.is_empty()).expect("the list's metadata.resourceVersion")
    }

    fn assert_replayed(&self, replay: &mut WatchStream, what: &str) {
        let kind = <L::Item as k8s_pb::Resource>::KIND;
        let mut added: Vec<L::Item> = self
            .items()
            .iter()
            .map(|_| {
                let (event_type, object) = event_object(&next_change(replay, what), kind);
                assert_eq!(event_type, "ADDED", "{what}: {object:?}");
                object
            })
            .collect();
        let mut items = self.items().to_vec();
        items.sort_by_key(object_name);
        added.sort_by_key(object_name);
        assert_eq!(added, items, "{what}: the replayed state is not the cached list");
    }
}

fn object_name<M: k8s_pb::Metadata<Ty = meta::ObjectMeta>>(object: &M) -> String {
    object.metadata().and_then(|m| m.name.clone()).unwrap_or_default()
}

/// The next event of a protobuf watch other than a BOOKMARK; panics (saying whether the
/// stream ended) if none is whole within [`PROMPT`].
fn next_change(watch: &mut WatchStream, what: &str) -> meta::WatchEvent {
    let deadline = Instant::now() + PROMPT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = next_watch_event(watch, left).unwrap_or_else(|| {
            panic!("{what}: no event but BOOKMARKs in {PROMPT:?} (end: {:?})", watch.end())
        });
        if event.r#type.as_deref() != Some("BOOKMARK") {
            return event;
        }
    }
}

// ---------------------------------------------------------------------------------------
// What each answer should be.
// ---------------------------------------------------------------------------------------

/// Asserts the offline answer to `step` given what the cloud answered it online.
fn assert_offline(step: &Step, online: &Response, offline: &Response, round: &str) {
    let what = format!("{step:?} {round}");
    match (step, online.status) {
        (Step::Get(_) | Step::List(_), 200) => {
            assert_eq!(offline.status, 200, "{what}: {}", offline.text());
            assert_eq!(offline.header(CACHE_HEADER), Some("hit"), "{what}");
            assert_eq!(Read::of(offline), Read::of(online), "{what}: not the objects seen online");
        }
        // Never seen: a list must not look empty, a single object is as kube says.
        (Step::List(_), 404) => assert_status_body(offline, 503),
        (Step::Get(_), 404) => assert_status_body(offline, 404),
        (Step::Token(_, format), 201) => {
            assert_eq!(token_of(offline, *format), token_of(online, *format), "{what}");
            assert_eq!(offline.header(CACHE_HEADER), Some("hit"), "{what}");
        }
        (Step::PutLease | Step::PatchNodeStatus | Step::PostEvent(_), _) => {
            assert_status_body(offline, 503);
        }
        (_, status) => panic!("{what}: unexpected online answer {status}: {}", online.text()),
    }
}

/// What the fake answers online: the core resources, the node's Lease, the TokenRequests,
/// the node status and the Event; `404` for the groups it does not serve.
fn assert_online(step: &Step, resp: &Response) {
    let expected = match step {
        Step::List(informer) if informer.path.starts_with("/apis/") => 404,
        Step::Get(_) | Step::List(_) | Step::PutLease | Step::PatchNodeStatus => 200,
        Step::Token(..) | Step::PostEvent(_) => 201,
    };
    assert_eq!(resp.status, expected, "{step:?} online: {}", resp.text());
    assert_eq!(resp.header(CACHE_HEADER), None, "{step:?} online: from the cloud");
}

/// Creates, at the cloud, a Secret and a pod on the node mounting it, a ConfigMap and a
/// projected `kube-api-access` volume.
fn create_mounting_pod(edge: &Edge) {
    let mut admin = edge.cloud_admin();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "app-secret", "namespace": "default"},
        "data": {"token": "czNjcjN0"},
    });
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app-1", "namespace": "default", "labels": {"app": "app"}},
        "spec": {
            "nodeName": NODE,
            "serviceAccountName": "default",
            "containers": [{"name": "app", "image": "registry.example/app:1.0"}],
            "volumes": [
                {"name": "config", "configMap": {"name": "app-config"}},
                {"name": "secret", "secret": {"secretName": "app-secret"}},
                {"name": "kube-api-access-x1", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca"}]}},
                ]}},
            ],
        },
    });
    for (path, object) in
        [("/api/v1/namespaces/default/secrets", secret), ("/api/v1/namespaces/default/pods", pod)]
    {
        let body = serde_json::to_vec(&object).expect("JSON");
        admin
            .request("POST", path, &[("Content-Type", "application/json")], &body)
            .expect_status(201);
    }
}

/// Online: kubelet's whole start through the proxy, its watches open while it writes
/// (the node watch sees the status patch), then its reads once more, as the cache holds
/// them now. Returns every step with its answer, the reads last.
fn online_start(edge: &Edge) -> (Vec<Step>, Vec<Response>) {
    let kubelet = Kubelet::new(edge);
    let (reads, answers) = start_reads(&kubelet);
    let pods = node_pods(&reads, &answers);
    let names: Vec<String> = pods.iter().map(object_name).collect();
    assert_eq!(names.len(), 3, "web-1, db-1 and app-1 run on {NODE}: {names:?}");
    let mounts = [("configmaps", ROOT_CA), ("configmaps", "app-config"), ("secrets", "app-secret")];
    let mounts = mounts.map(|(plural, name)| Informer::of_object("default", plural, name));
    assert_eq!(mounted_informers(&pods), mounts, "app-1's volumes and every kube-root-ca.crt");
    let mut watches: Vec<(Informer, WatchStream)> = Vec::new();
    for (step, list) in reads.iter().zip(&answers) {
        if let (Step::List(informer), 200) = (step, list.status) {
            let watch = kubelet.watch(informer, &Read::of(list).list().resource_version());
            watches.push((informer.clone(), watch));
        }
    }
    let writes = start_writes(&pods, "edge-1.start-online");
    let written = kubelet.run(&writes);
    for (step, resp) in reads.iter().zip(&answers).chain(writes.iter().zip(&written)) {
        assert_online(step, resp);
    }
    let node_watch = Informer::new("/api/v1/nodes", Some("metadata.name=edge-1"));
    let (_, watch) = watches.iter_mut().find(|(i, _)| *i == node_watch).expect("node watch");
    let (event_type, node) =
        event_object::<corev1::Node>(&next_change(watch, "the node watch"), "Node");
    assert_eq!((event_type.as_str(), object_name(&node)), ("MODIFIED", NODE.into()), "{node:?}");
    drop(watches);
    let (again, answers_again) = start_reads(&kubelet);
    let cached = |answers: &[Response]| answers.iter().filter(|r| r.status == 200).count();
    let tokens = written.iter().filter(|r| r.status == 201).count() - 1; // not the Event
    // The Lease read among the writes is stored too.
    let write_reads =
        writes.iter().zip(&written).filter(|(step, r)| step.is_read() && r.status == 200);
    // The second round's changed answers (the node after its status PATCH) must be stored
    // again; an unchanged one may be skipped (the cache already holds it).
    let changed = answers.iter().zip(&answers_again);
    let changed = changed.filter(|(first, again)| again.status == 200 && first.body != again.body);
    edge.wait_stored((cached(&answers) + tokens + write_reads.count() + changed.count()) as u64);
    let steps: Vec<Step> = writes.into_iter().chain(again).collect();
    (steps, written.into_iter().chain(answers_again).collect())
}

/// Offline, kubelet's reflectors watch from the versions of the lists the cache answered:
/// each watch is answered from the cache at once and held open. A watch from version `0`
/// replays the cached state: one ADDED event per object of the list.
fn offline_watches(kubelet: &Kubelet, steps: &[Step], online: &[Response]) -> Vec<WatchStream> {
    let mut held = Vec::new();
    for (step, list) in steps.iter().zip(online) {
        let (Step::List(informer), 200) = (step, list.status) else { continue };
        let read = Read::of(list);
        let watch = kubelet.watch(informer, &read.list().resource_version());
        assert_eq!(watch.head.headers.get(CACHE_HEADER), Some("hit"), "{informer:?}");
        held.push(watch);
        let mut replay = kubelet.watch(informer, "0");
        read.list().assert_replayed(&mut replay, &format!("{informer:?}"));
    }
    held
}

/// Waits until the prober has found the cloud down. `lite_apiserver_cloud_up` is `0`
/// already while a fresh process waits for its first probe; `/readyz` says which.
fn wait_cloud_down(edge: &Edge) {
    let down = wait_for(SETTLE, || {
        let (status, reason) = edge.diag("/readyz");
        (status == 503 && !reason.contains("waiting for the first probe")).then_some(())
    });
    assert!(down.is_some(), "the prober never found the cloud down: {:?}", edge.diag("/readyz"));
}

/// The link comes back: the node is ready again, held watches end cleanly (their clients
/// re-list from the cloud) and a write reaches the cloud.
fn cloud_returns(edge: &Edge, held: Vec<WatchStream>) {
    edge.relay().set_mode(RelayMode::Pass);
    let ready = wait_for(SETTLE, || (edge.diag("/readyz").0 == 200).then_some(()));
    assert!(ready.is_some(), "/readyz never answered 200: {:?}", edge.diag("/readyz"));
    for mut watch in held {
        assert!(watch.wait_closed(SETTLE), "a held watch outlived the cloud's return");
        assert_eq!(watch.end(), Some(&StreamEnd::Clean), "a held watch ended abruptly");
    }
    let kubelet = Kubelet::new(edge);
    let resp = kubelet.send(&Step::PostEvent("edge-1.back-online"));
    assert_eq!(resp.status, 201, "the Event after the return: {}", resp.text());
    edge.cloud_admin()
        .get("/api/v1/namespaces/default/events/edge-1.back-online")
        .expect_status(200);
}

/// An edge whose lite-apiserver went through kubelet's start online, then was `kill -9`ed
/// and started again on a link that became a black hole. Returns the steps and their
/// online answers.
fn restarted_on_a_dead_link(label: &str) -> (Edge, Vec<Step>, Vec<Response>) {
    let mut edge = Edge::build(label).through_relay().lite_args(LITE_ARGS).start();
    create_mounting_pod(&edge);
    let (steps, online) = online_start(&edge);
    edge.relay().set_mode(RelayMode::BlackHole);
    edge.restart_lite();
    (edge, steps, online)
}

/// Whether the cache held the answer to `step` before the restart.
fn was_cached(step: &Step, online: &Response) -> bool {
    step.is_read() && online.status == 200
}

/// Right after the restart the cloud's state is unknown: kubelet's reads of what the cache
/// holds are answered from it at once, its watches held open. Once the prober has found
/// the cloud down, the rest of kubelet's start — TokenRequests, reads the cache never held,
/// writes — is answered without waiting. Then the cloud comes back.
#[test]
fn kubelet_starts_again_from_the_cache_after_a_kill_on_a_dead_link() {
    let (edge, steps, online) = restarted_on_a_dead_link("kubelet-restart");
    let kubelet = Kubelet::new(&edge);
    let round = "after kill -9 on a dead link";
    for (step, seen) in steps.iter().zip(&online).filter(|(s, r)| was_cached(s, r)) {
        assert_offline(step, seen, &kubelet.send(step), round);
    }
    let mut held = offline_watches(&kubelet, &steps, &online);
    wait_cloud_down(&edge);
    for (step, seen) in steps.iter().zip(&online).filter(|(s, r)| !was_cached(s, r)) {
        assert_offline(step, seen, &kubelet.send(step), "once the cloud is known down");
    }
    for watch in &mut held {
        watch.assert_open_for(Duration::from_millis(200));
    }
    cloud_returns(&edge, held);
}

/// The usual reboot on a cut link: the outage was seen before the node went down, so the
/// prober's last verdict in the cache directory says "down" and the restarted process is
/// offline at once — every request of kubelet's start, writes included, is answered
/// without waiting for a first probe that a black-holed link never answers.
#[test]
fn a_restart_after_the_outage_was_seen_starts_offline_at_once() {
    let mut edge = Edge::build("kubelet-restart-seen").through_relay().lite_args(LITE_ARGS).start();
    create_mounting_pod(&edge);
    let (steps, online) = online_start(&edge);
    edge.relay().set_mode(RelayMode::BlackHole);
    wait_cloud_down(&edge);
    edge.restart_lite();
    let kubelet = Kubelet::new(&edge);
    for (step, seen) in steps.iter().zip(&online) {
        assert_offline(step, seen, &kubelet.send(step), "right after a restart, outage seen");
    }
}

/// kubelet does not wait for lite-apiserver's prober: its TokenRequests come right after
/// its reads, while a fresh process still holds the cloud's state unknown (on a dead link,
/// for the `--timeout` its first probe takes to fail).
///
/// Right after the restart, before any probe has answered: the cached reads and every
/// TokenRequest are answered from the cache at once (the cached token is the one the
/// cloud issued), so pods start without waiting for the prober.
#[test]
fn kubelets_token_requests_right_after_a_restart_on_a_dead_link_do_not_wait() {
    let (edge, steps, online) = restarted_on_a_dead_link("kubelet-restart-tokens");
    let kubelet = Kubelet::new(&edge);
    let cached_reads = steps.iter().zip(&online).filter(|(s, r)| was_cached(s, r));
    let tokens = steps.iter().zip(&online).filter(|(step, _)| matches!(step, Step::Token(..)));
    for (step, seen) in cached_reads.chain(tokens) {
        assert_offline(step, seen, &kubelet.send(step), "right after kill -9 on a dead link");
    }
}

/// Writes sent before the first probe has answered, by a process whose previous run never
/// saw the outage (power and link lost together), are proxied: on a black-holed link they
/// wait for the prober's first verdict (up to `--timeout`) before their `503`. A run that
/// saw the outage leaves the verdict in the cache directory, and the next start is offline
/// at once (`a_restart_after_the_outage_was_seen_starts_offline_at_once`).
#[test]
#[ignore = "known: writes before the first probe on a black-holed link wait up to --timeout \
            when the previous run never saw the outage"]
fn kubelets_writes_right_after_a_restart_on_a_dead_link_do_not_wait() {
    let (edge, steps, online) = restarted_on_a_dead_link("kubelet-restart-writes");
    let kubelet = Kubelet::new(&edge);
    let writes = steps.iter().zip(&online).filter(|(step, _)| !step.is_read());
    for (step, seen) in writes {
        assert_offline(step, seen, &kubelet.send(step), "right after kill -9 on a dead link");
    }
}
