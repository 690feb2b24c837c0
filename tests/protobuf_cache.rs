//! Protobuf kept end to end (issue 15): kubelet's protobuf LIST and WATCH go to the cloud as
//! protobuf, the list is cached as protobuf and kept current by the protobuf watch, and with
//! the cloud gone the list and a new watch are answered in protobuf with the watched
//! changes — all read with the real generated types (k8s-pb). A cache written by an older,
//! JSON-only configuration still serves kubelet after an offline upgrade.

mod common;

use std::time::Duration;

use common::protobuf::{
    KUBELET_ACCEPT, PROTOBUF, PROTOBUF_WATCH, decode, event_object, next_watch_event,
};
use common::*;
use k8s_pb::api::core::v1 as corev1;

const PODS: &str = "/api/v1/namespaces/default/pods";
const ACCEPT: (&str, &str) = ("Accept", KUBELET_ACCEPT);
const WAIT: Duration = Duration::from_secs(10);

fn assert_served_from_cache(resp: &Response) {
    assert_eq!(resp.header("x-lite-apiserver-cache"), Some("hit"), "{:?}", resp.headers);
}

fn list_protobuf(client: &mut Client) -> (Response, corev1::PodList) {
    let resp = client.request("GET", PODS, &[ACCEPT], b"").expect_status(200);
    assert_eq!(resp.header("content-type"), Some(PROTOBUF), "the list is not protobuf");
    let list = decode::<corev1::PodList>(&resp.body, "PodList");
    (resp, list)
}

fn names(list: &corev1::PodList) -> Vec<String> {
    list.items.iter().map(pod_name).collect()
}

fn pod_name(pod: &corev1::Pod) -> String {
    pod.metadata.as_ref().and_then(|m| m.name.clone()).unwrap_or_default()
}

fn list_version(list: &corev1::PodList) -> String {
    list.metadata.as_ref().and_then(|m| m.resource_version.clone()).unwrap_or_default()
}

/// Reads protobuf watch events until one of `event_type` about pod `name`.
fn expect_event(stream: &mut WatchStream, event_type: &str, name: &str) -> corev1::Pod {
    loop {
        let event = next_watch_event(stream, WAIT)
            .unwrap_or_else(|| panic!("no {event_type} {name} on the watch"));
        let (seen_type, pod) = event_object::<corev1::Pod>(&event, "Pod");
        if seen_type == event_type && pod_name(&pod) == name {
            return pod;
        }
    }
}

#[test]
fn a_protobuf_list_kept_current_by_its_protobuf_watch_is_served_offline_with_the_changes() {
    let mut edge = Edge::start("protobuf-kept-current", &[], &[]);
    let mut kubelet = edge.kubelet();
    let (_, listed) = list_protobuf(&mut kubelet);
    let before = names(&listed);
    assert!(before.len() >= 2, "the fake seeds pods: {before:?}");
    let gone = before[0].clone();

    let watch_path = format!("{PODS}?watch=true&resourceVersion={}", list_version(&listed));
    let mut watcher = edge.kubelet();
    let mut stream = watcher.try_watch(&watch_path, &[ACCEPT]).expect("a protobuf watch");
    assert_eq!(stream.head.headers.get("content-type"), Some(PROTOBUF_WATCH));
    edge.create_pod_upstream("born-while-watched");
    let added = expect_event(&mut stream, "ADDED", "born-while-watched");
    edge.delete_pod_upstream(&gone);
    expect_event(&mut stream, "DELETED", &gone);
    let last_version = added.metadata.and_then(|m| m.resource_version).unwrap_or_default();
    // The cache applies the events on its own thread; the summary shows the list's items.
    edge.wait_cache_summary(|summary| {
        let pods = &summary["identities"]["cn:system:node:edge-1"]["pods"]["content_types"];
        pods[PROTOBUF]["list_items"].as_u64() == Some(before.len() as u64)
    });

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    let (offline, offline_list) = list_protobuf(&mut kubelet);
    assert_served_from_cache(&offline);
    let offline_names = names(&offline_list);
    assert!(offline_names.contains(&"born-while-watched".to_string()), "{offline_names:?}");
    assert!(!offline_names.contains(&gone), "{gone} was deleted: {offline_names:?}");
    let version: u64 = list_version(&offline_list).parse().expect("a numeric version");
    assert!(version >= last_version.parse().expect("numeric"), "the list's version moved on");

    // A new watch from the start replays that state as protobuf ADDED frames.
    let mut replay = kubelet.try_watch(&format!("{PODS}?watch=true"), &[ACCEPT]).expect("replay");
    assert_eq!(replay.head.headers.get("content-type"), Some(PROTOBUF_WATCH));
    let mut replayed = Vec::new();
    while let Some(event) = next_watch_event(&mut replay, Duration::from_secs(2)) {
        let (event_type, pod) = event_object::<corev1::Pod>(&event, "Pod");
        assert_eq!(event_type, "ADDED");
        replayed.push(pod_name(&pod));
        if replayed.len() == offline_names.len() {
            break;
        }
    }
    assert_eq!(replayed, offline_names);
}

#[test]
fn a_json_cache_from_before_serves_kubelet_after_an_offline_upgrade() {
    // The old configuration: protobuf clients asked the cloud for JSON.
    let mut edge = Edge::start("protobuf-upgrade", &[], &["--modify-request-accept=true"]);
    let mut kubelet = edge.kubelet();
    let online = kubelet.request("GET", PODS, &[ACCEPT], b"").expect_status(200);
    assert_eq!(online.header("content-type"), Some("application/json"));
    edge.wait_stored(1);

    // Upgraded (protobuf kept) while the link is down.
    edge.cut_cloud();
    edge.lite.args.retain(|arg| arg != "--modify-request-accept=true");
    edge.restart_lite();
    let mut kubelet = edge.kubelet();
    let offline = kubelet.request("GET", PODS, &[ACCEPT], b"").expect_status(200);
    assert_served_from_cache(&offline);
    assert_eq!(offline.header("content-type"), Some("application/json"));
    assert_eq!(offline.json(), online.json());
    // A client that takes protobuf only is not given JSON.
    let strict = [("Accept", PROTOBUF)];
    let refused = kubelet.request("GET", PODS, &strict, b"");
    assert_eq!(refused.status, 503, "{}", refused.text());
}
