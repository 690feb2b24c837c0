//! `--in-cluster-address`: pods on this node reach this node's lite-apiserver instead of
//! the cloud. Pods build their in-cluster config from `KUBERNETES_SERVICE_HOST`/`PORT`,
//! which kubelet takes from the `default/kubernetes` Service; so the Service handed to
//! kubelet shows the local address as its `spec.clusterIP` (and `clusterIPs`) and the
//! local port as the port of its first port entry (kubelet reads `ports[0]`).
//!
//! Only kubelet identities (client certificate CN `system:node:<name>`) see the rewrite;
//! everyone else — kube-proxy above all, which must program the real Service — sees the
//! cloud's. The rewrite happens on the way out to the client, in whole JSON documents or
//! whole watch events; the cache keeps the cloud's answer.

use std::net::SocketAddr;

use serde_json::Value;

/// What to rewrite, for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InClusterAddress {
    pub addr: SocketAddr,
}

/// Paths whose answer may hold `default/kubernetes`.
const SERVICE_PATHS: &[&str] = &[
    "/api/v1/services",
    "/api/v1/namespaces/default/services",
    "/api/v1/namespaces/default/services/kubernetes",
    "/api/v1/watch/services",
    "/api/v1/watch/namespaces/default/services",
    "/api/v1/watch/namespaces/default/services/kubernetes",
];

impl InClusterAddress {
    /// Whether the answer to `path` for a client with certificate CN `peer_cn` is rewritten.
    pub fn applies(&self, peer_cn: Option<&str>, path: &str) -> bool {
        peer_cn.is_some_and(|cn| cn.starts_with("system:node:")) && SERVICE_PATHS.contains(&path)
    }

    /// A JSON document (the Service, or a list holding it), rewritten; `None` when it holds
    /// nothing to rewrite or is not JSON (then it goes out as it came).
    pub fn rewrite_document(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut document: Value = serde_json::from_slice(body).ok()?;
        let changed = match document.get_mut("items").and_then(Value::as_array_mut) {
            // Every item is patched (`any` would stop at the first one that changed).
            Some(items) => items.iter_mut().map(|item| self.patch(item)).filter(|&p| p).count() > 0,
            None => self.patch(&mut document),
        };
        changed.then(|| document.to_string().into_bytes())
    }

    /// Newline-delimited JSON watch events, each rewritten where it carries the Service.
    pub fn rewrite_events(&self, events: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.len());
        for line in events.split_inclusive(|&b| b == b'\n') {
            match self.rewrite_event(line) {
                Some(event) => {
                    out.extend_from_slice(&event);
                    out.push(b'\n');
                }
                None => out.extend_from_slice(line),
            }
        }
        out
    }

    fn rewrite_event(&self, line: &[u8]) -> Option<Vec<u8>> {
        let mut event: Value = serde_json::from_slice(line).ok()?;
        let object = event.get_mut("object")?;
        self.patch(object).then(|| event.to_string().into_bytes())
    }

    /// Points `object` at the local address when it is `default/kubernetes`.
    fn patch(&self, object: &mut Value) -> bool {
        let metadata = &object["metadata"];
        let is_it = object["kind"].as_str().is_none_or(|kind| kind == "Service")
            && metadata["name"] == "kubernetes"
            && metadata["namespace"] == "default";
        let Some(spec) = object.get_mut("spec").filter(|_| is_it).and_then(Value::as_object_mut)
        else {
            return false;
        };
        let ip = self.addr.ip().to_string();
        spec.insert("clusterIP".into(), Value::from(ip.clone()));
        spec.insert("clusterIPs".into(), Value::from(vec![ip]));
        // Only an object entry: indexing any other JSON value by key panics, so a cloud
        // answering `"ports": [443]` would abort the proxy (fuzz/regressions/in_cluster).
        let first = spec.get_mut("ports").and_then(Value::as_array_mut).and_then(|p| p.first_mut());
        if let Some(first) = first.and_then(Value::as_object_mut) {
            first.insert("port".into(), Value::from(self.addr.port()));
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn local() -> InClusterAddress {
        InClusterAddress { addr: "169.254.0.10:51003".parse().unwrap() }
    }

    fn service(namespace: &str, name: &str) -> Value {
        json!({"kind": "Service", "apiVersion": "v1",
               "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
               "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                        "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}})
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn only_kubelet_identities_and_service_paths_are_rewritten() {
        let rewrite = local();
        let get = "/api/v1/namespaces/default/services/kubernetes";
        assert!(rewrite.applies(Some("system:node:edge-1"), get));
        assert!(rewrite.applies(Some("system:node:edge-1"), "/api/v1/services"));
        assert!(!rewrite.applies(Some("system:kube-proxy"), get));
        assert!(!rewrite.applies(None, get));
        assert!(!rewrite.applies(Some("system:node:edge-1"), "/api/v1/pods"));
        assert!(
            !rewrite
                .applies(Some("system:node:edge-1"), "/api/v1/namespaces/a/services/kubernetes")
        );
    }

    #[test]
    fn the_kubernetes_service_points_at_the_local_address() {
        let body = service("default", "kubernetes").to_string();
        let rewritten = parse(&local().rewrite_document(body.as_bytes()).unwrap());
        assert_eq!(rewritten["spec"]["clusterIP"], "169.254.0.10");
        assert_eq!(rewritten["spec"]["clusterIPs"], json!(["169.254.0.10"]));
        assert_eq!(rewritten["spec"]["ports"][0]["port"], 51003);
        assert_eq!(rewritten["spec"]["ports"][0]["targetPort"], 6443);
        assert_eq!(rewritten["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn in_a_list_only_that_service_changes_and_other_documents_are_left_alone() {
        let list = json!({"kind": "ServiceList", "metadata": {"resourceVersion": "9"},
                          "items": [service("default", "web"), service("default", "kubernetes"),
                                    service("other", "kubernetes")]});
        let rewritten = parse(&local().rewrite_document(list.to_string().as_bytes()).unwrap());
        let ips: Vec<&str> = rewritten["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["spec"]["clusterIP"].as_str().unwrap())
            .collect();
        assert_eq!(ips, ["10.96.0.1", "169.254.0.10", "10.96.0.1"]);
        let web = service("default", "web").to_string();
        assert!(local().rewrite_document(web.as_bytes()).is_none());
        assert!(local().rewrite_document(b"k8s\0\x0a\x02not json").is_none());
    }

    #[test]
    fn port_entries_that_are_not_objects_are_left_alone() {
        for ports in [json!([443]), json!([null]), json!(["https"]), json!(7)] {
            let mut body = service("default", "kubernetes");
            body["spec"]["ports"] = ports.clone();
            let rewritten = parse(&local().rewrite_document(body.to_string().as_bytes()).unwrap());
            assert_eq!(rewritten["spec"]["ports"], ports);
            assert_eq!(rewritten["spec"]["clusterIP"], "169.254.0.10");
        }
    }

    #[test]
    fn watch_events_are_rewritten_one_by_one() {
        let added = json!({"type": "ADDED", "object": service("default", "kubernetes")});
        let other = json!({"type": "ADDED", "object": service("default", "web")});
        let stream = format!("{other}\n{added}\n");
        let out = local().rewrite_events(stream.as_bytes());
        let lines: Vec<Value> =
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(parse).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], other);
        assert_eq!(lines[1]["object"]["spec"]["clusterIP"], "169.254.0.10");
        assert!(out.ends_with(b"\n"));
    }
}
