//! The resource API: parses `/api/v1/...` and `/apis/{group}/{version}/...` paths and serves
//! GET, LIST (selectors, limit/continue), WATCH, POST, PUT, PATCH (JSON merge patch) and
//! DELETE against the store. Returns what to send; the router does the I/O.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::clock;
use crate::http::{Request, Response};
use crate::repr::{self, PROTOBUF, PROTOBUF_MAGIC, Repr};
use crate::resources::{self, ResourceId, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector, Selector};
use crate::status::ApiError;
use crate::store::{Key, Shared, Store, random_uid};
use crate::watch::{self, WatchSpec};

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
struct Target {
    resource: ResourceId,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    legacy_watch: bool,
}

impl Target {
    fn type_(&self) -> &'static ResourceType {
        resources::get(self.resource)
    }

    fn key(&self, name: &str) -> Key {
        Key { resource: self.resource, namespace: self.namespace.clone().unwrap_or_default(), name: name.to_string() }
    }
}

/// Serves a request under `/api/v1/` or `/apis/{g}/{v}/`; `None` if the path names no
/// resource (discovery paths such as `/api/v1` itself).
pub fn handle(request: &Request, shared: &Shared) -> Option<Reply> {
    let target = match parse_target(&request.path)? {
        Ok(target) => target,
        Err(error) => return Some(error.into()),
    };
    Some(dispatch(request, shared, &target).unwrap_or_else(Reply::from))
}

fn parse_target(path: &str) -> Option<Result<Target, ApiError>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return None;
    }
    let legacy_watch = rest[0] == "watch";
    if legacy_watch {
        rest = &rest[1..];
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..] if !matches!(*resource, "status" | "finalize") => {
            (Some(ns.to_string()), [&[*resource][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let target = (|| {
        let (plural, name, subresource) = match rest.as_slice() {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return Err(ApiError::not_found_path()),
        };
        let resource = resources::find(group, version, plural).ok_or_else(ApiError::not_found_path)?;
        let namespaced = resources::get(resource).namespaced;
        if (namespace.is_some() && !namespaced) || (namespace.is_none() && namespaced && name.is_some()) {
            return Err(ApiError::not_found_path());
        }
        Ok(Target { resource, namespace: namespace.clone(), name, subresource, legacy_watch })
    })();
    Some(target)
}

fn dispatch(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    if let Some(subresource) = &target.subresource {
        return subresource_reply(request, shared, target, subresource);
    }
    let method = request.method.as_str();
    match (method, &target.name) {
        ("GET" | "HEAD", _) if target.legacy_watch || request.query_flag("watch") => watch_reply(request, target),
        ("GET" | "HEAD", Some(name)) => get(request, shared, target, name),
        ("GET" | "HEAD", None) => list(request, shared, target),
        ("POST", None) if target.namespace.is_some() || !target.type_().namespaced => create(request, shared, target),
        ("PUT", Some(name)) => update(request, shared, target, name),
        ("PATCH", Some(name)) => patch(request, shared, target, name),
        ("DELETE", Some(name)) => delete(request, shared, target, name),
        ("DELETE", None) => delete_collection(request, shared, target),
        _ => Err(ApiError::method_not_allowed(method)),
    }
}

fn subresource_reply(request: &Request, shared: &Shared, target: &Target, subresource: &str) -> Result<Reply, ApiError> {
    let name = target.name.as_deref().unwrap_or_default();
    if !target.type_().subresources.contains(&subresource) {
        return Err(ApiError::not_found_path());
    }
    match (subresource, request.method.as_str()) {
        ("exec" | "attach" | "portforward", _) if request.header_has_token("Connection", "upgrade") => Ok(Reply::Upgrade),
        ("exec" | "attach" | "portforward", _) => Err(ApiError::bad_request("Upgrade request required")),
        ("log", "GET") => {
            let ns = target.namespace.as_deref().unwrap_or_default();
            shared.read().get(&target.key(name)).ok_or_else(|| ApiError::not_found("pods", name))?;
            Ok(Reply::Full(Response::text(200, &format!("fake log line 1 from {ns}/{name}\nfake log line 2 from {ns}/{name}\n"))))
        }
        (_, "GET") => get(request, shared, target, name),
        (_, "PUT") => update(request, shared, target, name),
        (_, "PATCH") => patch(request, shared, target, name),
        (_, method) => Err(ApiError::method_not_allowed(method)),
    }
}

fn negotiate(request: &Request, target: &Target) -> Result<Repr, ApiError> {
    repr::negotiate(request.header("Accept"), target.type_(), request.query_param("includeObject"))
}

fn object_reply(request: &Request, target: &Target, status: u16, object: &Value) -> Result<Reply, ApiError> {
    let repr = negotiate(request, target)?;
    let body = repr.encode(&repr.object(target.type_(), object, true));
    Ok(Reply::Full(Response::new(status, &repr.content_type(false), body)))
}

fn selector(request: &Request) -> Result<Selector, ApiError> {
    Ok(Selector {
        labels: LabelSelector::parse(request.query_param("labelSelector").unwrap_or_default())?,
        fields: FieldSelector::parse(request.query_param("fieldSelector").unwrap_or_default())?,
    })
}

fn get(request: &Request, shared: &Shared, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let object = shared.read().get(&target.key(name)).cloned();
    let object = object.ok_or_else(|| ApiError::not_found(&target.type_().qualified_name(), name))?;
    object_reply(request, target, 200, &object)
}

fn list(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    let repr = negotiate(request, target)?;
    let selector = selector(request)?;
    let limit = match request.query_param("limit") {
        None | Some("" | "0") => usize::MAX,
        Some(text) => text.parse().map_err(|_| ApiError::bad_request(format!("invalid limit: {text:?}")))?,
    };
    let resume_after = request.query_param("continue").filter(|t| !t.is_empty()).map(decode_continue).transpose()?;

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
fn object_position(object: &Value) -> (String, String) {
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
            text.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {text:?}")))?,
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

/// The request body as a JSON object; a body in the fake protobuf envelope is accepted too.
fn body_object(request: &Request) -> Result<Value, ApiError> {
    let is_protobuf = request.header("Content-Type").is_some_and(|t| t.starts_with(PROTOBUF));
    let body = match request.body.strip_prefix(PROTOBUF_MAGIC) {
        Some(json) if is_protobuf => json,
        _ => &request.body,
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("unable to decode the request body: {e}"))),
    }
}

/// Checks kind/apiVersion against the target and fills them if absent; `metadata` must be
/// an object (an empty one is added if missing), so later field writes cannot fail.
fn check_type(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let type_ = target.type_();
    for (field, expected) in [("kind", type_.kind.to_string()), ("apiVersion", type_.api_version())] {
        match &object[field] {
            Value::Null => object[field] = json!(expected),
            Value::String(actual) if *actual == expected => {}
            actual => {
                return Err(ApiError::bad_request(format!("the {field} {actual} does not match the expected {expected:?}")));
            }
        }
    }
    match &object["metadata"] {
        Value::Null => object["metadata"] = Value::Object(Map::new()),
        Value::Object(_) => {}
        _ => return Err(ApiError::bad_request("metadata must be an object")),
    }
    Ok(())
}

/// Puts the path's namespace into the object, refusing a different one in the body.
fn apply_namespace(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let metadata = &mut object["metadata"];
    match &target.namespace {
        None => {
            if let Some(fields) = metadata.as_object_mut() {
                fields.remove("namespace");
            }
        }
        Some(ns) => match metadata["namespace"].as_str() {
            None | Some("") => metadata["namespace"] = json!(ns),
            Some(given) if given == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        },
    }
    Ok(())
}

fn create(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    let mut object = body_object(request)?;
    check_type(&mut object, target)?;
    apply_namespace(&mut object, target)?;
    let name = object_name(&object)?;
    object["metadata"]["name"] = json!(name);
    if let Some(fields) = object["metadata"].as_object_mut() {
        fields.remove("resourceVersion");
    }
    default_status(&mut object, target.type_());
    let key = target.key(&name);
    let created = shared.write(|store| {
        require_namespace(store, target)?;
        store.create(key, object, clock::unix_now())
    })?;
    object_reply(request, target, 201, &created)
}

/// `metadata.name`, or `generateName` plus a random suffix.
fn object_name(object: &Value) -> Result<String, ApiError> {
    let metadata = &object["metadata"];
    match (metadata["name"].as_str(), metadata["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => Ok(name.to_string()),
        (_, Some(prefix)) if !prefix.is_empty() => Ok(format!("{prefix}{}", &random_uid()[..5])),
        _ => Err(ApiError::new(422, "Invalid", "metadata.name: Required value: name or generateName is required")),
    }
}

fn require_namespace(store: &Store, target: &Target) -> Result<(), ApiError> {
    match &target.namespace {
        Some(ns) if !store.contains_namespace(ns) => Err(ApiError::not_found("namespaces", ns)),
        _ => Ok(()),
    }
}

/// What kube's defaulting would add to a new object for the demo tables to look right.
fn default_status(object: &mut Value, type_: &ResourceType) {
    let phase = match type_.kind {
        "Pod" => "Pending",
        "Namespace" => "Active",
        _ => return,
    };
    let Some(fields) = object.as_object_mut() else { return };
    if let Some(status) = fields.entry("status").or_insert_with(|| json!({})).as_object_mut() {
        status.entry("phase").or_insert_with(|| json!(phase));
    }
}

fn update(request: &Request, shared: &Shared, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let mut object = body_object(request)?;
    check_type(&mut object, target)?;
    apply_namespace(&mut object, target)?;
    match object["metadata"]["name"].as_str() {
        None | Some("") => object["metadata"]["name"] = json!(name),
        Some(given) if given == name => {}
        Some(given) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
    }
    let updated = shared.write(|store| store.replace(target.key(name), object))?;
    object_reply(request, target, 200, &updated)
}

fn patch(request: &Request, shared: &Shared, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let content_type = request.header("Content-Type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !matches!(media_type, "application/merge-patch+json" | "application/strategic-merge-patch+json") {
        return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})")));
    }
    let patch = body_object(request)?;
    let key = target.key(name);
    // Read, merge and replace under one lock so the patch cannot race another write.
    let patched = shared.write(|store| {
        let current = store.get(&key).ok_or_else(|| ApiError::not_found(&target.type_().qualified_name(), name))?;
        let mut object = current.clone();
        merge_patch(&mut object, &patch);
        check_type(&mut object, target)?;
        for field in ["name", "namespace"] {
            object["metadata"][field] = current["metadata"][field].clone();
        }
        store.replace(key.clone(), object)
    })?;
    object_reply(request, target, 200, &patched)
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target_fields) = target {
        for (key, value) in patch_fields {
            if value.is_null() {
                target_fields.remove(key);
            } else {
                merge_patch(target_fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

fn delete(request: &Request, shared: &Shared, target: &Target, name: &str) -> Result<Reply, ApiError> {
    let deleted = shared.write(|store| store.delete(&target.key(name)))?;
    object_reply(request, target, 200, &deleted)
}

/// DELETE on a collection: removes every object matching the selectors and answers the list
/// of deleted objects.
fn delete_collection(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    let repr = negotiate(request, target)?;
    let selector = selector(request)?;
    let (deleted, rv) = shared.write(|store| {
        let keys: Vec<Key> = store
            .list(target.resource, target.namespace.as_deref())
            .filter(|o| selector.matches(o))
            .map(|o| {
                let (namespace, name) = object_position(o);
                Key { resource: target.resource, namespace, name }
            })
            .collect();
        let deleted: Vec<Value> = keys.iter().filter_map(|key| store.delete(key).ok()).collect();
        (deleted, store.rv())
    });
    let items: Vec<&Value> = deleted.iter().collect();
    let body = repr.encode(&repr.list(target.type_(), &items, json!({ "resourceVersion": rv.to_string() })));
    Ok(Reply::Full(Response::new(200, &repr.content_type(true), body)))
}

/// Loads the seed objects, aged as `resources::seed` says, through the normal create path.
pub fn load_seed(shared: &Shared) -> Result<(), ApiError> {
    let now = clock::unix_now();
    for (plural, age, object) in resources::seed() {
        let resource = resources::find_by_plural(plural).ok_or_else(ApiError::not_found_path)?;
        let (namespace, name) = object_position(&object);
        let key = Key { resource, namespace, name };
        shared.write(|store| store.create(key, object, now - age))?;
    }
    Ok(())
}
