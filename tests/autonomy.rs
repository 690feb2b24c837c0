//! Integration tests of edge autonomy (issue 3): the real lite-apiserver binary in front of the
//! fake kube-apiserver caches what it proxies, then the fake is stopped (the cloud link is cut)
//! and the node keeps getting its last answers from the cache, across restarts, per identity,
//! kept current by watches; the cloud coming back means fresh data again.
//!
//! The cache thread writes asynchronously (and lookups overtake queued writes), so every test
//! waits for `lite_apiserver_cache_stored_total` on the diagnostics port before cutting the link.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::protobuf;
use common::*;
use k8s_pb::Metadata;
use k8s_pb::api::core::v1 as corev1;
use k8s_pb::api::discovery::v1 as discoveryv1;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const SECRET: &str = "/api/v1/namespaces/kube-system/secrets/db-password";
/// The seed secret's `data.password` (base64 of `s3cr3t`): must never leak to another identity.
const SECRET_DATA: &str = "czNjcjN0";
const CACHE_HEADER: &str = "x-lite-apiserver-cache";
/// What kubelet and kube-proxy send.
const KUBELET_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";
/// What kubectl sends for `kubectl get`.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// What newer kubectl sends for `/api` and `/apis`.
const AGGREGATED_ACCEPT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
const TOKEN: &str = "pod-t0ken-4f2a";
/// Generous bound for anything asynchronous (cache writes, prober, watch events).
const SETTLE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Assertions about where an answer came from.
// ---------------------------------------------------------------------------------------

/// An answer proxied from the cloud (the fake stamps its identity header; no cache header).
fn assert_from_cloud(resp: &Response) {
    assert!(
        resp.header("x-fake-user").is_some(),
        "not from the cloud: {:?}\n{}",
        resp.headers,
        resp.text()
    );
    assert!(
        resp.header(CACHE_HEADER).is_none(),
        "a proxied answer carries the cache header: {:?}",
        resp.headers
    );
}

/// `offline` is `online` replayed from the cache: same status, Content-Type and bytes.
fn assert_replayed(offline: &Response, online: &Response, what: &str) {
    assert_eq!(offline.status, online.status, "{what}: status; body {}", offline.text());
    assert_eq!(
        offline.header(CACHE_HEADER),
        Some("hit"),
        "{what}: no cache hit header: {:?}",
        offline.headers
    );
    assert_eq!(
        offline.header("content-type"),
        online.header("content-type"),
        "{what}: Content-Type"
    );
    assert!(
        offline.body == online.body,
        "{what}: cached body differs from the online one\n online ({} bytes): {}\noffline ({} bytes): {}",
        online.body.len(),
        online.text(),
        offline.body.len(),
        offline.text()
    );
}

/// An offline miss of a collection (or discovery): `503` with a Kubernetes `Status` body,
/// and no cached data.
fn assert_offline_miss(resp: &Response, what: &str) {
    assert_miss(resp, 503, what);
}

/// An offline miss of one object: `404 NotFound` with a Kubernetes `Status` body, as
/// kube-apiserver answers for a missing object.
fn assert_offline_object_miss(resp: &Response, what: &str) {
    assert_miss(resp, 404, what);
    assert_eq!(resp.json()["reason"], "NotFound", "{what}: {}", resp.text());
}

/// An offline watch the cache must not serve: refused with a `503`, never a `200` stream.
fn assert_watch_refused(client: &mut Client, path: &str, headers: &[(&str, &str)], what: &str) {
    match client.try_watch(path, headers) {
        Err(e) => assert!(e.to_string().contains("503"), "{what}: {e}"),
        Ok(mut stream) => {
            let event = stream.next_event(Duration::from_secs(5));
            panic!("{what}: answered 200 (first event {event:?}); expected a 503 Status");
        }
    }
}

fn assert_miss(resp: &Response, status: u16, what: &str) {
    assert_eq!(resp.status, status, "{what}: expected a {status} miss: {}", resp.text());
    assert_status_body(resp, status);
    assert_ne!(resp.header(CACHE_HEADER), Some("hit"), "{what}: a miss marked as a hit");
}

fn item_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

fn item<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"].as_array()?.iter().find(|item| item["metadata"]["name"] == name)
}

fn rv_number(rv: &str) -> u64 {
    rv.parse().unwrap_or_else(|_| panic!("the fake's resourceVersions are numbers, got {rv:?}"))
}

/// All events of a response body (newline-delimited JSON).
fn events_of(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("event is not JSON ({e}): {line}"))
        })
        .collect()
}

/// A GET written by hand on a fresh connection, read to the end of its body: `Err` unless
/// the (chunked) body ended cleanly with its last chunk.
fn raw_get(client: &mut Client, path: &str) -> std::io::Result<Response> {
    client.raw(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
}

fn json_body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

/// Request headers as (name, value) pairs.
type HeaderPairs<'a> = Vec<(&'a str, &'a str)>;

// ---------------------------------------------------------------------------------------
// Cached online, served offline.
// ---------------------------------------------------------------------------------------

#[test]
fn get_and_list_are_served_offline_byte_identical() {
    let mut edge = Edge::start("offline-bytes", &[], &[]);
    let mut kubelet = edge.kubelet();
    let object = kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    let list = kubelet.get(PODS).expect_status(200);
    let configmap =
        kubelet.get("/api/v1/namespaces/default/configmaps/app-config").expect_status(200);
    let nodes = kubelet
        .request("GET", "/api/v1/nodes", &[("Accept", KUBELET_ACCEPT)], b"")
        .expect_status(200);
    let discovery = kubelet.get("/api/v1").expect_status(200);
    for resp in [&object, &list, &configmap, &nodes, &discovery] {
        assert_from_cloud(resp);
    }
    edge.wait_stored(5);

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    assert_replayed(&kubelet.get(&format!("{PODS}/web-1")), &object, "GET pod");
    assert_replayed(&kubelet.get(PODS), &list, "LIST pods");
    assert_replayed(
        &kubelet.get("/api/v1/namespaces/default/configmaps/app-config"),
        &configmap,
        "GET configmap",
    );
    let offline_nodes = kubelet.request("GET", "/api/v1/nodes", &[("Accept", KUBELET_ACCEPT)], b"");
    assert_replayed(&offline_nodes, &nodes, "LIST nodes with kubelet's Accept");
    assert_replayed(&kubelet.get("/api/v1"), &discovery, "discovery");
    // Something never asked online is a miss, not a guess.
    assert_offline_object_miss(
        &kubelet.get(&format!("{PODS}/not-a-pod")),
        "GET of a pod never cached",
    );
    assert_offline_miss(&kubelet.get("/api/v1/namespaces/default/services"), "LIST never cached");
}

#[test]
fn selectors_and_tables_are_kept_apart_offline() {
    let mut edge = Edge::start("offline-selectors", &[], &[]);
    let mut kubelet = edge.kubelet();
    let web = kubelet.get(&format!("{PODS}?labelSelector=app%3Dweb")).expect_status(200);
    let db = kubelet.get(&format!("{PODS}?labelSelector=app%3Ddb")).expect_status(200);
    let on_edge_1 =
        kubelet.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dedge-1")).expect_status(200);
    let all = kubelet.get(PODS).expect_status(200);
    let table = kubelet.request("GET", PODS, &[("Accept", TABLE_ACCEPT)], b"").expect_status(200);
    let object_table = kubelet
        .request("GET", &format!("{PODS}/web-1"), &[("Accept", TABLE_ACCEPT)], b"")
        .expect_status(200);
    let object = kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    let groups = kubelet.get("/apis").expect_status(200);
    let aggregated =
        kubelet.request("GET", "/apis", &[("Accept", AGGREGATED_ACCEPT)], b"").expect_status(200);
    // The fake really filters and really answers Tables, so the answers differ.
    assert_eq!(item_names(&web.json()), ["web-1", "web-2"]);
    assert_eq!(item_names(&db.json()), ["db-1"]);
    assert_eq!(item_names(&on_edge_1.json()), ["db-1", "web-1"]);
    assert_eq!(item_names(&all.json()), ["db-1", "web-1", "web-2"]);
    assert_eq!(table.json()["kind"], "Table", "{}", table.text());
    assert_eq!(object_table.json()["kind"], "Table", "{}", object_table.text());
    assert_eq!(aggregated.json()["kind"], "APIGroupDiscoveryList", "{}", aggregated.text());
    assert_eq!(groups.json()["kind"], "APIGroupList", "{}", groups.text());
    edge.wait_stored(9);

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    // Asked in the opposite order, so a cache that keeps only the last list would fail.
    assert_replayed(
        &kubelet.request("GET", PODS, &[("Accept", TABLE_ACCEPT)], b""),
        &table,
        "Table list",
    );
    assert_replayed(&kubelet.get(PODS), &all, "plain list");
    assert_replayed(
        &kubelet.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dedge-1")),
        &on_edge_1,
        "field selector",
    );
    assert_replayed(&kubelet.get(&format!("{PODS}?labelSelector=app%3Ddb")), &db, "app=db");
    assert_replayed(&kubelet.get(&format!("{PODS}?labelSelector=app%3Dweb")), &web, "app=web");
    assert_replayed(&kubelet.get(&format!("{PODS}/web-1")), &object, "plain object");
    assert_replayed(
        &kubelet.request("GET", &format!("{PODS}/web-1"), &[("Accept", TABLE_ACCEPT)], b""),
        &object_table,
        "Table object",
    );
    assert_replayed(
        &kubelet.request("GET", "/apis", &[("Accept", AGGREGATED_ACCEPT)], b""),
        &aggregated,
        "aggregated discovery",
    );
    assert_replayed(&kubelet.get("/apis"), &groups, "legacy discovery");
    // Selectors and representations never asked online: no other scope's data.
    assert_offline_miss(
        &kubelet.get(&format!("{PODS}?labelSelector=app%3Dcache")),
        "unseen label selector",
    );
    assert_offline_miss(
        &kubelet.get(&format!("{PODS}?labelSelector=app%3Dweb%2Ctier%3Dfront")),
        "narrower selector",
    );
    assert_offline_miss(
        &kubelet.get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dedge-2")),
        "unseen field selector",
    );
    let partial = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io";
    assert_offline_miss(
        &kubelet.request("GET", PODS, &[("Accept", partial)], b""),
        "unseen representation",
    );
}

#[test]
fn a_token_client_cannot_read_what_kubelet_cached() {
    let mut edge = Edge::start(
        "offline-isolation",
        &["--token", &format!("{TOKEN}=system:serviceaccount:default:app")],
        &[],
    );
    let bearer = format!("Bearer {TOKEN}");
    let token_auth = [("Authorization", bearer.as_str())];
    let mut kubelet = edge.kubelet();
    let secret = kubelet.get(SECRET).expect_status(200);
    assert!(secret.text().contains(SECRET_DATA), "the seed secret changed: {}", secret.text());
    let kubelet_pods = kubelet.get(PODS).expect_status(200);
    // The pod reads its own things online, so its identity does have cache entries.
    let mut pod = edge.client(None);
    let own = pod
        .request("GET", "/api/v1/namespaces/default/configmaps/app-config", &token_auth, b"")
        .expect_status(200);
    assert_eq!(own.header("x-fake-user"), Some("system:serviceaccount:default:app"));
    edge.wait_stored(3);

    edge.cut_cloud();
    assert_replayed(&edge.kubelet().get(SECRET), &secret, "kubelet's own secret");
    let mut pod = edge.client(None);
    let offline_own =
        pod.request("GET", "/api/v1/namespaces/default/configmaps/app-config", &token_auth, b"");
    assert_replayed(&offline_own, &own, "the token client's own configmap");

    let attempts: Vec<(&str, HeaderPairs, Option<&str>)> = vec![
        ("token client", token_auth.to_vec(), None),
        (
            "token client claiming kubelet's User-Agent",
            vec![token_auth[0], ("User-Agent", "kubelet/v1.30.0 (linux/amd64) kubernetes/abcdef")],
            None,
        ),
        ("anonymous client", vec![], None),
        ("another token", vec![("Authorization", "Bearer someone-else")], None),
        ("kube-proxy's certificate", vec![], Some("kube-proxy")),
    ];
    for (who, headers, cert) in attempts {
        let mut client = edge.client(cert);
        for path in [SECRET, "/api/v1/namespaces/kube-system/secrets", PODS] {
            let resp = client.request("GET", path, &headers, b"");
            assert!(
                !resp.text().contains(SECRET_DATA),
                "{who} read kubelet's secret offline: {}",
                resp.text()
            );
            if path == SECRET {
                assert_offline_object_miss(&resp, &format!("{who}: {path}"));
            } else {
                assert_offline_miss(&resp, &format!("{who}: {path}"));
            }
            assert_ne!(resp.body, kubelet_pods.body, "{who} got kubelet's pod list");
        }
        // Nor a watch of kubelet's cached list (its synthetic ADDED events would leak it).
        let what = format!("{who} watching kubelet's cached pods offline");
        assert_watch_refused(
            &mut client,
            &format!("{PODS}?watch=true&timeoutSeconds=2"),
            &headers,
            &what,
        );
    }
}

#[test]
fn watch_events_while_online_update_the_offline_list_and_objects() {
    let mut edge = Edge::start("offline-watch-updates", &[], &[]);
    let mut kubelet = edge.kubelet();
    let list = kubelet.get(PODS).expect_status(200).json();
    kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    kubelet.get(&format!("{PODS}/db-1")).expect_status(200);
    edge.wait_stored(3);
    let version = resource_version(&list);
    let mut watch = edge
        .kubelet()
        .watch(&format!("{PODS}?watch=true&resourceVersion={version}&allowWatchBookmarks=true"));

    // One change through the proxy, two made by the cloud on its own.
    let created =
        kubelet.request("POST", PODS, &[JSON], &json_body(&pod("born-online"))).expect_status(201);
    assert_from_cloud(&created);
    let mut cloud = edge.cloud_admin();
    let patch = json!({"metadata": {"labels": {"tier": "changed-while-watched"}}});
    cloud
        .request(
            "PATCH",
            &format!("{PODS}/web-1"),
            &[("Content-Type", "application/merge-patch+json")],
            &json_body(&patch),
        )
        .expect_status(200);
    cloud.request("DELETE", &format!("{PODS}/db-1"), &[], b"").expect_status(200);
    let added = watch.expect_change(SETTLE, "ADDED", "born-online");
    let modified = watch.expect_change(SETTLE, "MODIFIED", "web-1");
    let deleted = watch.expect_change(SETTLE, "DELETED", "db-1");
    let newest = [&added, &modified, &deleted]
        .iter()
        .map(|e| rv_number(&resource_version(&e["object"])))
        .max()
        .unwrap_or(0);

    edge.cut_cloud();
    drop(watch);
    let mut kubelet = edge.kubelet();
    // The cache applies events on its own thread: poll until the offline list has them all.
    let mut last = Value::Null;
    let offline = wait_for(SETTLE, || {
        let resp = kubelet.get(PODS);
        if resp.status != 200 {
            return None;
        }
        assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "{:?}", resp.headers);
        last = resp.json();
        (item_names(&last) == ["born-online", "web-1", "web-2"]
            && item(&last, "web-1")
                .is_some_and(|p| p["metadata"]["labels"]["tier"] == "changed-while-watched"))
        .then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("the offline list never reflected the watch events: {last}"));
    assert_eq!(offline["kind"], "PodList");
    assert_eq!(
        item(&offline, "web-1"),
        Some(&modified["object"]),
        "web-1 as the MODIFIED event left it"
    );
    assert_eq!(item(&offline, "born-online"), Some(&added["object"]), "born-online as ADDED");
    assert!(
        rv_number(&resource_version(&offline)) >= newest,
        "the list's resourceVersion {} is older than the events it contains ({newest})",
        resource_version(&offline)
    );
    // The same scope asked with a limit, client-go style, is the same complete list.
    let limited = kubelet.get(&format!("{PODS}?limit=500&resourceVersion=0"));
    assert_eq!(limited.status, 200, "{}", limited.text());
    assert_eq!(item_names(&limited.json()), ["born-online", "web-1", "web-2"]);
    // The cached GETs of the objects follow too.
    let web1 = kubelet.get(&format!("{PODS}/web-1"));
    assert_eq!(web1.status, 200, "{}", web1.text());
    assert_eq!(
        web1.json()["metadata"]["labels"]["tier"],
        "changed-while-watched",
        "stale cached GET: {}",
        web1.text()
    );
    let db1 = kubelet.get(&format!("{PODS}/db-1"));
    assert_offline_object_miss(&db1, "GET of a pod deleted while watched");
}

/// client-go after an outage breaks its watch: it watches again from the last version it saw,
/// and the proxy must serve that from the cache (no 410 loop, no hot reconnect loop).
#[test]
fn a_watch_broken_by_the_outage_resumes_offline_from_its_last_version() {
    // No fake bookmarks, so nothing is in flight when the cloud dies.
    let mut edge = Edge::start("offline-watch-resume", &["--bookmark-interval-ms", "600000"], &[]);
    let mut kubelet = edge.kubelet();
    let list = kubelet.get(PODS).expect_status(200).json();
    edge.wait_stored(1);
    let mut watch = edge.kubelet().watch(&format!(
        "{PODS}?watch=true&resourceVersion={}&allowWatchBookmarks=true",
        resource_version(&list)
    ));
    edge.create_pod_upstream("seen-before-outage");
    let added = watch.expect_change(SETTLE, "ADDED", "seen-before-outage");
    let last_seen = resource_version(&added["object"]);

    edge.cut_cloud();
    assert!(watch.wait_closed(SETTLE), "the proxied watch hangs after the cloud died");
    let mut kubelet = edge.kubelet();
    let offline_list = wait_for(SETTLE, || {
        let list = kubelet.get(PODS);
        (list.status == 200 && item_names(&list.json()).contains(&"seen-before-outage".to_string()))
            .then(|| list.json())
    })
    .unwrap_or_else(|| panic!("the ADDED event never reached the offline list"));
    assert_eq!(
        resource_version(&offline_list),
        last_seen,
        "the list's version is not the last event's"
    );
    let mut resumed = edge.kubelet().watch(&format!(
        "{PODS}?watch=true&resourceVersion={last_seen}&allowWatchBookmarks=true&timeoutSeconds=3"
    ));
    assert_eq!(resumed.head.headers.get(CACHE_HEADER), Some("hit"));
    let event = resumed.next_event(Duration::from_millis(1500));
    assert!(event.is_none(), "resuming from the newest version should replay nothing: {event:?}");
    assert!(!resumed.is_closed(), "the resumed offline watch closed at once");
    assert!(resumed.wait_closed(SETTLE), "the resumed offline watch ignored timeoutSeconds");
}

/// kubelet's own pods: a LIST and WATCH over all namespaces filtered by its node name, as
/// client-go's reflector sends them (kubelet's Accept: protobuf, so the cached list is
/// protobuf and so are the watch's frames; `limit=500&resourceVersion=0`).
#[test]
fn kubelets_node_scoped_pod_watch_keeps_its_offline_list_current() {
    let mut edge = Edge::start("offline-kubelet-flow", &[], &[]);
    let selector = "fieldSelector=spec.nodeName%3Dedge-1";
    let accept = [("Accept", KUBELET_ACCEPT)];
    let reflector_list = reflector_list("/api/v1/pods", selector);
    let mut kubelet = edge.kubelet();
    let list = decode_pod_list(&kubelet.request("GET", &reflector_list, &accept, b""));
    assert_eq!(pod_names(&list), ["db-1", "web-1"]);
    edge.wait_stored(1);
    let version = list.metadata.and_then(|m| m.resource_version).unwrap_or_default();
    let watch_path = reflector_watch("/api/v1/pods", selector, &version);
    let mut watch = edge.kubelet().try_watch(&watch_path, &accept).expect("kubelet's watch");
    let mut cloud = edge.cloud_admin();
    let mut scheduled = pod("scheduled-here");
    scheduled["spec"]["nodeName"] = json!("edge-1");
    let mut elsewhere = pod("scheduled-elsewhere");
    elsewhere["spec"]["nodeName"] = json!("edge-2");
    cloud.request("POST", PODS, &[JSON], &json_body(&elsewhere)).expect_status(201);
    cloud.request("POST", PODS, &[JSON], &json_body(&scheduled)).expect_status(201);
    cloud.request("DELETE", &format!("{PODS}/db-1"), &[], b"").expect_status(200);
    expect_protobuf_change::<corev1::Pod>(&mut watch, "ADDED", "scheduled-here");
    expect_protobuf_change::<corev1::Pod>(&mut watch, "DELETED", "db-1");

    edge.cut_cloud();
    drop(watch);
    let mut kubelet = edge.kubelet();
    let mut last = String::new();
    let reflected = wait_for(SETTLE, || {
        let resp = kubelet.request("GET", &reflector_list, &accept, b"");
        if resp.status != 200 {
            last = format!("{} {}", resp.status, resp.text());
            return None;
        }
        let names = pod_names(&decode_pod_list(&resp));
        last = format!("{names:?}");
        (names == ["scheduled-here", "web-1"]).then_some(())
    });
    assert!(reflected.is_some(), "kubelet's offline pod list does not follow its watch: {last}");
    // The unfiltered list was never asked: no guess from the filtered one.
    let unfiltered = kubelet.request("GET", "/api/v1/pods", &accept, b"");
    assert_offline_miss(&unfiltered, "unfiltered all-namespaces list");
}

/// client-go's reflector LIST of `collection` with `selector` (`fieldSelector=...`).
fn reflector_list(collection: &str, selector: &str) -> String {
    format!("{collection}?{selector}&limit=500&resourceVersion=0")
}

/// client-go's reflector WATCH that follows its LIST, from the list's `resource_version`.
fn reflector_watch(collection: &str, selector: &str, resource_version: &str) -> String {
    format!(
        "{collection}?allowWatchBookmarks=true&{selector}&resourceVersion={resource_version}&timeoutSeconds=400&watch=true"
    )
}

/// A protobuf PodList answer, decoded with the generated types.
fn decode_pod_list(resp: &Response) -> corev1::PodList {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some(protobuf::PROTOBUF), "kubelet gets protobuf");
    protobuf::decode(&resp.body, "PodList")
}

fn pod_names(list: &corev1::PodList) -> Vec<String> {
    let name = |pod: &corev1::Pod| pod.metadata.as_ref().and_then(|m| m.name.clone());
    list.items.iter().filter_map(name).collect()
}

/// Reads protobuf watch events of `M` objects (`Pod`), bookmarks skipped, until one of
/// `event_type` about `name`.
fn expect_protobuf_change<M>(stream: &mut WatchStream, event_type: &str, name: &str)
where
    M: prost::Message + Default + Metadata<Ty = meta::ObjectMeta>,
{
    loop {
        let event = protobuf::next_watch_event(stream, SETTLE)
            .unwrap_or_else(|| panic!("no {event_type} {name} on the watch"));
        let (seen, object) = protobuf::event_object::<M>(&event, M::KIND);
        let seen_name = object.metadata().and_then(|m| m.name.clone()).unwrap_or_default();
        if seen == event_type && seen_name == name {
            return;
        }
        assert_eq!(seen, "BOOKMARK", "{seen} {seen_name} before {event_type} {name}");
    }
}

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// kube-proxy's EndpointSlices: a LIST and WATCH over all namespaces with its label selector
/// (no headless Services, none another proxy serves), in protobuf, as its informer sends them.
/// They are what keeps a node's Services reaching their pods, so after a reboot while still
/// cut off kube-proxy must list the endpoints its watch saw last.
#[test]
fn kube_proxys_endpoint_slices_come_back_after_an_offline_reboot_as_its_watch_left_them() {
    let mut edge = Edge::start("offline-kube-proxy-slices", &[], &[]);
    let selector = "labelSelector=%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name";
    let accept = [("Accept", KUBELET_ACCEPT)];
    let all_slices = "/apis/discovery.k8s.io/v1/endpointslices";
    let reflector_list = reflector_list(all_slices, selector);
    let listed = slice_list(&edge.kube_proxy().request("GET", &reflector_list, &accept, b""));
    assert_eq!(slice_addresses(&listed), [("kubernetes".into(), vec!["192.168.1.2".into()])]);
    edge.wait_stored(1);
    let version = listed.metadata.and_then(|m| m.resource_version).unwrap_or_default();
    let watch_path = reflector_watch(all_slices, selector, &version);
    let mut watch = edge.kube_proxy().try_watch(&watch_path, &accept).expect("kube-proxy's watch");

    let mut cloud = edge.cloud_admin();
    let created = cloud
        .request("POST", SLICES, &[JSON], &json_body(&endpoint_slice("web-7x2kq", &["10.244.1.7"])))
        .expect_status(201)
        .json();
    let mut scaled = created.clone();
    scaled["endpoints"] =
        endpoint_slice("web-7x2kq", &["10.244.1.7", "10.244.1.8"])["endpoints"].clone();
    cloud
        .request("PUT", &format!("{SLICES}/web-7x2kq"), &[JSON], &json_body(&scaled))
        .expect_status(200);
    let mut headless = endpoint_slice("dns-headless", &["10.244.1.30"]);
    headless["metadata"]["labels"]["service.kubernetes.io/headless"] = json!("");
    cloud.request("POST", SLICES, &[JSON], &json_body(&headless)).expect_status(201);
    cloud
        .request("POST", SLICES, &[JSON], &json_body(&endpoint_slice("db-4k9vd", &["10.244.1.9"])))
        .expect_status(201);
    expect_protobuf_change::<discoveryv1::EndpointSlice>(&mut watch, "ADDED", "web-7x2kq");
    expect_protobuf_change::<discoveryv1::EndpointSlice>(&mut watch, "MODIFIED", "web-7x2kq");
    expect_protobuf_change::<discoveryv1::EndpointSlice>(&mut watch, "ADDED", "db-4k9vd");
    // Applied in order on the cache thread: the last ADDED counted means all are in.
    edge.wait_cache_summary(|summary| {
        let slices =
            &summary["identities"]["cn:system:kube-proxy"]["discovery.k8s.io/endpointslices"];
        slices["content_types"][protobuf::PROTOBUF]["list_items"].as_u64() == Some(3)
    });

    edge.cut_cloud();
    drop(watch);
    edge.restart_lite(); // kill -9: the reboot, the cloud still away
    let mut kube_proxy = edge.kube_proxy();
    let mut last = String::new();
    let expected = [
        ("db-4k9vd".to_string(), vec!["10.244.1.9".to_string()]),
        ("kubernetes".into(), vec!["192.168.1.2".into()]),
        ("web-7x2kq".into(), vec!["10.244.1.7".into(), "10.244.1.8".into()]),
    ];
    let served = wait_for(SETTLE, || {
        let resp = kube_proxy.request("GET", &reflector_list, &accept, b"");
        last = format!("{} {}", resp.status, resp.text());
        if resp.status != 200 {
            return None;
        }
        assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "offline, from the cache");
        let slices = slice_addresses(&slice_list(&resp));
        last = format!("{slices:?}");
        (slices == expected).then_some(())
    });
    assert!(served.is_some(), "kube-proxy's slices after the offline reboot: {last}");
}

/// An EndpointSlice of the Service `web` in `default`, its endpoints ready on edge-1.
fn endpoint_slice(name: &str, addresses: &[&str]) -> Value {
    let endpoint = |address: &&str| {
        json!({
            "addresses": [address],
            "conditions": { "ready": true, "serving": true, "terminating": false },
            "nodeName": "edge-1",
        })
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": { "kubernetes.io/service-name": "web" },
        },
        "addressType": "IPv4",
        "endpoints": addresses.iter().map(endpoint).collect::<Vec<_>>(),
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    })
}

/// A protobuf EndpointSliceList answer, decoded with the generated types.
fn slice_list(resp: &Response) -> discoveryv1::EndpointSliceList {
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some(protobuf::PROTOBUF), "kube-proxy gets protobuf");
    protobuf::decode(&resp.body, "EndpointSliceList")
}

/// Each slice's name with the addresses of its endpoints, in list order.
fn slice_addresses(list: &discoveryv1::EndpointSliceList) -> Vec<(String, Vec<String>)> {
    let addresses = |slice: &discoveryv1::EndpointSlice| {
        slice.endpoints.iter().flat_map(|endpoint| endpoint.addresses.clone()).collect()
    };
    list.items
        .iter()
        .map(|slice| {
            let name = slice.metadata.as_ref().and_then(|m| m.name.clone()).unwrap_or_default();
            (name, addresses(slice))
        })
        .collect()
}

#[test]
fn client_go_list_is_answered_offline_with_any_limit() {
    let mut edge = Edge::start("offline-limit", &[], &[]);
    let mut kubelet = edge.kubelet();
    let accept = [("Accept", KUBELET_ACCEPT)];
    let reflector_list = format!("{PODS}?limit=500&resourceVersion=0");
    let online = kubelet.request("GET", &reflector_list, &accept, b"").expect_status(200);
    assert_from_cloud(&online);
    let online_list = decode_pod_list(&online);
    let list_meta = online_list.metadata.clone().unwrap_or_default();
    assert!(list_meta.r#continue.unwrap_or_default().is_empty(), "not a complete list");
    edge.wait_stored(1);

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    let again = kubelet.request("GET", &reflector_list, &accept, b"");
    assert_replayed(&again, &online, "the reflector's own list");
    for query in [
        "?limit=100",
        "?limit=1",
        "?resourceVersion=0",
        "",
        "?limit=500&resourceVersion=0&timeoutSeconds=30",
    ] {
        let resp = kubelet.request("GET", &format!("{PODS}{query}"), &accept, b"");
        assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "LIST {query:?}");
        let list = decode_pod_list(&resp);
        assert_eq!(pod_names(&list), pod_names(&online_list), "LIST {query:?}");
        let meta = list.metadata.unwrap_or_default();
        assert_eq!(meta.resource_version, list_meta.resource_version, "LIST {query:?}");
        assert!(meta.r#continue.unwrap_or_default().is_empty(), "a made-up continue token");
    }
    // A page of some other walk is not the complete list.
    let page = format!("{PODS}?limit=1&continue=ZGVmYXVsdC93ZWItMQ");
    assert_offline_miss(
        &kubelet.request("GET", &page, &accept, b""),
        "a continue page never cached",
    );
}

#[test]
fn protobuf_is_replayed_as_opaque_bytes_without_modify_request_accept() {
    let mut edge = Edge::start("offline-protobuf", &[], &["--modify-request-accept=false"]);
    let mut kubelet = edge.kubelet();
    let accept = [("Accept", KUBELET_ACCEPT)];
    let list = kubelet.request("GET", PODS, &accept, b"").expect_status(200);
    let object = kubelet.request("GET", &format!("{PODS}/web-1"), &accept, b"").expect_status(200);
    for resp in [&list, &object] {
        let content_type = resp.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/vnd.kubernetes.protobuf"),
            "the fake answered {content_type}"
        );
    }
    let json_list = kubelet.get(PODS).expect_status(200);
    edge.wait_stored(3);

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    assert_replayed(&kubelet.request("GET", PODS, &accept, b""), &list, "protobuf list");
    assert_replayed(
        &kubelet.request("GET", &format!("{PODS}/web-1"), &accept, b""),
        &object,
        "protobuf object",
    );
    assert_replayed(&kubelet.get(PODS), &json_list, "JSON list kept apart from protobuf");
}

#[test]
fn large_answers_are_stored_whole() {
    let mut edge = Edge::start("offline-large", &[], &[]);
    let big = "x".repeat(3 << 20);
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "big", "namespace": "default"},
        "data": {"blob": big},
    });
    edge.cloud_admin()
        .request("POST", "/api/v1/namespaces/default/configmaps", &[JSON], &json_body(&configmap))
        .expect_status(201);
    let mut kubelet = edge.kubelet();
    let object = kubelet.get("/api/v1/namespaces/default/configmaps/big").expect_status(200);
    let list = kubelet.get("/api/v1/namespaces/default/configmaps").expect_status(200);
    assert!(object.body.len() > 3 << 20 && list.body.len() > 3 << 20);
    edge.wait_stored(2);

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    assert_replayed(
        &kubelet.get("/api/v1/namespaces/default/configmaps/big"),
        &object,
        "3 MiB object",
    );
    assert_replayed(&kubelet.get("/api/v1/namespaces/default/configmaps"), &list, "3 MiB list");
}

// ---------------------------------------------------------------------------------------
// Restarts and the database file.
// ---------------------------------------------------------------------------------------

#[test]
fn kill_9_and_restart_while_offline_serves_the_same_bytes() {
    let mut edge = Edge::start("offline-kill9", &[], &[]);
    let mut kubelet = edge.kubelet();
    let object = kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    let list = kubelet.get(&format!("{PODS}?limit=500&resourceVersion=0")).expect_status(200);
    let secret = kubelet.get(SECRET).expect_status(200);
    edge.wait_stored(3);
    edge.cut_cloud();
    assert_replayed(&edge.kubelet().get(PODS), &list, "LIST before the restart");

    for round in 1..=2 {
        edge.restart_lite(); // kill -9, then start again with the same cache dir
        let mut kubelet = edge.kubelet();
        assert_replayed(
            &kubelet.get(&format!("{PODS}/web-1")),
            &object,
            &format!("GET after kill -9 #{round}"),
        );
        assert_replayed(
            &kubelet.get(&format!("{PODS}?limit=500&resourceVersion=0")),
            &list,
            &format!("LIST after kill -9 #{round}"),
        );
        assert_replayed(&kubelet.get(SECRET), &secret, &format!("secret after kill -9 #{round}"));
        assert_offline_object_miss(&edge.client(None).get(SECRET), "anonymous after restart");
    }
}

/// Writes `garbage` as `<cache dir>/cache.db`, starts the proxy on it, and checks that it
/// proxies, moved the bad file aside (bytes intact) and caches into a fresh database.
fn corrupt_database_is_moved_aside(label: &str, garbage: Vec<u8>) {
    let cache = TempDir::new("corrupt-cache");
    std::fs::write(cache.join("cache.db"), &garbage).expect("write garbage");
    let cache_dir = cache.path().to_path_buf();
    let mut edge = Edge::build(label).cache_dir(cache).start();

    let mut kubelet = edge.kubelet();
    let online = kubelet.get(PODS).expect_status(200);
    assert_from_cloud(&online);
    let aside = files_named(&cache_dir, "cache.db.corrupt-");
    assert_eq!(
        aside.len(),
        1,
        "expected one moved-aside file in {}: {aside:?}",
        cache_dir.display()
    );
    assert!(
        std::fs::read(&aside[0]).expect("read moved-aside file") == garbage,
        "the bad file was altered"
    );
    edge.wait_stored(1);
    let fresh = std::fs::read(cache_dir.join("cache.db")).expect("a fresh cache.db");
    assert!(fresh.starts_with(b"SQLite format 3\0"), "cache.db is not a fresh SQLite database");

    edge.cut_cloud();
    assert_replayed(&edge.kubelet().get(PODS), &online, "served from the fresh database");
}

fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read cache dir")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
        .filter(|path| {
            !path.to_string_lossy().ends_with("-wal") && !path.to_string_lossy().ends_with("-shm")
        })
        .collect()
}

#[test]
fn a_garbage_database_file_is_moved_aside() {
    corrupt_database_is_moved_aside("corrupt-garbage", pattern_bytes(64 * 1024));
}

#[test]
fn a_database_with_a_valid_header_and_garbage_pages_is_moved_aside() {
    let mut garbage = b"SQLite format 3\0".to_vec();
    garbage.extend_from_slice(&[0x10, 0x00, 0x01, 0x01, 0x00, 0x40, 0x20, 0x20]); // 4096-byte pages
    garbage.extend(pattern_bytes(4 * 4096 - garbage.len()));
    corrupt_database_is_moved_aside("corrupt-pages", garbage);
}

#[test]
fn memory_cache_serves_offline_but_forgets_on_restart() {
    let mut edge = Edge::start("offline-memory", &[], &["--cache-type=memory"]);
    let mut kubelet = edge.kubelet();
    let list = kubelet.get(PODS).expect_status(200);
    let object = kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    edge.wait_stored(2);
    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    assert_replayed(&kubelet.get(PODS), &list, "memory LIST");
    assert_replayed(&kubelet.get(&format!("{PODS}/web-1")), &object, "memory GET");
    assert!(
        !edge.lite.cache_dir().join("cache.db").exists(),
        "--cache-type=memory wrote a database file"
    );

    edge.restart_lite();
    let mut kubelet = edge.kubelet();
    assert_offline_miss(&kubelet.get(PODS), "LIST after a restart of the memory cache");
    assert_offline_object_miss(
        &kubelet.get(&format!("{PODS}/web-1")),
        "GET after a restart of the memory cache",
    );
    assert_eq!(edge.metric("lite_apiserver_cache_entries"), 0);
}

// ---------------------------------------------------------------------------------------
// Offline watches.
// ---------------------------------------------------------------------------------------

/// LISTs the pods online (cached), cuts the cloud, and returns the list.
fn cached_pod_list_then_offline(edge: &mut Edge) -> Value {
    let list = edge.kubelet().get(PODS).expect_status(200).json();
    edge.wait_stored(1);
    edge.cut_cloud();
    list
}

#[test]
fn offline_watch_stays_open_and_ends_cleanly_at_timeout_seconds() {
    let mut edge = Edge::start("offline-watch-timeout", &[], &[]);
    let list = cached_pod_list_then_offline(&mut edge);
    let version = resource_version(&list);
    let path = format!("{PODS}?watch=true&resourceVersion={version}&timeoutSeconds=3");

    let mut watch = edge.kubelet().watch(&path);
    assert_eq!(watch.head.headers.get(CACHE_HEADER), Some("hit"), "{:?}", watch.head);
    assert!(watch.head.headers.has_token("transfer-encoding", "chunked"), "{:?}", watch.head);
    watch.assert_open_for(Duration::from_millis(1500));
    assert!(watch.wait_closed(SETTLE), "the offline watch outlived its timeoutSeconds by far");

    // The same watch read to its end: the body must end with the last chunk (a clean end the
    // client re-lists after), not a dropped connection; from the list's version, no events.
    let started = Instant::now();
    let mut kubelet = edge.kubelet().timeout(SETTLE);
    let ended = raw_get(&mut kubelet, &path)
        .unwrap_or_else(|e| panic!("the offline watch did not end cleanly: {e}"));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the offline watch closed early, after {:?}",
        started.elapsed()
    );
    assert_eq!(ended.status, 200);
    assert!(
        events_of(&ended.body).iter().all(|e| e["type"] == "BOOKMARK"),
        "unexpected events: {}",
        ended.text()
    );
    // The connection stays usable after a clean end.
    let next = kubelet.get(PODS);
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(edge.metric("lite_apiserver_open_watches"), 0, "finished watches still counted");
}

#[test]
fn offline_watch_without_version_replays_the_cached_list() {
    let mut edge = Edge::start("offline-watch-replay", &[], &[]);
    let list = cached_pod_list_then_offline(&mut edge);
    let mut kubelet = edge.kubelet().timeout(SETTLE);
    let resp = raw_get(&mut kubelet, &format!("{PODS}?watch=true&timeoutSeconds=2"))
        .unwrap_or_else(|e| panic!("offline watch: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let events = events_of(&resp.body);
    assert!(events.iter().all(|e| e["type"] == "ADDED"), "{}", resp.text());
    let mut names: Vec<String> = events.iter().map(|e| event_name(e).to_string()).collect();
    names.sort();
    assert_eq!(names, item_names(&list), "synthetic ADDED events should be the cached list");
    for event in &events {
        assert_eq!(
            Some(&event["object"]),
            item(&list, event_name(event)),
            "ADDED object differs from the list item"
        );
    }
}

/// BOOKMARKs come every 15 s (`BOOKMARK_INTERVAL` in src/offline.rs), so this test waits that
/// long; a shorter, configurable interval would make it fast (see the report).
#[test]
fn offline_watch_sends_bookmarks_at_the_lists_version() {
    let mut edge = Edge::start("offline-watch-bookmarks", &[], &[]);
    let list = cached_pod_list_then_offline(&mut edge);
    let version = resource_version(&list);
    let mut watch = edge.kubelet().watch(&format!(
        "{PODS}?watch=true&resourceVersion={version}&allowWatchBookmarks=true&timeoutSeconds=40"
    ));
    // Opened together, so the quiet one has waited as long when the bookmark arrives.
    let mut quiet = edge
        .kubelet()
        .watch(&format!("{PODS}?watch=true&resourceVersion={version}&timeoutSeconds=40"));
    let bookmark = watch.next_event(Duration::from_secs(25)).unwrap_or_else(|| {
        panic!("no BOOKMARK within 25 s (stream closed: {})", watch.is_closed())
    });
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");
    assert_eq!(bookmark["object"]["kind"], "Pod", "{bookmark}");
    assert_eq!(bookmark["object"]["apiVersion"], "v1", "{bookmark}");
    assert_eq!(resource_version(&bookmark["object"]), version, "{bookmark}");
    watch.assert_open_for(Duration::from_millis(500));

    // Without allowWatchBookmarks, nothing is sent.
    let event = quiet.next_event(Duration::from_secs(1));
    assert!(event.is_none(), "unexpected event without allowWatchBookmarks: {event:?}");
    quiet.assert_open_for(Duration::from_millis(500));
}

#[test]
fn offline_watch_from_an_older_version_gets_410_expired() {
    let mut edge = Edge::start("offline-watch-expired", &[], &[]);
    let list = cached_pod_list_then_offline(&mut edge);
    let older = rv_number(&resource_version(&list)) - 1;
    let mut kubelet = edge.kubelet().timeout(SETTLE);
    let resp = raw_get(
        &mut kubelet,
        &format!("{PODS}?watch=true&resourceVersion={older}&timeoutSeconds=30"),
    )
    .unwrap_or_else(|e| panic!("expired watch did not end cleanly: {e}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let events = events_of(&resp.body);
    assert_eq!(events.len(), 1, "expected exactly one ERROR event: {}", resp.text());
    let error = &events[0];
    assert_eq!(error["type"], "ERROR", "{error}");
    assert_eq!(error["object"]["kind"], "Status", "{error}");
    assert_eq!(error["object"]["status"], "Failure", "{error}");
    assert_eq!(error["object"]["code"], 410, "{error}");
    assert_eq!(error["object"]["reason"], "Expired", "{error}");
    // A watch the cache cannot serve at all (a scope never listed) is a Status, not an empty 200.
    let uncached = "/api/v1/namespaces/default/services?watch=true&timeoutSeconds=2";
    assert_watch_refused(&mut kubelet, uncached, &[], "an uncached watch");
}

// ---------------------------------------------------------------------------------------
// Writes, cloud coming back, diagnostics.
// ---------------------------------------------------------------------------------------

#[test]
fn offline_writes_get_503_status_and_fake_nothing() {
    let mut edge = Edge::start("offline-writes", &[], &[]);
    let list = cached_pod_list_then_offline(&mut edge);
    let mut kubelet = edge.kubelet();
    let pod_path = format!("{PODS}/web-1");
    let merge = ("Content-Type", "application/merge-patch+json");
    let writes: [(&str, &str, HeaderPairs, Vec<u8>); 5] = [
        ("POST", PODS, vec![JSON], json_body(&pod("born-offline"))),
        ("PUT", &pod_path, vec![JSON], json_body(&item(&list, "web-1").cloned().expect("web-1"))),
        ("PATCH", &pod_path, vec![merge], json_body(&json!({"metadata": {"labels": {"x": "y"}}}))),
        ("DELETE", &pod_path, vec![], Vec::new()),
        ("DELETE", PODS, vec![], Vec::new()),
    ];
    for (method, path, headers, body) in &writes {
        let resp = kubelet.request(method, path, headers, body);
        assert_status_body(&resp, 503);
        assert!(resp.header(CACHE_HEADER).is_none(), "{method} {path} answered as a cache hit");
        if !resp.headers.has_token("connection", "close") {
            continue;
        }
        kubelet = edge.kubelet(); // a body it did not read may close the connection
    }
    // Nothing was applied to the cached state either.
    let offline = kubelet.get(PODS);
    assert_eq!(offline.status, 200, "{}", offline.text());
    assert_eq!(item_names(&offline.json()), item_names(&list));
    assert_eq!(item(&offline.json(), "web-1"), item(&list, "web-1"));
}

#[test]
fn cloud_back_means_fresh_data_and_readyz_follows() {
    let mut edge = Edge::start("offline-cloud-back", &[], &[]);
    assert_eq!(edge.diag("/readyz").0, 200, "cloud up at start");
    let mut kubelet = edge.kubelet();
    let online = kubelet.get(PODS).expect_status(200);
    edge.wait_stored(1);

    edge.cut_cloud();
    assert_replayed(&edge.kubelet().get(PODS), &online, "offline list");
    let readyz = wait_for(SETTLE, || {
        let (status, body) = edge.diag("/readyz");
        (status == 503).then_some(body)
    });
    let body = readyz.unwrap_or_else(|| {
        panic!("/readyz never said 503 while the cloud was down: {:?}", edge.diag("/readyz"))
    });
    assert!(!body.trim().is_empty(), "/readyz 503 gives no reason");
    assert_eq!(edge.metric("lite_apiserver_cloud_up"), 0);
    // An offline watch with no timeout is open when the cloud returns.
    let mut offline_watch = edge
        .kubelet()
        .watch(&format!("{PODS}?watch=true&resourceVersion={}", resource_version(&online.json())));
    assert_eq!(offline_watch.head.headers.get(CACHE_HEADER), Some("hit"));

    edge.cloud_back();
    // A change the cloud saw while the node was cut off (the fake restarts from its seed).
    edge.create_pod_upstream("born-while-cut-off");
    let mut kubelet = edge.kubelet();
    let mut last = None;
    let fresh = wait_for(SETTLE, || {
        let resp = kubelet.get(PODS);
        let fresh = resp.status == 200
            && resp.header(CACHE_HEADER).is_none()
            && item_names(&resp.json()).contains(&"born-while-cut-off".to_string());
        last = Some(resp.clone());
        fresh.then_some(resp)
    })
    .unwrap_or_else(|| panic!("no fresh list after the cloud came back; last answer: {last:?}"));
    assert_from_cloud(&fresh);
    let readyz = wait_for(SETTLE, || (edge.diag("/readyz").0 == 200).then_some(()));
    assert!(readyz.is_some(), "/readyz stayed {:?} with the cloud back", edge.diag("/readyz"));
    assert_eq!(edge.metric("lite_apiserver_cloud_up"), 1);
    assert!(
        offline_watch.wait_closed(SETTLE),
        "the offline watch stayed open after the cloud came back"
    );

    // The fresh answer replaced the cached one: cut again and it is what the cache serves.
    edge.wait_stored(2);
    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    let replay = wait_for(SETTLE, || {
        let resp = kubelet.get(PODS);
        (resp.status == 200 && resp.body == fresh.body).then_some(resp)
    });
    assert!(replay.is_some(), "the cache still serves the old list after a fresh one was proxied");
}

#[test]
fn metrics_count_hits_and_debug_cache_shows_counts_without_bodies() {
    let mut edge = Edge::start(
        "offline-diagnostics",
        &["--token", &format!("{TOKEN}=system:serviceaccount:default:app")],
        &[],
    );
    let mut kubelet = edge.kubelet();
    kubelet.get(SECRET).expect_status(200);
    kubelet.get(PODS).expect_status(200);
    kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    let bearer = format!("Bearer {TOKEN}");
    edge.client(None).request("GET", PODS, &[("Authorization", &bearer)], b"").expect_status(200);
    edge.wait_stored(4);

    let kubelet_identity = "cn:system:node:edge-1";
    let summary = edge.wait_cache_summary(|s| {
        s["identities"][kubelet_identity]["secrets"]["entries"].as_u64() >= Some(1)
            && s["identities"].as_object().is_some_and(|ids| ids.len() >= 2)
    });
    let text = summary.to_string();
    assert!(
        summary["identities"][kubelet_identity]["pods"]["lists"].as_u64() >= Some(1),
        "{summary}"
    );
    assert!(
        summary["identities"][kubelet_identity]["pods"]["list_items"].as_u64() >= Some(3),
        "{summary}"
    );
    assert!(summary["entries"].as_u64() >= Some(3), "{summary}");
    let token_identity = summary["identities"]
        .as_object()
        .and_then(|ids| ids.keys().find(|id| id.starts_with("token:")).cloned())
        .unwrap_or_else(|| panic!("no token identity in {summary}"));
    assert!(summary["identities"][&token_identity]["pods"].is_object(), "{summary}");
    for forbidden in [TOKEN, SECRET_DATA, "db-password", "web-1", "10.244.1.7"] {
        assert!(!text.contains(forbidden), "/debug/cache shows {forbidden:?}: {text}");
    }

    let hits_before = edge.metric("lite_apiserver_cache_hits_total");
    let cache_2xx = "lite_apiserver_responses_total{source=\"cache\",code=\"2xx\"}";
    let served_before = edge.metric(cache_2xx);
    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    for _ in 0..3 {
        assert_eq!(kubelet.get(PODS).header(CACHE_HEADER), Some("hit"));
    }
    assert_eq!(kubelet.get(SECRET).header(CACHE_HEADER), Some("hit"));
    assert_offline_object_miss(&kubelet.get(&format!("{PODS}/never-cached")), "miss");
    assert!(edge.metric("lite_apiserver_cache_hits_total") >= hits_before + 4, "hits not counted");
    assert!(edge.metric("lite_apiserver_cache_misses_total") >= 1, "misses not counted");
    assert!(edge.metric(cache_2xx) >= served_before + 4, "cache-served responses not counted");
    let (_, metrics) = edge.diag("/metrics");
    assert!(
        !metrics.contains(TOKEN) && !metrics.contains(SECRET_DATA),
        "/metrics leaks: {metrics}"
    );
}

/// With a cloud that accepts connections and then says nothing (a black hole, the worst
/// kind of outage), the request that meets the outage waits for `--timeout` and is answered
/// from the cache; it asks the prober, whose probe times out too; from then on (the cloud is
/// known down, `/readyz` says 503) reads are answered from the cache at once.
#[test]
fn offline_answers_do_not_wait_for_the_cloud_timeout() {
    let mut edge = Edge::start("offline-fast", &[], &["--timeout=10"]);
    let mut kubelet = edge.kubelet();
    let online = kubelet.get(PODS).expect_status(200);
    edge.wait_stored(1);
    edge.cut_cloud();
    let black_hole = TcpListener::bind((Ipv4Addr::LOCALHOST, edge.fake.port))
        .expect("take over the fake's port");

    let mut discoverer = edge.kubelet().timeout(Duration::from_secs(40));
    assert_replayed(&discoverer.get(PODS), &online, "the request that finds the cloud gone");
    let known_down =
        wait_for(Duration::from_secs(40), || (edge.diag("/readyz").0 == 503).then_some(()));
    assert!(known_down.is_some(), "the prober never declared the black-holed cloud down");
    // Well under --timeout=10 each: if every request waited for the cloud, these would fail.
    let mut kubelet = edge.kubelet().timeout(Duration::from_secs(6));
    for round in 0..5 {
        let resp = kubelet
            .try_get(PODS)
            .unwrap_or_else(|e| panic!("offline read #{round} did not come back quickly: {e}"));
        assert_replayed(&resp, &online, "offline read");
    }
    let mut fresh_connection = edge.kubelet().timeout(Duration::from_secs(6));
    assert_replayed(&fresh_connection.get(PODS), &online, "offline read on a new connection");
    drop(black_hole);
}

// ---------------------------------------------------------------------------------------
// DELETEs proxied while online update what the cache serves offline.
// ---------------------------------------------------------------------------------------

/// `GET path` offline, polled until `done` accepts the answer (the cache applies a DELETE's
/// answer on its own thread, and lookups overtake queued writes).
fn offline_answer(
    client: &mut Client,
    path: &str,
    what: &str,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let mut last = String::new();
    wait_for(SETTLE, || {
        let resp = client.get(path);
        last = format!("{} {:?} {}", resp.status, resp.header(CACHE_HEADER), resp.text());
        done(&resp).then_some(resp)
    })
    .unwrap_or_else(|| panic!("{what}: never as expected; last answer: {last}"))
}

/// The pod is gone offline: a miss, answered 404 like any object the cache does not hold.
fn assert_gone_offline(client: &mut Client, name: &str, who: &str) {
    let path = format!("{PODS}/{name}");
    let resp = offline_answer(client, &path, &format!("{who}: GET of the deleted pod"), |r| {
        r.status != 200
    });
    assert_offline_object_miss(&resp, &format!("{who}: GET of the deleted pod"));
}

/// The offline list (a cache hit) once it equals `expected`.
fn offline_list_names(client: &mut Client, path: &str, expected: &[&str], who: &str) -> Value {
    let resp = offline_answer(client, path, &format!("{who}: LIST {path}"), |r| {
        r.status == 200 && item_names(&r.json()) == expected
    });
    assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "{who}: {:?}", resp.headers);
    resp.json()
}

#[test]
fn a_pod_deleted_through_the_proxy_is_gone_offline() {
    let mut edge = Edge::start("offline-delete", &[], &[]);
    let mut kubelet = edge.kubelet();
    let online = kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    let list = kubelet.get(PODS).expect_status(200).json();
    assert_eq!(item_names(&list), ["db-1", "web-1", "web-2"]);
    edge.wait_stored(2);

    let deleted = kubelet.request("DELETE", &format!("{PODS}/web-1"), &[], b"").expect_status(200);
    assert_from_cloud(&deleted);
    // The fake answers the removed object itself, without deletionTimestamp: the "gone" case
    // for an answer that is an object (a Status answer and a terminating object are covered by
    // the cache's unit tests, and the latter by the next test but one).
    let answer = deleted.json();
    assert_eq!(answer["kind"], "Pod", "{answer}");
    assert!(answer["metadata"]["deletionTimestamp"].is_null(), "{answer}");

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    assert_gone_offline(&mut kubelet, "web-1", "kubelet");
    let offline = offline_list_names(&mut kubelet, PODS, &["db-1", "web-2"], "kubelet");
    assert_eq!(
        item(&offline, "web-2"),
        item(&list, "web-2"),
        "the other pods are served as listed"
    );
    assert_eq!(
        resource_version(&offline),
        resource_version(&list),
        "the list's version is not invented"
    );
    // The cached object was the one served before the DELETE: it must not come back.
    assert_ne!(kubelet.get(&format!("{PODS}/web-1")).body, online.body);
}

/// kubelet deletes in protobuf (its Accept), and its cached list is protobuf: the answer
/// alone — no watch is open — must take the pod out of both, offline and after a reboot.
#[test]
fn a_pod_kubelet_deleted_in_protobuf_is_gone_offline_after_a_reboot() {
    let mut edge = Edge::start("offline-delete-protobuf", &[], &[]);
    let accept = [("Accept", KUBELET_ACCEPT)];
    let mut kubelet = edge.kubelet();
    let listed = decode_pod_list(&kubelet.request("GET", PODS, &accept, b""));
    assert_eq!(pod_names(&listed), ["db-1", "web-1", "web-2"]);
    kubelet.request("GET", &format!("{PODS}/web-1"), &accept, b"").expect_status(200);
    edge.wait_stored(2);

    let deleted = kubelet.request("DELETE", &format!("{PODS}/web-1"), &accept, b"");
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(deleted.header("content-type"), Some(protobuf::PROTOBUF), "answered in protobuf");
    // The cache thread applies the answer on its own time: the reboot comes after.
    edge.wait_cache_summary(|summary| {
        let pods = &summary["identities"]["cn:system:node:edge-1"]["pods"]["content_types"];
        pods[protobuf::PROTOBUF]["list_items"].as_u64() == Some(2)
    });

    edge.cut_cloud();
    edge.restart_lite();
    let mut kubelet = edge.kubelet();
    let mut last = String::new();
    let gone = wait_for(SETTLE, || {
        let resp = kubelet.request("GET", PODS, &accept, b"");
        last = format!("{} {:?}", resp.status, resp.header(CACHE_HEADER));
        if resp.status != 200 {
            return None;
        }
        let names = pod_names(&decode_pod_list(&resp));
        last = format!("{names:?}");
        (names == ["db-1", "web-2"]).then_some(())
    });
    assert!(gone.is_some(), "kubelet's offline list after its protobuf DELETE: {last}");
    let get = kubelet.request("GET", &format!("{PODS}/web-1"), &accept, b"");
    assert_offline_object_miss(&get, "the deleted pod's GET");
}

#[test]
fn a_delete_cleans_every_identitys_cached_copies() {
    let mut edge = Edge::start("offline-delete-identities", &[], &[]);
    let on_edge_1 = "/api/v1/pods?fieldSelector=spec.nodeName%3Dedge-1";
    let mut kube_proxy = edge.kube_proxy();
    kube_proxy.get(&format!("{PODS}/web-1")).expect_status(200);
    kube_proxy.get(PODS).expect_status(200);
    let mut kubelet = edge.kubelet();
    kubelet.get(&format!("{PODS}/web-1")).expect_status(200);
    let node_list = kubelet.get(on_edge_1).expect_status(200).json();
    assert_eq!(item_names(&node_list), ["db-1", "web-1"]);
    edge.wait_stored(4);
    // Two identities really hold their own copies.
    edge.wait_cache_summary(|s| {
        ["cn:system:node:edge-1", "cn:system:kube-proxy"]
            .iter()
            .all(|id| s["identities"][id]["pods"]["entries"].as_u64() >= Some(1))
    });

    // kubelet deletes; kube-proxy's copies are stale all the same.
    kubelet.request("DELETE", &format!("{PODS}/web-1"), &[], b"").expect_status(200);

    edge.cut_cloud();
    let mut kube_proxy = edge.kube_proxy();
    assert_gone_offline(&mut kube_proxy, "web-1", "kube-proxy");
    offline_list_names(&mut kube_proxy, PODS, &["db-1", "web-2"], "kube-proxy");
    let mut kubelet = edge.kubelet();
    assert_gone_offline(&mut kubelet, "web-1", "kubelet");
    offline_list_names(&mut kubelet, on_edge_1, &["db-1"], "kubelet's all-namespaces list");
}

#[test]
fn a_pod_still_terminating_after_its_delete_is_served_terminating_offline() {
    let mut edge = Edge::start("offline-delete-terminating", &[], &[]);
    // The fake removes it at once, but answers it as kube does an object its finalizer keeps.
    let mut held = pod("held");
    held["metadata"]["finalizers"] = json!(["example.com/keep"]);
    held["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    held["metadata"]["deletionGracePeriodSeconds"] = json!(0);
    edge.cloud_admin().request("POST", PODS, &[JSON], &json_body(&held)).expect_status(201);
    let mut kubelet = edge.kubelet();
    let before = kubelet.get(&format!("{PODS}/held")).expect_status(200).json();
    let list = kubelet.get(PODS).expect_status(200).json();
    edge.wait_stored(2);

    let answer =
        kubelet.request("DELETE", &format!("{PODS}/held"), &[], b"").expect_status(200).json();
    assert!(!answer["metadata"]["deletionTimestamp"].is_null(), "{answer}");
    assert!(rv_number(&resource_version(&answer)) > rv_number(&resource_version(&before)));

    edge.cut_cloud();
    let mut kubelet = edge.kubelet();
    let path = format!("{PODS}/held");
    let offline = offline_answer(&mut kubelet, &path, "GET of the terminating pod", |r| {
        r.status == 200
            && r.json()["metadata"]["resourceVersion"] == answer["metadata"]["resourceVersion"]
    });
    assert_eq!(offline.header(CACHE_HEADER), Some("hit"));
    assert_eq!(offline.json(), answer, "the DELETE's answer is the pod's latest state");
    let listed = offline_answer(&mut kubelet, PODS, "the terminating pod in the list", |r| {
        r.status == 200 && item(&r.json(), "held") == Some(&answer)
    })
    .json();
    assert_eq!(item_names(&listed), ["db-1", "held", "web-1", "web-2"]);
    assert_eq!(
        resource_version(&listed),
        resource_version(&list),
        "the list's version is not invented"
    );
}
