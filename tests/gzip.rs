//! gzip on the cloud link (issue 15): a LIST over 128 KiB crosses the link gzipped whether
//! or not the client asked for gzip; a client that accepts gzip gets the cloud's compressed
//! bytes, one that does not gets them decompressed; the cache keeps the plain list and
//! answers each client offline as it asked; corrupt gzip from the cloud caches nothing.
//! The link's bytes are read from `lite_apiserver_upstream_bytes_total`.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const GZIP: (&str, &str) = ("Accept-Encoding", "gzip");
const RECEIVED: &str = "lite_apiserver_upstream_bytes_total{direction=\"received\"}";
const SETTLE: Duration = Duration::from_secs(15);

/// Pods with a long annotation, so `count` of them make a list well over 128 KiB.
fn create_big_pods(edge: &Edge, count: usize) {
    let mut admin = edge.cloud_admin();
    for i in 0..count {
        let mut body = pod(&format!("big-{i}"));
        let note: String = (0..60).map(|w| format!("word{} ", (w * 7 + i) % 97)).collect();
        body["metadata"]["annotations"] = json!({ "example.com/description": note });
        let bytes = serde_json::to_vec(&body).unwrap();
        let headers = [("Content-Type", "application/json")];
        admin.request("POST", PODS, &headers, &bytes).expect_status(201);
    }
}

fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(body).read_to_end(&mut plain)?;
    Ok(plain)
}

fn names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().expect("a list");
    items.iter().map(|item| item["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn is_gzip(response: &Response) -> bool {
    response.header("content-encoding").is_some_and(|e| e.eq_ignore_ascii_case("gzip"))
}

/// Waits until the proxy holds no cloud connection (their bytes are all counted then).
fn wait_upstreams_closed(edge: &Edge) {
    let closed = wait_for(SETTLE, || {
        (edge.metric("lite_apiserver_open_upstream_connections") == 0).then_some(())
    });
    assert!(closed.is_some(), "cloud connections stay open:\n{}", edge.metrics());
}

#[test]
fn a_large_list_crosses_the_link_gzipped_and_is_cached_plain() {
    let mut edge = Edge::start("gzip-list", &[], &[]);
    create_big_pods(&edge, 250);
    let plain_direct = edge.cloud_admin().get(PODS).expect_status(200);
    assert!(!is_gzip(&plain_direct), "no Accept-Encoding, no gzip");
    let plain_size = plain_direct.body.len() as u64;
    assert!(plain_size > 128 * 1024, "the list must be over 128 KiB: {plain_size}");
    let gzip_direct = edge.cloud_admin().request("GET", PODS, &[GZIP], b"").expect_status(200);
    assert!(is_gzip(&gzip_direct), "the fake gzips as kube-apiserver does");
    let expected = names(&plain_direct.json());

    let received_before = edge.metric(RECEIVED);
    let mut kubelet = edge.kubelet();
    let zipped = kubelet.request("GET", PODS, &[GZIP], b"").expect_status(200);
    assert!(is_gzip(&zipped), "a client that accepts gzip gets gzip: {:?}", zipped.headers);
    let unzipped: Value = serde_json::from_slice(&gunzip(&zipped.body).unwrap()).unwrap();
    assert_eq!(names(&unzipped), expected);
    let plain = kubelet.get(PODS).expect_status(200);
    assert!(!is_gzip(&plain), "a client that did not ask gets a plain body");
    assert_eq!(names(&plain.json()), expected);
    edge.wait_stored(1);

    edge.cut_cloud();
    wait_upstreams_closed(&edge);
    let on_link = edge.metric(RECEIVED) - received_before;
    println!(
        "plain list {plain_size} B, gzipped by the fake {} B; \
         received on the link for both lists (and the probes): {on_link} B",
        gzip_direct.body.len()
    );
    // Both lists crossed the link compressed: together less than one plain list.
    assert!(on_link < plain_size, "{on_link} B on the link for two lists of {plain_size} B");

    let mut offline = edge.kubelet();
    let zipped = offline.request("GET", PODS, &[GZIP], b"").expect_status(200);
    assert!(zipped.header("x-lite-apiserver-cache").is_some(), "served from the cache");
    assert!(is_gzip(&zipped), "offline, gzip as asked: {:?}", zipped.headers);
    let plain = offline.get(PODS).expect_status(200);
    assert!(!is_gzip(&plain), "offline, plain as asked");
    let unzipped = gunzip(&zipped.body).unwrap();
    assert_eq!(unzipped, plain.body, "the same cached list either way");
    assert_eq!(names(&plain.json()), expected);
}

#[test]
fn corrupt_gzip_from_the_cloud_is_passed_on_or_refused_and_never_cached() {
    let mut edge = Edge::start("gzip-corrupt", &[], &[]);
    create_big_pods(&edge, 250);
    let mut admin = edge.cloud_admin();
    admin.request("POST", "/debug/fault?mode=bad-gzip", &[], b"").expect_status(200);

    let mut kubelet = edge.kubelet();
    let zipped = kubelet.request("GET", PODS, &[GZIP], b"").expect_status(200);
    assert!(is_gzip(&zipped), "relayed as the cloud sent it");
    assert!(gunzip(&zipped.body).is_err(), "the cloud's bytes, corrupt as they came");
    let plain = kubelet.get(PODS);
    assert_eq!(plain.status, 502, "nothing could be decompressed: {}", plain.text());
    assert_eq!(plain.json()["kind"], "Status");

    // Still serving, and nothing was cached: offline the list is not there.
    let one = "/api/v1/namespaces/default/pods/big-0";
    kubelet.get(one).expect_status(200);
    edge.wait_stored(1);
    edge.cut_cloud();
    let mut offline = edge.kubelet();
    assert_eq!(offline.get(one).expect_status(200).json()["metadata"]["name"], "big-0");
    let missing = offline.get(PODS);
    assert_eq!(missing.status, 503, "the corrupt list was not cached: {}", missing.text());
}
