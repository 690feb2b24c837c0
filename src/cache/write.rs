//! What the cloud's answer to a write of one object means for the cached reads of that object
//! and the cached lists of its collections, for every identity: an object that is gone is gone
//! for all of them, and these changes only ever remove data or replace it by a newer state of
//! an object the identity already held, never reveal any.
//!
//! The write today is a DELETE (kube-apiserver's handlers/delete.go): a success (200, or 202
//! when deletion goes on in the background) answers a `Status` when the object is gone, or the
//! object itself. An object with `metadata.deletionTimestamp` may still exist, terminating
//! (grace period, finalizers): its answer is then its newest state. Answers are read in JSON
//! and in protobuf (kubelet's); a terminating object answered in protobuf changes nothing
//! here, its watch brings the new state.

use super::CachedResponse;
use super::json::{self, Span};
use super::key::{ObjectWrite, WriteMethod};
use super::list::{ListItem, ObjectMeta, newer};
use super::protobuf_list::{self, DeleteAnswer};
use super::store::{Change, Owner, Store, StoreError, StoredKey};
use super::wire::Wire;

/// The cloud's answer to an `ObjectWrite`.
#[derive(Debug)]
pub struct WriteAnswer {
    pub write: ObjectWrite,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What a DELETE's answer says became of the object.
enum Deleted {
    /// Removed, in the state of `resource_version` ("" for a `Status`, which carries none).
    Gone { resource_version: String },
    /// Still there, terminating; `object` (a span of the body) is its new state.
    Terminating { meta: ObjectMeta, object: Span },
}

/// The changes `answer`, received at `now` (unix seconds), calls for (none when it says
/// nothing certain).
pub fn changes<S: Store>(
    store: &mut S,
    answer: &WriteAnswer,
    now: u64,
) -> Result<Vec<Change>, StoreError> {
    match answer.write.method() {
        WriteMethod::Delete => match deleted(answer) {
            None => Ok(Vec::new()),
            Some(Deleted::Gone { resource_version }) => {
                gone(store, &answer.write, &resource_version)
            }
            Some(Deleted::Terminating { meta, object }) => {
                terminating(store, &answer.write, &meta, &answer.body[object], now)
            }
        },
    }
}

fn deleted(answer: &WriteAnswer) -> Option<Deleted> {
    // A failed DELETE changed nothing.
    if !(200..300).contains(&answer.status) {
        return None;
    }
    match Wire::of_content_type(&answer.content_type)? {
        Wire::Json => deleted_json(answer),
        Wire::Protobuf => deleted_protobuf(answer),
    }
}

fn deleted_json(answer: &WriteAnswer) -> Option<Deleted> {
    let body = answer.body.as_slice();
    let at = json::value_span(body, 0)?.start;
    if json::string_member(body, at, &["kind"]).as_deref() == Some("Status") {
        let success = json::string_member(body, at, &["status"]).as_deref() == Some("Success");
        return success.then(|| Deleted::Gone { resource_version: String::new() });
    }
    let meta = ObjectMeta::of(body, at)?;
    if !answer.write.is_about(&meta) {
        return None;
    }
    if DeletionMarks::of_json(body, at).still_exists() {
        let object = json::value_span(body, at)?;
        Some(Deleted::Terminating { meta, object })
    } else {
        Some(Deleted::Gone { resource_version: meta.resource_version })
    }
}

/// kubelet's DELETEs ask protobuf. An object still terminating is left to the watch or the
/// next read: its protobuf state is not spliced into cached lists and reads here.
fn deleted_protobuf(answer: &WriteAnswer) -> Option<Deleted> {
    match protobuf_list::delete_answer(&answer.body)? {
        DeleteAnswer::Status { success } => {
            success.then(|| Deleted::Gone { resource_version: String::new() })
        }
        DeleteAnswer::Object(object) => {
            let meta = protobuf_list::object_meta(object)?;
            let marks = protobuf_list::deletion_marks(object)?;
            let gone = answer.write.is_about(&meta) && !marks.still_exists();
            gone.then_some(Deleted::Gone { resource_version: meta.resource_version })
        }
    }
}

/// What a deleted object's answered metadata says of its deletion, in either encoding.
pub struct DeletionMarks {
    /// `deletionTimestamp` is set.
    pub marked: bool,
    /// `deletionGracePeriodSeconds` is 0.
    pub no_grace_left: bool,
    /// `finalizers` lists at least one.
    pub finalizers_left: bool,
}

impl DeletionMarks {
    /// The marks of the JSON object at `at`.
    fn of_json(body: &[u8], at: usize) -> DeletionMarks {
        let field = |name: &str| json::member_path(body, at, &["metadata", name]);
        DeletionMarks {
            marked: field("deletionTimestamp").is_some_and(|span| &body[span] != b"null"),
            no_grace_left: field("deletionGracePeriodSeconds")
                .is_some_and(|span| &body[span] == b"0"),
            finalizers_left: field("finalizers")
                .and_then(|span| json::array_elements(body, span.start))
                .is_some_and(|finalizers| !finalizers.is_empty()),
        }
    }

    /// Whether the object still exists. Being marked for deletion is not enough: the DELETE
    /// that ends a graceful deletion (kubelet's `gracePeriodSeconds=0` once a pod stopped)
    /// answers the object as it was removed, timestamp included. kube's registry removes an
    /// object once no grace period and no finalizer is left, so only an answer that says so
    /// (`deletionGracePeriodSeconds: 0`, no finalizers) counts as gone.
    fn still_exists(&self) -> bool {
        self.marked && (self.finalizers_left || !self.no_grace_left)
    }
}

/// Every stored key that may concern the object, any identity.
fn stored_keys<S: Store>(store: &mut S, write: &ObjectWrite) -> Result<Vec<StoredKey>, StoreError> {
    let mut keys = Vec::new();
    for needle in write.key_needles() {
        keys.extend(store.keys_containing(&needle)?);
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Removes the object's cached reads (any representation, query or subresource) and its items
/// in lists of its collections (any selector: a gone object matches none), except where the
/// cache holds a state newer than the removed one (the object was created again since).
fn gone<S: Store>(
    store: &mut S,
    write: &ObjectWrite,
    version: &str,
) -> Result<Vec<Change>, StoreError> {
    let item_key = write.item_key();
    let mut changes = Vec::new();
    for key in stored_keys(store, write)? {
        let change = match key {
            StoredKey::Entry(key)
                if write.reads_object(&key)
                    && cached_unless_newer(store, &key, version)?.is_some() =>
            {
                Change::RemoveEntry { key }
            }
            StoredKey::List(scope)
                if write.lists_collection(&scope)
                    && holds_item_not_newer(store, &scope, &item_key, version)? =>
            {
                Change::RemoveItem { scope, key: item_key.clone() }
            }
            _ => continue,
        };
        changes.push(change);
    }
    Ok(changes)
}

/// Replaces the object's cached plain GETs and its items in lists of its collections by its
/// terminating state, where the cached one is not newer (the rule of a MODIFIED watch event).
/// Only what is cached is replaced: a list that lacks the object is left as it was listed.
fn terminating<S: Store>(
    store: &mut S,
    write: &ObjectWrite,
    meta: &ObjectMeta,
    object: &[u8],
    now: u64,
) -> Result<Vec<Change>, StoreError> {
    let version = meta.resource_version.as_str();
    let item = ListItem {
        key: meta.item_key(),
        resource_version: meta.resource_version.clone(),
        encoded: object.to_vec(),
    };
    let mut changes = Vec::new();
    for key in stored_keys(store, write)? {
        let change = match key {
            StoredKey::Entry(key) => {
                let Some(identity) = write.plain_get_identity(&key).map(str::to_string) else {
                    continue;
                };
                let Some(cached) = cached_unless_newer(store, &key, version)? else {
                    continue;
                };
                let owner = Owner { identity, resource: write.resource_label() };
                Change::PutEntry { key, owner, response: with_object(cached, object, now) }
            }
            // The item is JSON: a protobuf list keeps its older state until its watch or
            // the next read brings the new one.
            StoredKey::List(scope)
                if write.lists_collection(&scope)
                    && list_wire(store, &scope)? == Some(Wire::Json)
                    && holds_item_not_newer(store, &scope, &item.key, version)? =>
            {
                Change::PutItem { scope, item: item.clone() }
            }
            StoredKey::List(_) => continue,
        };
        changes.push(change);
    }
    Ok(changes)
}

/// The cached answer at `key`, unless it is an object newer than `version` (then a change
/// of an older state must not touch it). Also used by watch events.
pub fn cached_unless_newer<S: Store>(
    store: &mut S,
    key: &str,
    version: &str,
) -> Result<Option<CachedResponse>, StoreError> {
    let Some(cached) = store.entry(key, false)? else {
        return Ok(None);
    };
    let cached_version = Wire::of_content_type(&cached.content_type)
        .and_then(|wire| wire.document_meta(&cached.body))
        .map(|meta| meta.resource_version);
    if cached_version.is_some_and(|rv| newer(&rv, version) == Some(true)) {
        return Ok(None);
    }
    Ok(Some(cached))
}

/// A cached GET answer carrying `object` instead, framed like the cached one (kube ends its
/// bodies with a newline; watch events and list items have none), current as of
/// `stored_at`. Also used by watch events.
pub fn with_object(cached: CachedResponse, object: &[u8], stored_at: u64) -> CachedResponse {
    let mut body = object.to_vec();
    if cached.body.ends_with(b"\n") {
        body.push(b'\n');
    }
    CachedResponse { status: cached.status, content_type: cached.content_type, body, stored_at }
}

/// The encoding the list `scope` is stored in.
fn list_wire<S: Store>(store: &mut S, scope: &str) -> Result<Option<Wire>, StoreError> {
    let head = store.list_head(scope, false)?;
    Ok(head.and_then(|stored| Wire::of_content_type(&stored.head.content_type)))
}

/// Whether the list `scope` holds the item `key` in a state not newer than `version`.
fn holds_item_not_newer<S: Store>(
    store: &mut S,
    scope: &str,
    key: &str,
    version: &str,
) -> Result<bool, StoreError> {
    let held = store.item_version(scope, key)?;
    Ok(held.is_some_and(|rv| newer(&rv, version) != Some(true)))
}
