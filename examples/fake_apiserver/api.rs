//! The resource API: parses `/api/v1/...` and `/apis/{group}/{version}/...` paths, dispatches
//! by verb, and serves the reads — GET, LIST (selectors, limit/continue) and WATCH requests
//! (handed to `watch`). Writes live in `writes`. Returns what to send; the router does the I/O.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{Request, Response};
use crate::repr::{self, Repr};
use crate::resources::{self, ResourceId, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector, Selector};
use crate::status::ApiError;
use crate::store::{Key, Shared};
use crate::watch::{self, WatchSpec};
use crate::writes::{create, delete, delete_collection, patch, update};

/// kube-apiserver picks 30–60 minutes when a watch has no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longer requested timeouts are cut to this (and `Instant + timeout` cannot overflow).
const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

pub enum Reply {
    Full(Response),
    Watch(Box<WatchSpec>),
    /// exec/attach/portforward with `Connection: Upgrade`: switch protocols and echo.
    Upgrade,
}

impl From<ApiError> for Reply {
    fn from(error: ApiError) -> Reply {
        Reply::Full(error.to_response())
    }
}

/// What a resource path names.
pub struct Target {
    pub resource: ResourceId,
    pub namespace: Option<String>,
    pub name: Option<String>,
    subresource: Option<String>,
    legacy_watch: bool,
}

impl Target {
    pub fn type_(&self) -> &'static ResourceType {
        resources::get(self.resource)
    }

    pub fn key(&self, name: &str) -> Key {
        Key {
            resource: self.resource,
            namespace: self.namespace.clone().unwrap_or_default(),
            name: name.to_string(),
        }
    }
}

/// Serves a request under `/api/v1/` or `/apis/{g}/{v}/`; `None` if the path names no
/// resource (discovery paths such as `/api/v1` itself). Errors follow `Accept` (JSON or
/// protobuf Status).
pub fn handle(request: &Request, shared: &Shared) -> Option<Reply> {
    let reply = parse_target(&request.path)?.and_then(|target| dispatch(request, shared, &target));
    Some(reply.unwrap_or_else(|error| Reply::Full(error.to_response_for(request.header("Accept")))))
}

fn parse_target(path: &str) -> Option<Result<Target, ApiError>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    (!rest.is_empty()).then(|| resolve_target(group, version, rest))
}

/// Resolves what follows the group-version:
/// `[watch/][namespaces/{ns}/]{plural}[/{name}[/{subresource}]]`.
fn resolve_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (legacy_watch, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        // `namespaces/{name}/status` is a subresource of a namespace, not a resource in it.
        ["namespaces", ns, plural, ..] if !matches!(*plural, "status" | "finalize") => {
            (Some(ns.to_string()), &rest[2..])
        }
        _ => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::not_found_path()),
    };
    let resource = resources::find(group, version, plural).ok_or_else(ApiError::not_found_path)?;
    let namespaced = resources::get(resource).namespaced;
    let misplaced =
        if namespaced { namespace.is_none() && name.is_some() } else { namespace.is_some() };
    if misplaced {
        return Err(ApiError::not_found_path());
    }
    Ok(Target { resource, namespace, name, subresource, legacy_watch })
}

fn dispatch(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    if let Some(subresource) = &target.subresource {
        return subresource_reply(request, shared, target, subresource);
    }
    let method = request.method.as_str();
    match (method, &target.name) {
        ("GET" | "HEAD", _) if target.legacy_watch || request.query_flag("watch") => {
            watch_reply(request, target)
        }
        ("GET" | "HEAD", Some(name)) => get(request, shared, target, name),
        ("GET" | "HEAD", None) => list(request, shared, target),
        ("POST", None) if target.namespace.is_some() || !target.type_().namespaced => {
            create(request, shared, target)
        }
        ("PUT", Some(name)) => update(request, shared, target, name),
        ("PATCH", Some(name)) => patch(request, shared, target, name),
        ("DELETE", Some(name)) => delete(request, shared, target, name),
        ("DELETE", None) => delete_collection(request, shared, target),
        _ => Err(ApiError::method_not_allowed(method)),
    }
}

fn subresource_reply(
    request: &Request,
    shared: &Shared,
    target: &Target,
    subresource: &str,
) -> Result<Reply, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    if !target.type_().subresources.contains(&subresource) {
        return Err(ApiError::not_found_path());
    }
    match (subresource, request.method.as_str()) {
        ("exec" | "attach" | "portforward", _)
            if request.header_has_token("Connection", "upgrade") =>
        {
            Ok(Reply::Upgrade)
        }
        ("exec" | "attach" | "portforward", _) => {
            Err(ApiError::bad_request("Upgrade request required"))
        }
        ("log", "GET") => {
            let ns = target.namespace.as_deref().unwrap_or_default();
            shared
                .read()
                .get(&target.key(name))
                .ok_or_else(|| ApiError::not_found("pods", name))?;
            Ok(Reply::Full(Response::text(
                200,
                &format!("fake log line 1 from {ns}/{name}\nfake log line 2 from {ns}/{name}\n"),
            )))
        }
        (_, "GET") => get(request, shared, target, name),
        (_, "PUT") => update(request, shared, target, name),
        (_, "PATCH") => patch(request, shared, target, name),
        (_, method) => Err(ApiError::method_not_allowed(method)),
    }
}

pub fn negotiate(request: &Request, target: &Target) -> Result<Repr, ApiError> {
    repr::negotiate(request.header("Accept"), target.type_(), request.query_param("includeObject"))
}

pub fn object_reply(
    request: &Request,
    target: &Target,
    status: u16,
    object: &Value,
) -> Result<Reply, ApiError> {
    let repr = negotiate(request, target)?;
    let body = repr.encode(&repr.object(target.type_(), object, true));
    Ok(Reply::Full(Response::new(status, &repr.content_type(false), body)))
}

pub fn selector(request: &Request) -> Result<Selector, ApiError> {
    Ok(Selector {
        labels: LabelSelector::parse(request.query_param("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(request.query_param("fieldSelector").unwrap_or_default())?,
    })
}

fn get(request: &Request, shared: &Shared, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let object = shared.read().get(&target.key(name)).cloned();
    let object =
        object.ok_or_else(|| ApiError::not_found(&target.type_().qualified_name(), name))?;
    object_reply(request, target, 200, &object)
}

fn list(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    let repr = negotiate(request, target)?;
    let selector = selector(request)?;
    let limit = match request.query_param("limit") {
        None | Some("" | "0") => usize::MAX,
        Some(text) => {
            text.parse().map_err(|_| ApiError::bad_request(format!("invalid limit: {text:?}")))?
        }
    };
    let resume_after = request
        .query_param("continue")
        .filter(|t| !t.is_empty())
        .map(decode_continue)
        .transpose()?;

    let (matching, rv) = {
        let store = shared.read();
        let matching: Vec<Value> = store
            .list(target.resource, target.namespace.as_deref())
            .filter(|o| resume_after.as_ref().is_none_or(|after| object_position(o) > *after))
            .filter(|o| selector.matches(o))
            .cloned()
            .collect();
        (matching, store.rv())
    };
    let page: Vec<&Value> = matching.iter().take(limit).collect();
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    let remaining = matching.len() - page.len();
    if let (true, Some(last)) = (remaining > 0, page.last()) {
        metadata["continue"] = json!(encode_continue(&object_position(last)));
        metadata["remainingItemCount"] = json!(remaining);
    }
    let body = repr.encode(&repr.list(target.type_(), &page, metadata));
    Ok(Reply::Full(Response::new(200, &repr.content_type(true), body)))
}

/// `(namespace, name)`: the list order, and what a continue token remembers.
pub fn object_position(object: &Value) -> (String, String) {
    let text = |field: &str| object["metadata"][field].as_str().unwrap_or_default().to_string();
    (text("namespace"), text("name"))
}

/// Continue tokens are opaque to clients: hex of `namespace/name` of the last item sent.
fn encode_continue((namespace, name): &(String, String)) -> String {
    format!("{namespace}/{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let invalid = || ApiError::bad_request("continue key is not valid");
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|hex| u8::from_str_radix(hex, 16).ok()))
        .collect();
    let text = String::from_utf8(bytes.ok_or_else(invalid)?).map_err(|_| invalid())?;
    let (namespace, name) = text.split_once('/').ok_or_else(invalid)?;
    Ok((namespace.to_string(), name.to_string()))
}

fn watch_reply(request: &Request, target: &Target) -> Result<Reply, ApiError> {
    let mut selector = selector(request)?;
    if let Some(name) = &target.name {
        selector.fields = selector.fields.with_name(name);
    }
    let timeout = match request.query_param("timeoutSeconds") {
        None | Some("") => DEFAULT_WATCH_TIMEOUT,
        Some(text) => Duration::from_secs(
            text.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {text:?}")))?,
        )
        .min(MAX_WATCH_TIMEOUT),
    };
    Ok(Reply::Watch(Box::new(WatchSpec {
        resource: target.resource,
        namespace: target.namespace.clone(),
        selector,
        start_after: watch::parse_start(request.query_param("resourceVersion"))?,
        bookmarks: request.query_flag("allowWatchBookmarks"),
        initial_events_end: request.query_flag("sendInitialEvents"),
        timeout,
        repr: negotiate(request, target)?,
    })))
}
