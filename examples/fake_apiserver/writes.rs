//! Writes through the resource API: POST (create, `generateName`), PUT (replace with
//! optimistic concurrency), PATCH (merge and strategic-merge patches, both applied as an
//! RFC 7386 JSON merge patch), DELETE of one object or a collection, and the seed objects.
//! Create and update bodies may be protobuf (`protobuf.rs`), as kubelet sends them.

use serde_json::{Map, Value, json};

use crate::api::{Reply, Target, negotiate, object_position, object_reply, selector};
use crate::clock;
use crate::http::{Request, Response};
use crate::protobuf::{self, Kind};
use crate::repr::PROTOBUF;
use crate::resources::{self, ResourceType};
use crate::status::ApiError;
use crate::store::{Key, Shared, Store, random_uid};

/// The request body as a JSON object: JSON, or protobuf (`Content-Type:
/// application/vnd.kubernetes.protobuf`) for a kind `protobuf.rs` maps — a custom resource
/// has no protobuf form, so kube answers 415 for one.
fn body_object(request: &Request, target: &Target) -> Result<Value, ApiError> {
    let content_type = request.header("Content-Type").unwrap_or_default();
    if content_type.split(';').next().unwrap_or_default().trim() == PROTOBUF {
        let kind = Kind::of(target.type_().kind).ok_or_else(|| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {content_type}"),
            )
        })?;
        return protobuf::decode(kind, &request.body)
            .map_err(|e| ApiError::bad_request(format!("unable to decode the request body: {e}")));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(value) if value.is_object() => Ok(value),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("unable to decode the request body: {e}"))),
    }
}

/// Checks kind/apiVersion against the target and fills them if absent; `metadata` must be
/// an object (an empty one is added if missing), so later field writes cannot fail.
fn check_type(object: &mut Value, target: &Target) -> Result<(), ApiError> {
    let type_ = target.type_();
    for (field, expected) in [("kind", type_.kind.to_string()), ("apiVersion", type_.api_version())]
    {
        match &object[field] {
            Value::Null => object[field] = json!(expected),
            Value::String(actual) if *actual == expected => {}
            actual => {
                return Err(ApiError::bad_request(format!(
                    "the {field} {actual} does not match the expected {expected:?}"
                )));
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
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                ));
            }
        },
    }
    Ok(())
}

pub fn create(request: &Request, shared: &Shared, target: &Target) -> Result<Reply, ApiError> {
    let mut object = body_object(request, target)?;
    check_type(&mut object, target)?;
    apply_namespace(&mut object, target)?;
    let name = object_name(&object)?;
    object["metadata"]["name"] = json!(name);
    default_status(&mut object, target.type_());
    let key = target.key(&name);
    let created = shared.write(|store| store_new(store, target, key, object))?;
    object_reply(request, target, 201, &created)
}

/// Stores `object` as a new object in an existing namespace; its resourceVersion is the
/// store's to give.
fn store_new(
    store: &mut Store,
    target: &Target,
    key: Key,
    mut object: Value,
) -> Result<Value, ApiError> {
    require_namespace(store, target)?;
    if let Some(fields) = object["metadata"].as_object_mut() {
        fields.remove("resourceVersion");
    }
    store.create(key, object, clock::unix_now())
}

/// `metadata.name`, or `generateName` plus a random suffix.
fn object_name(object: &Value) -> Result<String, ApiError> {
    let metadata = &object["metadata"];
    match (metadata["name"].as_str(), metadata["generateName"].as_str()) {
        (Some(name), _) if !name.is_empty() => Ok(name.to_string()),
        (_, Some(prefix)) if !prefix.is_empty() => Ok(format!("{prefix}{}", &random_uid()[..5])),
        _ => Err(ApiError::new(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
        )),
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
    let Some(fields) = object.as_object_mut() else {
        return;
    };
    if let Some(status) = fields.entry("status").or_insert_with(|| json!({})).as_object_mut() {
        status.entry("phase").or_insert_with(|| json!(phase));
    }
}

pub fn update(
    request: &Request,
    shared: &Shared,
    target: &Target,
    name: &str,
) -> Result<Reply, ApiError> {
    let mut object = body_object(request, target)?;
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
    let type_ = target.type_();
    let key = target.key(name);
    // In kube's order: a missing object may be created; an existing one may have to be
    // named by version.
    let (status, written) = shared.write(|store| {
        if store.get(&key).is_none() && type_.create_on_update {
            return Ok((201, store_new(store, target, key, object)?));
        }
        let unversioned = object["metadata"]["resourceVersion"].as_str().is_none_or(str::is_empty);
        if unversioned && type_.update_needs_version {
            return Err(ApiError::new(
                422,
                "Invalid",
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
            ));
        }
        Ok((200, store.replace(key, object)?))
    })?;
    object_reply(request, target, status, &written)
}

pub fn patch(
    request: &Request,
    shared: &Shared,
    target: &Target,
    name: &str,
) -> Result<Reply, ApiError> {
    let content_type = request.header("Content-Type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !matches!(
        media_type,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    ) {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: \
                 application/merge-patch+json, application/strategic-merge-patch+json \
                 (got {content_type:?})"
            ),
        ));
    }
    let patch = body_object(request, target)?;
    let key = target.key(name);
    // Read, merge and replace under one lock so the patch cannot race another write.
    let patched = shared.write(|store| {
        let current = store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(&target.type_().qualified_name(), name))?;
        let mut object = current.clone();
        merge_patch(&mut object, &patch);
        check_type(&mut object, target)?;
        apply_namespace(&mut object, target)?;
        object["metadata"]["name"] = json!(name);
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

pub fn delete(
    request: &Request,
    shared: &Shared,
    target: &Target,
    name: &str,
) -> Result<Reply, ApiError> {
    let deleted = shared.write(|store| store.delete(&target.key(name)))?;
    object_reply(request, target, 200, &deleted)
}

/// DELETE on a collection: removes every object matching the selectors and answers the list
/// of deleted objects.
pub fn delete_collection(
    request: &Request,
    shared: &Shared,
    target: &Target,
) -> Result<Reply, ApiError> {
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
    let body = repr.encode(&repr.list(
        target.type_(),
        &items,
        json!({ "resourceVersion": rv.to_string() }),
    ));
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
