//! `--in-cluster-address`: kubelet is shown this node's lite-apiserver as the
//! `default/kubernetes` Service (so the pods it starts talk to it), in every form the proxy
//! hands out — GET, LIST, WATCH, online and from the cache — while kube-proxy keeps seeing
//! the real Service and the cache keeps the cloud's answer.

mod common;

use std::time::Duration;

use common::Edge;
use serde_json::Value;

const LOCAL_IP: &str = "169.254.0.10";
const LOCAL_PORT: u64 = 51003;
const FLAG: &str = "--in-cluster-address=169.254.0.10:51003";
const SERVICE: &str = "/api/v1/namespaces/default/services/kubernetes";
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The `kubernetes` Service's address as `(clusterIP, clusterIPs[0], ports[0].port)`.
fn address(service: &Value) -> (String, String, u64) {
    let spec = &service["spec"];
    let text = |value: &Value| value.as_str().unwrap_or("<none>").to_string();
    (
        text(&spec["clusterIP"]),
        text(&spec["clusterIPs"][0]),
        spec["ports"][0]["port"].as_u64().unwrap_or(0),
    )
}

fn local() -> (String, String, u64) {
    (LOCAL_IP.to_string(), LOCAL_IP.to_string(), LOCAL_PORT)
}

fn kubernetes_item(list: &Value) -> Value {
    let items = list["items"].as_array().expect("a list");
    let found = items
        .iter()
        .find(|i| i["metadata"]["name"] == "kubernetes" && i["metadata"]["namespace"] == "default");
    found.cloned().unwrap_or_else(|| panic!("no default/kubernetes in {list}"))
}

#[test]
fn kubelet_sees_this_node_as_the_kubernetes_service_online_and_offline() {
    let mut edge = Edge::start("in-cluster", &[], &[FLAG]);
    let real = address(&edge.direct(Some("kubelet")).get(SERVICE).json());
    assert_eq!(real.0, "10.96.0.1", "the fake's own Service");

    let mut kubelet = edge.kubelet();
    let online = kubelet.get(SERVICE);
    assert_eq!(online.status, 200, "{}", online.text());
    assert_eq!(address(&online.json()), local(), "kubelet's GET");
    let list = kubelet.get("/api/v1/services");
    assert_eq!(address(&kubernetes_item(&list.json())), local(), "kubelet's LIST");
    let namespaced = kubelet.get("/api/v1/namespaces/default/services");
    assert_eq!(address(&kubernetes_item(&namespaced.json())), local(), "kubelet's namespaced LIST");

    let mut kube_proxy = edge.kube_proxy();
    assert_eq!(
        address(&kube_proxy.get(SERVICE).json()),
        real,
        "kube-proxy must see the real Service"
    );
    let other = kubelet.get("/api/v1/namespaces/default/pods/web-1");
    assert_eq!(other.status, 200, "other reads pass untouched: {}", other.text());

    edge.wait_stored(5);
    edge.cut_cloud();
    let offline = kubelet.get(SERVICE);
    assert_eq!(offline.header("x-lite-apiserver-cache"), Some("hit"), "{}", offline.text());
    assert_eq!(address(&offline.json()), local(), "kubelet's GET from the cache");
    let offline_list = kubelet.get("/api/v1/services");
    assert_eq!(offline_list.header("x-lite-apiserver-cache"), Some("hit"));
    assert_eq!(
        address(&kubernetes_item(&offline_list.json())),
        local(),
        "kubelet's LIST from the cache"
    );
    let proxy_offline = kube_proxy.get(SERVICE);
    assert_eq!(proxy_offline.header("x-lite-apiserver-cache"), Some("hit"));
    assert_eq!(address(&proxy_offline.json()), real, "the cache keeps the cloud's answer");
}

#[test]
fn kubelets_watch_of_services_carries_the_local_address_in_every_event() {
    let edge = Edge::start("in-cluster-watch", &[], &[FLAG]);
    let mut kubelet = edge.kubelet();
    let mut watch = kubelet.watch("/api/v1/services?watch=true");
    let added = loop {
        let event = watch.next_change(EVENT_WAIT);
        if event["object"]["metadata"]["name"] == "kubernetes" {
            break event;
        }
    };
    assert_eq!(added["type"], "ADDED");
    assert_eq!(address(&added["object"]), local(), "the initial ADDED");

    let patch = br#"{"metadata":{"labels":{"changed":"yes"}}}"#;
    let headers = [("Content-Type", "application/merge-patch+json")];
    let patched = edge.cloud_admin().request("PATCH", SERVICE, &headers, patch);
    assert_eq!(patched.status, 200, "{}", patched.text());
    let modified = watch.next_change(EVENT_WAIT);
    assert_eq!(modified["type"], "MODIFIED", "{modified}");
    assert_eq!(modified["object"]["metadata"]["labels"]["changed"], "yes");
    assert_eq!(address(&modified["object"]), local(), "the MODIFIED event");

    let mut kube_proxy = edge.kube_proxy();
    let mut theirs = kube_proxy.watch("/api/v1/namespaces/default/services?watch=true");
    let event = theirs.next_change(EVENT_WAIT);
    assert_eq!(address(&event["object"]).0, "10.96.0.1", "kube-proxy's watch is the real one");
}

#[test]
fn without_the_flag_kubelet_sees_the_real_service() {
    let edge = Edge::start("in-cluster-off", &[], &[]);
    let service = edge.kubelet().get(SERVICE).json();
    assert_eq!(address(&service).0, "10.96.0.1");
}
