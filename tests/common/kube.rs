//! Kubernetes-flavoured assertions and data for the tests: `Status` bodies, the fake's
//! `/debug/echo` report, digests and test objects.

use serde_json::{Value, json};

use super::wire::Response;

/// Asserts `resp` is a `code` response whose body is a Kubernetes failure `Status`
/// (`kind: Status`, `apiVersion: v1`, `status: Failure`, the same `code`, a message).
pub fn assert_status_body(resp: &Response, code: u16) {
    assert_eq!(resp.status, code, "status; body: {}", resp.text());
    let content_type = resp.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "Status Content-Type is {content_type:?}"
    );
    let status = resp.json();
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(status["apiVersion"], "v1", "{status}");
    assert_eq!(status["status"], "Failure", "{status}");
    assert_eq!(status["code"], u64::from(code), "{status}");
    assert!(
        status["message"].as_str().is_some_and(|m| !m.is_empty()),
        "Status has no message: {status}"
    );
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` deterministic bytes covering every byte value (not valid UTF-8, not compressible
/// into a trivial pattern).
pub fn pattern_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// The values of header `name` in a `/debug/echo` report, whatever shape the fake uses for
/// `headers`: an object (name → string or list of strings) or a list of `[name, value]` pairs
/// or `{name, value}` objects. Names compare case-insensitively.
pub fn echo_header(echo: &Value, name: &str) -> Vec<String> {
    let strings = |value: &Value| -> Vec<String> {
        match value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            _ => Vec::new(),
        }
    };
    match &echo["headers"] {
        Value::Object(map) => map
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| strings(v))
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|item| match item {
                Value::Array(pair) if pair.len() == 2 => Some((pair[0].as_str()?, &pair[1])),
                Value::Object(entry) => Some((entry.get("name")?.as_str()?, entry.get("value")?)),
                _ => None,
            })
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| strings(v))
            .collect(),
        other => panic!("echo report has no headers: {other}"),
    }
}

/// A minimal valid Pod in `default`.
pub fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "lite-test"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    })
}

/// `metadata.resourceVersion` of an object or list.
pub fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.resourceVersion in {object}"))
        .to_string()
}

/// The `metadata.name` of a watch event's object.
pub fn event_name(event: &Value) -> &str {
    event["object"]["metadata"]["name"].as_str().unwrap_or("")
}
