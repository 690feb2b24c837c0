//! The engine with protobuf answers, built and read with the real generated Kubernetes types
//! (k8s-pb): protobuf lists kept current by protobuf watch frames, offline replays in
//! protobuf, and JSON entries cached earlier serving clients that accept JSON too.

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime as kruntime;
use prost::Message;

use super::engine::Engine;
use super::key::{Classified, ReadKey, WatchRequest, classify, classify_write};
use super::memory::MemoryStore;
use super::protobuf_list::tests::{envelope, pod_list};
use super::sqlite::SqliteStore;
use super::sqlite::tests::temp_dir;
use super::store::Store;
use super::wire::Wire;
use super::write::WriteAnswer;
use super::{Lookup, Reply};

const KUBELET: &str = "cn:system:node:edge-1";
const PODS: &str = "/api/v1/namespaces/default/pods";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// kubelet's and kube-proxy's Accept.
const KUBELET_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";

fn pod(name: &str, rv: &str, phase: &str) -> core::Pod {
    core::Pod {
        metadata: Some(meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            resource_version: Some(rv.into()),
            ..Default::default()
        }),
        spec: Some(core::PodSpec { node_name: Some("edge-1".into()), ..Default::default() }),
        status: Some(core::PodStatus { phase: Some(phase.into()), ..Default::default() }),
    }
}

fn frame(event_type: &str, object: Vec<u8>) -> Vec<u8> {
    let event = meta::WatchEvent {
        r#type: Some(event_type.into()),
        object: Some(kruntime::RawExtension { raw: Some(object) }),
    };
    let event = event.encode_to_vec();
    [(event.len() as u32).to_be_bytes().as_slice(), &event].concat()
}

fn unwrap_envelope(body: &[u8]) -> Vec<u8> {
    let unknown = kruntime::Unknown::decode(&body[4..]).expect("an envelope");
    unknown.raw.unwrap_or_default()
}

fn decode_list(body: &[u8]) -> core::PodList {
    core::PodList::decode(unwrap_envelope(body).as_slice()).expect("a PodList")
}

/// The frames of a watch stream, decoded.
fn decode_frames(mut stream: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut events = Vec::new();
    while !stream.is_empty() {
        let length = u32::from_be_bytes(stream[..4].try_into().expect("a prefix")) as usize;
        let event = meta::WatchEvent::decode(&stream[4..4 + length]).expect("a WatchEvent");
        let raw = event.object.and_then(|o| o.raw).expect("an object");
        events.push((event.r#type.unwrap_or_default(), unwrap_envelope(&raw)));
        stream = &stream[4 + length..];
    }
    events
}

fn read_key(target: &str, accept: &str) -> ReadKey {
    match classify(KUBELET, "GET", target, Some(accept)) {
        Classified::Read(key) => key,
        other => panic!("{target}: not a read: {other:?}"),
    }
}

fn watch_request(target: &str, accept: &str) -> WatchRequest {
    match classify(KUBELET, "GET", target, Some(accept)) {
        Classified::Watch(request) => request,
        other => panic!("{target}: not a watch: {other:?}"),
    }
}

fn hit<S: Store>(engine: &mut Engine<S>, key: &ReadKey) -> (String, Vec<u8>) {
    match engine.answer(&Lookup::Read(key.clone())).expect("lookup") {
        Reply::Hit(response) => (response.content_type, response.body),
        other => panic!("expected a hit, got {other:?}"),
    }
}

fn phases(list: &core::PodList) -> Vec<(String, String)> {
    let name = |p: &core::Pod| p.metadata.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
    let phase = |p: &core::Pod| p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    list.items.iter().map(|p| (name(p), phase(p))).collect()
}

fn run_all<S: Store>(make: impl Fn() -> S) {
    let engine = || Engine::new(make(), 1 << 30);
    protobuf_lists_follow_protobuf_watch_frames(&mut engine());
    protobuf_watches_replay_in_protobuf(&mut engine());
    json_entries_serve_clients_that_accept_json(&mut engine());
    json_delete_answers_leave_protobuf_lists_consistent(&mut engine());
    protobuf_delete_answers_remove_what_is_gone(&mut engine());
}

#[test]
fn memory_engine_protobuf_behaviour() {
    run_all(MemoryStore::new);
}

#[test]
fn sqlite_engine_protobuf_behaviour() {
    run_all(|| SqliteStore::open(&temp_dir("engine-protobuf")).expect("open"));
}

fn protobuf_lists_follow_protobuf_watch_frames<S: Store>(engine: &mut Engine<S>) {
    let list = read_key(PODS, KUBELET_ACCEPT);
    let body = pod_list("10", vec![pod("a", "8", "Pending"), pod("b", "9", "Pending")]);
    engine.store_response(&list, PROTOBUF, body.clone()).expect("store");
    assert_eq!(hit(engine, &list), (PROTOBUF.to_string(), body), "rebuilt byte for byte");
    let get_b = read_key(&format!("{PODS}/b"), KUBELET_ACCEPT);
    let b_document = envelope("Pod", pod("b", "9", "Pending").encode_to_vec());
    engine.store_response(&get_b, PROTOBUF, b_document).expect("store");

    let stream = [
        frame("MODIFIED", envelope("Pod", pod("b", "11", "Running").encode_to_vec())),
        frame("ADDED", envelope("Pod", pod("c", "12", "Pending").encode_to_vec())),
        frame("DELETED", envelope("Pod", pod("a", "13", "Pending").encode_to_vec())),
    ]
    .concat();
    let watch = watch_request(&format!("{PODS}?watch=1&resourceVersion=10"), KUBELET_ACCEPT);
    engine.watch_opened(1, &watch);
    // Pieces that end inside a length prefix and inside a frame.
    for piece in [&stream[..2], &stream[2..7], &stream[7..]] {
        engine.watch_bytes(1, piece).expect("frames");
    }

    let (content_type, rebuilt) = hit(engine, &list);
    assert_eq!(content_type, PROTOBUF);
    let listed = decode_list(&rebuilt);
    let list_version = listed.metadata.as_ref().and_then(|m| m.resource_version.as_deref());
    assert_eq!(list_version, Some("13"));
    assert_eq!(
        phases(&listed),
        [("b".to_string(), "Running".to_string()), ("c".to_string(), "Pending".to_string())]
    );
    let (_, b_now) = hit(engine, &get_b);
    assert_eq!(
        core::Pod::decode(unwrap_envelope(&b_now).as_slice()),
        Ok(pod("b", "11", "Running"))
    );
}

fn protobuf_watches_replay_in_protobuf<S: Store>(engine: &mut Engine<S>) {
    let list = read_key(PODS, KUBELET_ACCEPT);
    let pods = vec![pod("a", "8", "Pending"), pod("b", "9", "Running")];
    engine.store_response(&list, PROTOBUF, pod_list("10", pods.clone())).expect("store");
    let start = |engine: &mut Engine<S>, query: &str| {
        let request = watch_request(&format!("{PODS}?watch=1{query}"), KUBELET_ACCEPT);
        engine.answer(&Lookup::WatchStart(request)).expect("lookup")
    };
    let Reply::WatchReplay { wire, initial_events, bookmark_event, .. } = start(
        engine,
        "&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
    ) else {
        panic!("a replay");
    };
    assert_eq!(wire, Wire::Protobuf);
    let events = decode_frames(&initial_events);
    assert_eq!(events.len(), 3, "two ADDED and the end bookmark");
    for ((event_type, object), expected) in events.iter().zip(&pods) {
        assert_eq!(event_type, "ADDED");
        assert_eq!(core::Pod::decode(object.as_slice()).as_ref(), Ok(expected));
    }
    let (event_type, object) = &events[2];
    assert_eq!(event_type, "BOOKMARK");
    let end = core::Pod::decode(object.as_slice()).expect("a bookmark Pod");
    let end_meta = end.metadata.expect("metadata");
    assert_eq!(end_meta.resource_version.as_deref(), Some("10"));
    assert_eq!(end_meta.annotations["k8s.io/initial-events-end"], "true");
    let bookmarks = decode_frames(&bookmark_event);
    assert_eq!(bookmarks[0].0, "BOOKMARK");

    let Reply::WatchExpired { wire } = start(engine, "&resourceVersion=9") else {
        panic!("an older version is expired");
    };
    let expired = decode_frames(&wire.expired_event("9"));
    let status = meta::Status::decode(expired[0].1.as_slice()).expect("a Status");
    assert_eq!((expired[0].0.as_str(), status.code), ("ERROR", Some(410)));
}

fn json_entries_serve_clients_that_accept_json<S: Store>(engine: &mut Engine<S>) {
    let json_list = read_key(PODS, "application/json");
    let body = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"a","namespace":"default","resourceVersion":"4"}}]}"#;
    engine.store_response(&json_list, "application/json", body.to_vec()).expect("store");
    let get = read_key(&format!("{PODS}/a"), "application/json");
    engine.store_response(&get, "application/json", b"{\"kind\":\"Pod\"}".to_vec()).expect("store");

    assert_eq!(
        hit(engine, &read_key(PODS, KUBELET_ACCEPT)),
        ("application/json".into(), body.to_vec())
    );
    let (content_type, _) = hit(engine, &read_key(&format!("{PODS}/a"), KUBELET_ACCEPT));
    assert_eq!(content_type, "application/json");
    let protobuf_only = read_key(PODS, PROTOBUF);
    assert!(matches!(engine.answer(&Lookup::Read(protobuf_only)), Ok(Reply::Miss)));

    let watch = watch_request(&format!("{PODS}?watch=1"), KUBELET_ACCEPT);
    let Ok(Reply::WatchReplay { wire, initial_events, .. }) =
        engine.answer(&Lookup::WatchStart(watch))
    else {
        panic!("a JSON replay");
    };
    assert_eq!(wire, Wire::Json);
    assert!(initial_events.starts_with(b"{\"type\":\"ADDED\""));
    let watch_protobuf_only = watch_request(&format!("{PODS}?watch=1"), PROTOBUF);
    assert!(matches!(engine.answer(&Lookup::WatchStart(watch_protobuf_only)), Ok(Reply::Miss)));

    // Once a protobuf list is cached, protobuf clients get it.
    engine
        .store_response(&read_key(PODS, KUBELET_ACCEPT), PROTOBUF, pod_list("6", vec![]))
        .expect("store");
    assert_eq!(hit(engine, &read_key(PODS, KUBELET_ACCEPT)).0, PROTOBUF);
}

fn json_delete_answers_leave_protobuf_lists_consistent<S: Store>(engine: &mut Engine<S>) {
    let list = read_key(PODS, KUBELET_ACCEPT);
    engine
        .store_response(&list, PROTOBUF, pod_list("10", vec![pod("a", "8", "Running")]))
        .expect("store");
    let terminating = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"default","resourceVersion":"11","deletionTimestamp":"2026-12-01T00:00:00Z","deletionGracePeriodSeconds":30}}"#;
    let answer = WriteAnswer {
        write: classify_write("DELETE", &format!("{PODS}/a")).expect("a DELETE"),
        status: 200,
        content_type: "application/json".into(),
        body: terminating.to_vec(),
    };
    engine.write_answered(&answer).expect("write answer");
    let listed = decode_list(&hit(engine, &list).1);
    assert_eq!(phases(&listed), [("a".to_string(), "Running".to_string())], "still protobuf");
    let gone = WriteAnswer {
        body: br#"{"kind":"Status","apiVersion":"v1","status":"Success"}"#.to_vec(),
        ..answer
    };
    engine.write_answered(&gone).expect("write answer");
    assert!(decode_list(&hit(engine, &list).1).items.is_empty(), "a gone object leaves every list");
}

/// kubelet's DELETE of a pod, answered in protobuf: a Status or the object removed for good
/// takes it out of every list and read; an object still terminating changes nothing.
fn protobuf_delete_answers_remove_what_is_gone<S: Store>(engine: &mut Engine<S>) {
    let list = read_key(PODS, KUBELET_ACCEPT);
    let pods = vec![pod("a", "8", "Running"), pod("b", "9", "Running"), pod("c", "10", "Running")];
    engine.store_response(&list, PROTOBUF, pod_list("10", pods)).expect("store");
    let get_a = read_key(&format!("{PODS}/a"), KUBELET_ACCEPT);
    engine
        .store_response(&get_a, PROTOBUF, envelope("Pod", pod("a", "8", "Running").encode_to_vec()))
        .expect("store");
    let answer = |name: &str, body: Vec<u8>| WriteAnswer {
        write: classify_write("DELETE", &format!("{PODS}/{name}")).expect("a DELETE"),
        status: 200,
        content_type: PROTOBUF.into(),
        body,
    };
    let with_deletion = |name: &str, rv: &str, grace: i64, finalizers: Vec<String>| {
        let mut object = pod(name, rv, "Running");
        let metadata = object.metadata.as_mut().expect("metadata");
        metadata.deletion_timestamp =
            Some(meta::Time { seconds: Some(1_796_083_200), nanos: Some(0) });
        metadata.deletion_grace_period_seconds = Some(grace);
        metadata.finalizers = finalizers;
        envelope("Pod", object.encode_to_vec())
    };

    // Terminating: a grace period left, or a finalizer.
    engine.write_answered(&answer("b", with_deletion("b", "11", 30, vec![]))).expect("answer");
    let held = with_deletion("c", "12", 0, vec!["example.com/hold".into()]);
    engine.write_answered(&answer("c", held)).expect("answer");
    let names = |engine: &mut Engine<S>| {
        phases(&decode_list(&hit(engine, &list).1))
            .into_iter()
            .map(|(name, _)| name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(engine), ["a", "b", "c"], "terminating objects stay");

    // kubelet's last DELETE (grace 0, no finalizers) answers the removed object.
    engine.write_answered(&answer("a", with_deletion("a", "13", 0, vec![]))).expect("answer");
    assert_eq!(names(engine), ["b", "c"], "the removed pod left the list");
    assert!(
        matches!(engine.answer(&Lookup::Read(get_a)).expect("lookup"), Reply::Miss),
        "and its GET"
    );
    // A Status answer, success or not.
    let status = |status: &str| {
        let status = meta::Status { status: Some(status.into()), ..Default::default() };
        envelope("Status", status.encode_to_vec())
    };
    engine.write_answered(&answer("b", status("Failure"))).expect("answer");
    assert_eq!(names(engine), ["b", "c"], "a failure removes nothing");
    engine.write_answered(&answer("b", status("Success"))).expect("answer");
    assert_eq!(names(engine), ["c"]);
}
