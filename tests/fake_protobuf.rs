//! The fake kube-apiserver's protobuf, checked against the real schema (issue 15): spoken to
//! directly over its mTLS port with kubelet's `Accept`, every answer decodes with the
//! generated k8s-pb types — a Pod, a PodList with its ListMeta, a ConfigMapList over 128 KiB
//! gzipped, watch frames (ADDED/MODIFIED/DELETED, BOOKMARK, the end of the initial events,
//! an Expired ERROR), protobuf request bodies, the node Lease renewed as kube allows it, and
//! `Status` errors; custom resources stay JSON.

mod common;

use std::io::Read;
use std::time::Duration;

use common::protobuf::{
    KUBELET_ACCEPT, PROTOBUF, PROTOBUF_WATCH, decode, envelope, event_object, next_watch_event,
    open_envelope, type_meta,
};
use common::*;
use k8s_pb::api::coordination::v1 as coordinationv1;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
const ACCEPT: (&str, &str) = ("Accept", KUBELET_ACCEPT);
const SEND_PROTOBUF: (&str, &str) = ("Content-Type", PROTOBUF);
const WAIT: Duration = Duration::from_secs(10);

/// A fake with `args` and a kubelet client of it (no proxy in between).
fn fake(label: &str, args: &[&str]) -> (FakeApiserver, Client, TestEnv) {
    let env = TestEnv::new(label);
    let fake = env.fake(args);
    let kubelet = env.client(fake.port, Some("kubelet"));
    (fake, kubelet, env)
}

/// GET `path` as kubelet asks it; the answer must be protobuf.
fn get_protobuf(client: &mut Client, path: &str, extra: &[(&str, &str)]) -> Response {
    let headers: Vec<(&str, &str)> = [ACCEPT].into_iter().chain(extra.iter().copied()).collect();
    let resp = client.request("GET", path, &headers, b"").expect_status(200);
    assert_eq!(resp.header("content-type"), Some(PROTOBUF), "GET {path}");
    resp
}

fn meta_of(metadata: &Option<meta::ObjectMeta>) -> &meta::ObjectMeta {
    metadata.as_ref().expect("metadata")
}

fn name_of(metadata: &Option<meta::ObjectMeta>) -> &str {
    meta_of(metadata).name.as_deref().unwrap_or_default()
}

#[test]
fn a_pod_is_the_generated_pod_in_the_envelope() {
    let (_fake, mut kubelet, _env) = fake("pb-get", &[]);
    let path = format!("{PODS}/web-1");
    let body = get_protobuf(&mut kubelet, &path, &[]).body;
    let unknown = open_envelope(&body);
    assert_eq!(type_meta(&unknown), ("v1".to_string(), "Pod".to_string()));
    assert_eq!(unknown.content_encoding.as_deref(), Some(""), "kube writes it, empty");
    assert_eq!(unknown.content_type.as_deref(), Some(""), "kube writes it, empty");

    let pod: corev1::Pod = decode(&body, "Pod");
    let json = kubelet.get(&path).expect_status(200).json();
    let metadata = meta_of(&pod.metadata);
    assert_eq!(metadata.name.as_deref(), Some("web-1"));
    assert_eq!(metadata.namespace.as_deref(), Some("default"));
    assert_eq!(metadata.uid.as_deref(), json["metadata"]["uid"].as_str());
    assert_eq!(metadata.resource_version.as_deref(), Some(resource_version(&json).as_str()));
    assert!(metadata.creation_timestamp.and_then(|t| t.seconds).is_some_and(|s| s > 1_000_000_000));
    assert_eq!(metadata.labels.get("app").map(String::as_str), Some("web"));
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.node_name.as_deref(), Some("edge-1"));
    assert_eq!(spec.containers[0].image.as_deref(), Some("registry.example/web:1.0"));
    let status = pod.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.244.1.7"));
    assert_eq!(status.container_statuses[0].restart_count, Some(0));
}

#[test]
fn a_pod_list_carries_items_and_list_meta() {
    let (_fake, mut kubelet, _env) = fake("pb-list", &[]);
    let list: corev1::PodList = decode(&get_protobuf(&mut kubelet, PODS, &[]).body, "PodList");
    let names: Vec<&str> = list.items.iter().map(|p| name_of(&p.metadata)).collect();
    assert_eq!(names, ["db-1", "web-1", "web-2"]);
    let json = kubelet.get(PODS).expect_status(200).json();
    let list_meta = list.metadata.expect("ListMeta");
    assert_eq!(list_meta.resource_version.as_deref(), Some(resource_version(&json).as_str()));
    assert_eq!(list_meta.remaining_item_count, None);

    let page: corev1::PodList =
        decode(&get_protobuf(&mut kubelet, &format!("{PODS}?limit=1"), &[]).body, "PodList");
    let page_meta = page.metadata.expect("ListMeta");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page_meta.remaining_item_count, Some(2));
    let token = page_meta.r#continue.expect("continue");
    let rest: corev1::PodList = decode(
        &get_protobuf(&mut kubelet, &format!("{PODS}?limit=5&continue={token}"), &[]).body,
        "PodList",
    );
    let rest: Vec<&str> = rest.items.iter().map(|p| name_of(&p.metadata)).collect();
    assert_eq!(rest, ["web-1", "web-2"]);
}

#[test]
fn a_config_map_list_over_128_kib_is_gzipped() {
    let (fake, mut kubelet, env) = fake("pb-gzip", &[]);
    let mut admin = env.client(fake.port, Some("admin"));
    let blob = "x".repeat(50 * 1024);
    for i in 0..3 {
        let config_map = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("big-{i}"), "namespace": "default"},
            "data": {"blob": blob}, "binaryData": {"raw": "AAEC/w=="},
        });
        let body = serde_json::to_vec(&config_map).unwrap();
        let headers = [("Content-Type", "application/json")];
        admin.request("POST", CONFIG_MAPS, &headers, &body).expect_status(201);
    }
    let resp = get_protobuf(&mut kubelet, CONFIG_MAPS, &[("Accept-Encoding", "gzip")]);
    assert_eq!(resp.header("content-encoding"), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(resp.body.as_slice()).read_to_end(&mut plain).unwrap();
    assert!(plain.len() > 128 * 1024, "{} bytes", plain.len());
    let list: corev1::ConfigMapList = decode(&plain, "ConfigMapList");
    let big: Vec<&corev1::ConfigMap> =
        list.items.iter().filter(|c| name_of(&c.metadata).starts_with("big-")).collect();
    assert_eq!(big.len(), 3);
    assert!(big.iter().all(|c| c.data["blob"] == blob));
    assert_eq!(big[0].binary_data["raw"], [0, 1, 2, 255], "bytes, base64 only in JSON");
}

/// A ConfigMap `name` in protobuf, as kubelet would send it.
fn config_map_body(name: &str, data: &[(&str, &str)]) -> Vec<u8> {
    let config_map = corev1::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        }),
        data: data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        binary_data: [("key".to_string(), vec![0xde, 0xad])].into(),
        ..Default::default()
    };
    envelope("v1", "ConfigMap", config_map.encode_to_vec())
}

#[test]
fn protobuf_bodies_create_and_update() {
    let (_fake, mut kubelet, _env) = fake("pb-write", &[]);
    let body = config_map_body("from-kubelet", &[("mode", "protobuf")]);
    let resp = kubelet.request("POST", CONFIG_MAPS, &[ACCEPT, SEND_PROTOBUF], &body);
    let created: corev1::ConfigMap = decode(&resp.expect_status(201).body, "ConfigMap");
    let metadata = meta_of(&created.metadata);
    assert!(metadata.uid.as_deref().is_some_and(|uid| !uid.is_empty()));
    assert_eq!(created.data["mode"], "protobuf");

    let path = format!("{CONFIG_MAPS}/from-kubelet");
    let stored = kubelet.get(&path).expect_status(200).json();
    assert_eq!(stored["data"], json!({"mode": "protobuf"}));
    assert_eq!(stored["binaryData"], json!({"key": "3q0="}));
    assert_eq!(stored["metadata"].get("generateName"), None, "empty fields stay out of JSON");

    let body = config_map_body("from-kubelet", &[("mode", "updated")]);
    let resp = kubelet.request("PUT", &path, &[ACCEPT, SEND_PROTOBUF], &body);
    let updated: corev1::ConfigMap = decode(&resp.expect_status(200).body, "ConfigMap");
    assert_eq!(updated.data["mode"], "updated");
    assert_ne!(meta_of(&updated.metadata).resource_version, metadata.resource_version);

    let pod = corev1::Pod {
        metadata: Some(meta::ObjectMeta {
            generate_name: Some("mirror-".into()),
            ..Default::default()
        }),
        spec: Some(corev1::PodSpec {
            node_name: Some("edge-1".into()),
            containers: vec![corev1::Container {
                name: Some("app".into()),
                image: Some("registry.example/app:2".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let body = envelope("v1", "Pod", pod.encode_to_vec());
    let resp = kubelet.request("POST", PODS, &[ACCEPT, SEND_PROTOBUF], &body);
    let created: corev1::Pod = decode(&resp.expect_status(201).body, "Pod");
    assert!(name_of(&created.metadata).starts_with("mirror-"));
    let spec = created.spec.expect("spec");
    assert_eq!(spec.containers[0].image.as_deref(), Some("registry.example/app:2"));

    let garbage = kubelet.request("POST", PODS, &[ACCEPT, SEND_PROTOBUF], b"k8s\0\xff\xff");
    assert_eq!(garbage.status, 400);
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";

/// A Lease renewal as kubelet sends it: protobuf, `renewTime` in microseconds.
fn lease_body(name: &str, resource_version: Option<&str>, renew_micros: i32) -> Vec<u8> {
    let lease = coordinationv1::Lease {
        metadata: Some(meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-node-lease".into()),
            resource_version: resource_version.map(Into::into),
            ..Default::default()
        }),
        spec: Some(coordinationv1::LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_714_557_600),
                nanos: Some(renew_micros * 1000),
            }),
            ..Default::default()
        }),
    };
    envelope("coordination.k8s.io/v1", "Lease", lease.encode_to_vec())
}

fn lease_version(resp: Response, status: u16) -> String {
    let lease: coordinationv1::Lease = decode(&resp.expect_status(status).body, "Lease");
    meta_of(&lease.metadata).resource_version.clone().unwrap_or_default()
}

/// kube's Lease strategy: no unconditional update, a stale version is a conflict, and a PUT
/// of a missing Lease creates it. Times keep their microseconds both ways.
#[test]
fn the_node_lease_is_renewed_by_version_in_protobuf() {
    let (_fake, mut kubelet, _env) = fake("pb-lease", &[]);
    let path = format!("{LEASES}/edge-1");
    let seeded: coordinationv1::Lease =
        decode(&get_protobuf(&mut kubelet, &path, &[]).body, "Lease");
    let version = meta_of(&seeded.metadata).resource_version.clone().expect("a version");
    let renew = |kubelet: &mut Client, version: Option<&str>, micros| {
        kubelet.request(
            "PUT",
            &path,
            &[ACCEPT, SEND_PROTOBUF],
            &lease_body("edge-1", version, micros),
        )
    };

    let unversioned = renew(&mut kubelet, None, 1);
    assert_eq!(unversioned.status, 422, "{}", unversioned.text());
    assert!(
        unversioned.text().contains("must be specified for an update"),
        "{}",
        unversioned.text()
    );
    let renewed = lease_version(renew(&mut kubelet, Some(&version), 123_456), 200);
    assert_ne!(renewed, version);
    let stale = renew(&mut kubelet, Some(&version), 2);
    assert_eq!(stale.status, 409, "{}", stale.text());
    let stored = kubelet.get(&path).expect_status(200).json();
    assert_eq!(stored["spec"]["renewTime"], json!("2024-05-01T10:00:00.123456Z"));

    let created = kubelet.request(
        "PUT",
        &format!("{LEASES}/edge-2"),
        &[ACCEPT, SEND_PROTOBUF],
        &lease_body("edge-2", None, 0),
    );
    assert!(!lease_version(created, 201).is_empty(), "created on update");
}

/// Opens a protobuf watch of the default pods with `query`.
fn watch_pods(client: &mut Client, query: &str) -> WatchStream {
    let stream = client
        .try_watch(&format!("{PODS}?watch=true&{query}"), &[ACCEPT])
        .unwrap_or_else(|e| panic!("watch: {e}"));
    assert_eq!(stream.head.headers.get("content-type"), Some(PROTOBUF_WATCH));
    stream
}

/// The next watch event, as its type and Pod (or bookmark); panics if none comes in time.
fn next_pod_event(stream: &mut WatchStream) -> (String, corev1::Pod) {
    let event = next_watch_event(stream, WAIT).expect("a watch frame in time");
    event_object(&event, "Pod")
}

#[test]
fn a_watch_sends_frames_for_writes_then_bookmarks() {
    let (fake, mut kubelet, env) = fake("pb-watch", &["--bookmark-interval-ms", "100"]);
    let list: corev1::PodList = decode(&get_protobuf(&mut kubelet, PODS, &[]).body, "PodList");
    let from = list.metadata.and_then(|m| m.resource_version).expect("resourceVersion");
    let mut stream =
        watch_pods(&mut kubelet, &format!("resourceVersion={from}&allowWatchBookmarks=true"));

    let mut admin = env.client(fake.port, Some("admin"));
    let json = [("Content-Type", "application/json")];
    admin.request("POST", PODS, &json, &serde_json::to_vec(&pod("w")).unwrap()).expect_status(201);
    let patch = [("Content-Type", "application/merge-patch+json")];
    let label = br#"{"metadata":{"labels":{"step":"two"}}}"#;
    admin.request("PATCH", &format!("{PODS}/w"), &patch, label).expect_status(200);
    admin.request("DELETE", &format!("{PODS}/w"), &[], b"").expect_status(200);

    let mut changes = Vec::new();
    let bookmark = loop {
        let (kind, pod) = next_pod_event(&mut stream);
        match kind.as_str() {
            "BOOKMARK" if changes.len() == 3 => break pod,
            "BOOKMARK" => {}
            _ => changes.push((kind, pod)),
        }
    };
    let kinds: Vec<&str> = changes.iter().map(|(kind, _)| kind.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert!(changes.iter().all(|(_, pod)| name_of(&pod.metadata) == "w"));
    assert_eq!(meta_of(&changes[1].1.metadata).labels.get("step").map(String::as_str), Some("two"));
    let deleted_rv = meta_of(&changes[2].1.metadata).resource_version.clone();
    let bookmark_meta = meta_of(&bookmark.metadata);
    assert_eq!(bookmark_meta.resource_version, deleted_rv, "the bookmark is at the last write");
    assert_eq!(bookmark_meta.name.as_deref(), Some(""), "a bookmark has only a resourceVersion");
    assert_eq!(bookmark.spec, None);
}

#[test]
fn send_initial_events_ends_with_the_annotated_bookmark() {
    let (_fake, mut kubelet, _env) = fake("pb-initial", &[]);
    let query = "sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan";
    let mut stream = watch_pods(&mut kubelet, query);
    let mut added = Vec::new();
    let end = loop {
        let (kind, pod) = next_pod_event(&mut stream);
        match kind.as_str() {
            "ADDED" => added.push(name_of(&pod.metadata).to_string()),
            "BOOKMARK" => break pod,
            other => panic!("unexpected {other} event"),
        }
    };
    assert_eq!(added, ["db-1", "web-1", "web-2"]);
    let annotations = &meta_of(&end.metadata).annotations;
    assert_eq!(annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));
}

#[test]
fn an_expired_watch_gets_an_error_frame_with_a_status() {
    // The seed alone is more than two writes.
    let (_fake, mut kubelet, _env) = fake("pb-expired", &["--history", "2"]);
    let mut stream = watch_pods(&mut kubelet, "resourceVersion=1");
    let event = next_watch_event(&mut stream, WAIT).expect("the ERROR frame");
    let (kind, status): (String, meta::Status) = event_object(&event, "Status");
    assert_eq!(kind, "ERROR");
    assert_eq!((status.code, status.reason.as_deref()), (Some(410), Some("Expired")));
    assert!(stream.wait_closed(WAIT), "the watch ends after its ERROR");
}

#[test]
fn errors_follow_the_first_of_protobuf_and_json() {
    let (_fake, mut kubelet, _env) = fake("pb-status", &[]);
    let missing = format!("{PODS}/missing");
    let resp = kubelet.request("GET", &missing, &[ACCEPT], b"");
    assert_eq!((resp.status, resp.header("content-type")), (404, Some(PROTOBUF)));
    let unknown = open_envelope(&resp.body);
    assert_eq!(type_meta(&unknown), ("v1".to_string(), "Status".to_string()));
    let status: meta::Status = decode(&resp.body, "Status");
    assert_eq!((status.code, status.reason.as_deref()), (Some(404), Some("NotFound")));
    assert_eq!(status.status.as_deref(), Some("Failure"));
    let details = status.details.expect("details");
    assert_eq!((details.name.as_deref(), details.kind.as_deref()), (Some("missing"), Some("pods")));

    let json_first = [("Accept", "application/json, application/vnd.kubernetes.protobuf")];
    assert_status_body(&kubelet.request("GET", &missing, &json_first, b""), 404);
}

#[test]
fn custom_resources_answer_json_to_protobuf_clients() {
    let (_fake, mut kubelet, _env) = fake("pb-crd", &[]);
    let widgets = "/apis/example.com/v1/namespaces/default/widgets";
    let resp = kubelet.request("GET", widgets, &[ACCEPT], b"").expect_status(200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let list: Value = resp.json();
    assert_eq!(list["items"][0]["metadata"]["name"], "sprocket");
    let body = envelope("example.com/v1", "Widget", Vec::new());
    let refused = kubelet.request("POST", widgets, &[ACCEPT, SEND_PROTOBUF], &body);
    assert_eq!(refused.status, 415, "no protobuf body for a custom resource");
}
