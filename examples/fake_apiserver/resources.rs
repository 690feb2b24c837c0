//! The resource types this fake serves (core/v1, apps/v1, discovery.k8s.io/v1,
//! coordination.k8s.io/v1 and the `example.com/v1` Widget "CRD") and the objects it starts
//! with.

use serde_json::{Value, json};

pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// Built-in types answer protobuf; custom resources are JSON only, as in kube.
    pub builtin: bool,
    /// kube's `AllowUnconditionalUpdate() == false` (Lease): a PUT must name the version it
    /// replaces.
    pub update_needs_version: bool,
    /// kube's `AllowCreateOnUpdate() == true` (Lease): a PUT of a missing object creates it.
    pub create_on_update: bool,
}

impl ResourceType {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The name kube uses in messages such as `pods "x" not found` (`widgets.example.com`).
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

pub const VERBS: [&str; 8] =
    ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

const fn core(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
) -> ResourceType {
    ResourceType {
        group: "",
        version: "v1",
        plural,
        singular,
        kind,
        namespaced,
        short_names,
        categories: &[],
        subresources,
        builtin: true,
        update_needs_version: false,
        create_on_update: false,
    }
}

pub static RESOURCES: [ResourceType; 11] = [
    ResourceType {
        categories: &["all"],
        ..core(
            "pods",
            "pod",
            "Pod",
            true,
            &["po"],
            &["status", "log", "exec", "attach", "portforward"],
        )
    },
    core("namespaces", "namespace", "Namespace", false, &["ns"], &["status", "finalize"]),
    core("configmaps", "configmap", "ConfigMap", true, &["cm"], &[]),
    core("secrets", "secret", "Secret", true, &[], &[]),
    ResourceType {
        categories: &["all"],
        ..core("services", "service", "Service", true, &["svc"], &["status"])
    },
    core("nodes", "node", "Node", false, &["no"], &["status"]),
    core("events", "event", "Event", true, &["ev"], &[]),
    ResourceType {
        group: "apps",
        categories: &["all"],
        ..core("deployments", "deployment", "Deployment", true, &["deploy"], &["status", "scale"])
    },
    // What kube-proxy lists and watches to program a node's Services.
    ResourceType {
        group: "discovery.k8s.io",
        ..core("endpointslices", "endpointslice", "EndpointSlice", true, &[], &[])
    },
    // kubelet renews its node's Lease every 10 s: the cloud's sign that the node is alive.
    ResourceType {
        group: "coordination.k8s.io",
        update_needs_version: true,
        create_on_update: true,
        ..core("leases", "lease", "Lease", true, &[], &[])
    },
    ResourceType {
        group: "example.com",
        builtin: false,
        ..core("widgets", "widget", "Widget", true, &["wd"], &[])
    },
];

/// Index into [`RESOURCES`]; the store keys objects by it.
pub type ResourceId = usize;

pub fn find(group: &str, version: &str, plural: &str) -> Option<ResourceId> {
    RESOURCES.iter().position(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Plurals are unique across the groups served here.
pub fn find_by_plural(plural: &str) -> Option<ResourceId> {
    RESOURCES.iter().position(|r| r.plural == plural)
}

pub fn get(id: ResourceId) -> &'static ResourceType {
    &RESOURCES[id]
}

/// The groups (other than core) with their single version, in discovery order.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

/// Seed objects as `(resource, age in seconds, object)`. Metadata such as uid and
/// resourceVersion is filled in by the store.
pub fn seed() -> Vec<(&'static str, i64, Value)> {
    const HOUR: i64 = 3600;
    const DAY: i64 = 24 * HOUR;
    vec![
        ("namespaces", 30 * DAY, namespace("default")),
        ("namespaces", 30 * DAY, namespace("kube-system")),
        ("namespaces", 7 * DAY, namespace("edge")),
        ("namespaces", 30 * DAY, namespace("kube-node-lease")),
        ("nodes", 7 * DAY, node("edge-1")),
        ("leases", 7 * DAY, node_lease("edge-1")),
        ("pods", 2 * HOUR, pod("web-1", "web", "edge-1", "10.244.1.7")),
        ("pods", 2 * HOUR, pod("web-2", "web", "edge-2", "10.244.2.4")),
        ("pods", HOUR, pod("db-1", "db", "edge-1", "10.244.1.9")),
        ("services", 30 * DAY, kubernetes_service()),
        ("endpointslices", 30 * DAY, kubernetes_endpoint_slice()),
        ("configmaps", DAY, config_map()),
        ("secrets", DAY, secret()),
        ("widgets", HOUR, widget()),
    ]
}

/// `default/kubernetes`, the Service every cluster has: in-cluster clients find the
/// apiserver through it (kubelet hands its address to pods as KUBERNETES_SERVICE_HOST).
fn kubernetes_service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": { "component": "apiserver", "provider": "kubernetes" },
        },
        "spec": {
            "clusterIP": "10.96.0.1",
            "clusterIPs": ["10.96.0.1"],
            "ports": [{ "name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443 }],
            "type": "ClusterIP",
            "sessionAffinity": "None",
        },
        "status": { "loadBalancer": {} },
    })
}

/// The endpoints of `default/kubernetes`, as the apiserver's endpoint reconciler keeps them
/// (the slice is named after the Service; kube-proxy joins them by the service-name label).
fn kubernetes_endpoint_slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": ["192.168.1.2"],
            "conditions": { "ready": true, "serving": true, "terminating": false },
        }],
        "ports": [{ "name": "https", "port": 6443, "protocol": "TCP" }],
    })
}

/// The Lease kubelet renews for its node (`kube-node-lease/<node>`).
fn node_lease(node: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": node, "namespace": "kube-node-lease" },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": 40,
            "renewTime": "2024-05-01T10:00:00.000000Z",
        },
    })
}

fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": { "kubernetes.io/metadata.name": name } },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" },
    })
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/hostname": name, "node-role.kubernetes.io/edge": "" },
        },
        "spec": { "podCIDR": "10.244.1.0/24" },
        "status": {
            "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady" }],
            "addresses": [{ "type": "InternalIP", "address": "192.168.1.10" }],
            "nodeInfo": {
                "kubeletVersion": "v1.30.0",
                "osImage": "Fake Linux",
                "architecture": "amd64",
            },
        },
    })
}

fn pod(name: &str, app: &str, node: &str, ip: &str) -> Value {
    let image = format!("registry.example/{app}:1.0");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": { "app": app } },
        "spec": {
            "nodeName": node,
            "containers": [{ "name": app, "image": image }],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            // kube always sets image and imageID; typed clients (the Python one) require them.
            "containerStatuses": [{
                "name": app,
                "ready": true,
                "restartCount": 0,
                "image": image,
                "imageID": format!("{image}@sha256:{}", "0".repeat(64)),
                "started": true,
                "state": { "running": {} },
            }],
        },
    })
}

fn config_map() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "app-config", "namespace": "default", "labels": { "app": "web" } },
        "data": { "greeting": "hello from the cloud", "replicas": "2" },
    })
}

fn secret() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": { "name": "db-password", "namespace": "kube-system" },
        "data": { "password": "czNjcjN0" },
    })
}

fn widget() -> Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": { "name": "sprocket", "namespace": "default", "labels": { "app": "web" } },
        "spec": { "size": 3, "color": "blue" },
    })
}
