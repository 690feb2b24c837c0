//! Discovery: `/version`, legacy discovery (`/api`, `/apis`, `/apis/{g}`, per group-version
//! APIResourceLists) and aggregated discovery (`apidiscovery.k8s.io` v2 and v2beta1
//! APIGroupDiscoveryList on `/api` and `/apis`, when the client asks for it).

use serde_json::{Value, json};

use crate::http::{Request, Response};
use crate::repr::parse_accept;
use crate::resources::{self, RESOURCES, ResourceType, VERBS};

/// Answers discovery paths; `None` for any other path.
pub fn handle(request: &Request) -> Option<Response> {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let aggregated = aggregated_version(request.header("Accept"));
    let response = match (segments.as_slice(), aggregated) {
        (["version"], _) => Response::json(200, &version()),
        (["openapi", "v2"], _) => openapi_v2(request),
        (["api"], Some(v)) => aggregated_response(v, &[("", "v1")]),
        (["apis"], Some(v)) => aggregated_response(v, &resources::groups()),
        (["api"], None) => Response::json(200, &api_versions(request)),
        (["apis"], None) => Response::json(200, &group_list()),
        (["api", "v1"], _) => Response::json(200, &resource_list("", "v1")),
        (["apis", group], _) => Response::json(200, &api_group(group)?),
        (["apis", group, version], _) if resources::groups().contains(&(group, version)) => {
            Response::json(200, &resource_list(group, version))
        }
        _ => return None,
    };
    Some(response)
}

/// The aggregated-discovery version the client prefers (`v2`/`v2beta1`), if it prefers one
/// before plain JSON.
fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    for range in parse_accept(accept?) {
        let wants_aggregated = range.param("as") == Some("APIGroupDiscoveryList")
            && range.param("g") == Some("apidiscovery.k8s.io");
        match range.param("v") {
            Some("v2") if wants_aggregated && range.is_json() => return Some("v2"),
            Some("v2beta1") if wants_aggregated && range.is_json() => return Some("v2beta1"),
            _ if range.is_json() && range.param("as").is_none() => return None,
            _ => {}
        }
    }
    None
}

/// An empty OpenAPI v2 document. kubectl downloads it (as protobuf) to validate manifests
/// client-side; with no definitions it skips that validation. An empty protobuf message is
/// the empty byte string.
fn openapi_v2(request: &Request) -> Response {
    const PROTOBUF_V2: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
    let wants_protobuf =
        request.header("Accept").is_some_and(|accept| accept.contains(PROTOBUF_V2));
    if wants_protobuf {
        // kube labels it octet-stream: Go cannot parse the `@` in the requested media type.
        return Response::new(200, "application/octet-stream", Vec::new());
    }
    let document = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": "v1.30.0-fake" },
        "paths": {},
        "definitions": {},
    });
    Response::json(200, &document)
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "30",
        "gitVersion": "v1.30.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-04-17T00:00:00Z",
        "goVersion": "go1.22.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_versions(request: &Request) -> Value {
    let address = request.header("Host").unwrap_or("127.0.0.1:443");
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": address }],
    })
}

fn group_version(group: &str, version: &str) -> Value {
    json!({ "groupVersion": format!("{group}/{version}"), "version": version })
}

fn api_group(group: &str) -> Option<Value> {
    let (_, version) = resources::groups().into_iter().find(|(g, _)| *g == group)?;
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [group_version(group, version)],
        "preferredVersion": group_version(group, version),
    }))
}

fn group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter_map(|(group, _)| api_group(group))
        .map(|mut group| {
            if let Some(fields) = group.as_object_mut() {
                fields.remove("kind");
                fields.remove("apiVersion");
            }
            group
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn types_in(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceType> {
    RESOURCES.iter().filter(move |r| r.group == group && r.version == version)
}

/// What a subresource answers with, and the verbs it allows.
fn subresource_kind_and_verbs(
    resource: &ResourceType,
    subresource: &str,
) -> (String, &'static [&'static str]) {
    match subresource {
        "exec" => ("PodExecOptions".into(), &["create", "get"]),
        "attach" => ("PodAttachOptions".into(), &["create", "get"]),
        "portforward" => ("PodPortForwardOptions".into(), &["create", "get"]),
        "log" => (resource.kind.into(), &["get"]),
        "finalize" => (resource.kind.into(), &["update"]),
        "scale" => ("Scale".into(), &["get", "patch", "update"]),
        _ => (resource.kind.into(), &["get", "patch", "update"]),
    }
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut entries = Vec::new();
    for r in types_in(group, version) {
        entries.push(json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": VERBS,
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for sub in r.subresources {
            let (kind, verbs) = subresource_kind_and_verbs(r, sub);
            entries.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    let group_version =
        if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    })
}

fn aggregated_response(discovery_version: &str, groups: &[(&str, &str)]) -> Response {
    let items: Vec<Value> =
        groups.iter().map(|(group, version)| group_discovery(group, version)).collect();
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{discovery_version}"),
        "metadata": {},
        "items": items,
    });
    let content_type = format!(
        "application/json;g=apidiscovery.k8s.io;v={discovery_version};as=APIGroupDiscoveryList"
    );
    Response::new(200, &content_type, crate::http::json_bytes(&body))
}

fn group_discovery(group: &str, version: &str) -> Value {
    let response_kind = |kind: &str| json!({ "group": group, "version": version, "kind": kind });
    let resources: Vec<Value> = types_in(group, version)
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|sub| {
                    let (kind, verbs) = subresource_kind_and_verbs(r, sub);
                    json!({
                        "subresource": sub,
                        "responseKind": response_kind(&kind),
                        "verbs": verbs,
                    })
                })
                .collect();
            json!({
                "resource": r.plural,
                "responseKind": response_kind(r.kind),
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": VERBS,
                "shortNames": r.short_names,
                "categories": r.categories,
                "subresources": subresources,
            })
        })
        .collect();
    let mut metadata = json!({ "creationTimestamp": null });
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({
        "metadata": metadata,
        "versions": [{ "version": version, "resources": resources, "freshness": "Current" }],
    })
}
