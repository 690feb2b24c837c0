//! Watch streams: newline-splitting a JSON watch body into events, applying each event to the
//! cached list of its scope and to the cached GET of its object, and the offline replay
//! (synthetic ADDED events, bookmarks, the 410 Expired error) for a watch started from cache.

use std::collections::HashSet;

use super::key::{ListScope, WatchRequest};
use super::list::{ListHead, ListItem, ObjectMeta, newer};
use super::store::{Change, Owner, Store, StoreError, StoredHead, StoredKey};
use super::write::{cached_unless_newer, with_object};
use super::{Reply, json};

/// A partial event longer than this is not buffered further: the stream stops updating.
const MAX_EVENT_BYTES: usize = 64 << 20;

/// The annotation kube puts on the BOOKMARK that ends `sendInitialEvents` replays.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Other,
}

/// One watch stream being teed into the cache.
pub struct WatchStream {
    scope: ListScope,
    scope_key: String,
    pending: Vec<u8>,
    /// For `sendInitialEvents=true`: the keys replayed before the end bookmark; objects of the
    /// cached list missing from them were deleted while nobody watched.
    initial_keys: Option<HashSet<String>>,
    /// The stream starts with the current state (no version, "0", or sendInitialEvents): those
    /// events come in key order, not version order, so until the first BOOKMARK they update
    /// items by their own versions only and do not move the list's version.
    replaying_current_state: bool,
    /// Set when an event could not be applied: later ones would leave a list with a hole.
    stopped: bool,
}

impl WatchStream {
    pub fn new(request: &WatchRequest) -> WatchStream {
        WatchStream {
            scope_key: request.scope.store_key(),
            scope: request.scope.clone(),
            pending: Vec::new(),
            initial_keys: request.send_initial_events.then(HashSet::new),
            replaying_current_state: starts_from_current_state(request),
            stopped: false,
        }
    }

    /// Feeds de-chunked body bytes (any boundaries) and applies every completed event; `now`
    /// (unix seconds) is when they arrived.
    pub fn feed<S: Store>(
        &mut self,
        store: &mut S,
        mut bytes: &[u8],
        now: u64,
    ) -> Result<(), StoreError> {
        while !self.stopped {
            let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
                break;
            };
            let (head, tail) = bytes.split_at(newline);
            bytes = &tail[1..];
            let result = if self.pending.is_empty() {
                self.apply_line(store, head, now)
            } else {
                self.pending.extend_from_slice(head);
                let line = std::mem::take(&mut self.pending);
                self.apply_line(store, &line, now)
            };
            if let Err(error) = result {
                self.stop("an event could not be stored");
                return Err(error);
            }
        }
        if !self.stopped {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() > MAX_EVENT_BYTES {
                self.stop("an event exceeds the size limit");
            }
        }
        Ok(())
    }

    /// Marks the stream as no longer applied (its events after a gap would be wrong).
    pub fn stop(&mut self, reason: &str) {
        if !self.stopped {
            log::warn!("cache: no longer updating {} from its watch: {reason}", self.scope.path());
        }
        self.stopped = true;
        self.pending = Vec::new();
    }

    fn apply_line<S: Store>(
        &mut self,
        store: &mut S,
        line: &[u8],
        now: u64,
    ) -> Result<(), StoreError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let event_type = json::string_member(line, 0, &["type"]);
        let object = json::member(line, 0, "object");
        let (Some(event_type), Some(object)) = (event_type, object) else {
            self.stop("a watch event is not JSON");
            return Ok(());
        };
        let kind = match event_type.as_str() {
            "ADDED" => EventType::Added,
            "MODIFIED" => EventType::Modified,
            "DELETED" => EventType::Deleted,
            "BOOKMARK" => EventType::Bookmark,
            _ => EventType::Other,
        };
        let changes = match kind {
            EventType::Other => return Ok(()),
            EventType::Bookmark => self.bookmark_changes(store, &line[object], now)?,
            _ => {
                let Some(meta) = ObjectMeta::of(line, object.start) else {
                    self.stop("a watch event has no object name");
                    return Ok(());
                };
                if let (Some(keys), EventType::Added) = (&mut self.initial_keys, &kind) {
                    keys.insert(meta.item_key());
                }
                let event = Event { kind: &kind, meta: &meta, object: &line[object], now };
                let mut changes = self.list_changes(store, &event)?;
                changes.extend(self.object_changes(store, &event)?);
                changes
            }
        };
        if changes.is_empty() { Ok(()) } else { store.apply(changes) }
    }

    /// The list item upsert/removal for one object event, when the list does not already
    /// reflect it (its version is not older than the event's). A list whose version moves
    /// forward with the stream is current as of the event.
    fn list_changes<S: Store>(
        &self,
        store: &mut S,
        event: &Event<'_>,
    ) -> Result<Vec<Change>, StoreError> {
        let Event { kind, meta, object, now } = *event;
        let Some(StoredHead { head, .. }) = store.list_head(&self.scope_key, false)? else {
            return Ok(Vec::new());
        };
        let list_has_it = !self.replaying_current_state
            && (head.resource_version == meta.resource_version
                || newer(&head.resource_version, &meta.resource_version) == Some(true));
        let key = meta.item_key();
        let item_version = store.item_version(&self.scope_key, &key)?;
        let item_is_newer =
            item_version.is_some_and(|rv| newer(&rv, &meta.resource_version) == Some(true));
        if list_has_it || item_is_newer {
            return Ok(Vec::new());
        }
        let scope = self.scope_key.clone();
        let item_change = match kind {
            EventType::Deleted => Change::RemoveItem { scope: scope.clone(), key },
            _ => Change::PutItem {
                scope: scope.clone(),
                item: ListItem {
                    key,
                    resource_version: meta.resource_version.clone(),
                    json: object.to_vec(),
                },
            },
        };
        if self.replaying_current_state {
            return Ok(vec![item_change]);
        }
        let version = Change::SetListVersion {
            scope: scope.clone(),
            resource_version: meta.resource_version.clone(),
        };
        Ok(vec![item_change, version, refresh_list(scope, now)])
    }

    /// The change to the cached GET of the object, if one is cached and not newer.
    fn object_changes<S: Store>(
        &self,
        store: &mut S,
        event: &Event<'_>,
    ) -> Result<Option<Change>, StoreError> {
        let Event { kind, meta, object, now } = *event;
        let key = self.scope.object_key(&meta.namespace, &meta.name);
        let Some(cached) = cached_unless_newer(store, &key, &meta.resource_version)? else {
            return Ok(None);
        };
        Ok(match kind {
            // In a filtered watch, DELETED may only mean "stopped matching the selector".
            EventType::Deleted if self.scope.has_selectors() => None,
            EventType::Deleted => Some(Change::RemoveEntry { key }),
            _ => {
                let owner = Owner {
                    identity: self.scope.identity().to_string(),
                    resource: self.scope.resource_label(),
                };
                let response = with_object(cached, object, now);
                Some(Change::PutEntry { key, owner, response })
            }
        })
    }

    /// A bookmark not older than the list says nothing changed in between: the list is
    /// current as of it (a quiet scope's list stays fresh through bookmarks alone).
    fn bookmark_changes<S: Store>(
        &mut self,
        store: &mut S,
        object: &[u8],
        now: u64,
    ) -> Result<Vec<Change>, StoreError> {
        self.replaying_current_state = false;
        let Some(version) = json::string_member(object, 0, &["metadata", "resourceVersion"]) else {
            return Ok(Vec::new());
        };
        let Some(StoredHead { head, .. }) = store.list_head(&self.scope_key, false)? else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::new();
        let ends_initial =
            json::string_member(object, 0, &["metadata", "annotations", INITIAL_EVENTS_END]);
        if let (Some(seen), Some("true")) = (self.initial_keys.take(), ends_initial.as_deref()) {
            changes.extend(self.prune_unseen(store, &head, &version, &seen)?);
        }
        if newer(&head.resource_version, &version) == Some(true) {
            return Ok(changes);
        }
        if head.resource_version != version {
            changes.push(Change::SetListVersion {
                scope: self.scope_key.clone(),
                resource_version: version,
            });
        }
        changes.push(refresh_list(self.scope_key.clone(), now));
        Ok(changes)
    }

    /// Removes list items the initial replay did not mention, when that replay is at least as
    /// new as the cached list (else it cannot know about the list's newer objects).
    fn prune_unseen<S: Store>(
        &self,
        store: &mut S,
        head: &ListHead,
        version: &str,
        seen: &HashSet<String>,
    ) -> Result<Vec<Change>, StoreError> {
        if newer(&head.resource_version, version) != Some(false) && head.resource_version != version
        {
            return Ok(Vec::new());
        }
        let items = store.list_items(&self.scope_key)?;
        Ok(items
            .into_iter()
            .filter(|item| !seen.contains(&item.key))
            .map(|item| Change::RemoveItem { scope: self.scope_key.clone(), key: item.key })
            .collect())
    }
}

/// One object event of a stream, as it arrived.
#[derive(Clone, Copy)]
struct Event<'a> {
    kind: &'a EventType,
    meta: &'a ObjectMeta,
    object: &'a [u8],
    /// Unix seconds.
    now: u64,
}

fn refresh_list(scope: String, now: u64) -> Change {
    Change::Refresh { key: StoredKey::List(scope), stored_at: now }
}

/// Whether a watch begins with synthetic ADDED events for the current state.
fn starts_from_current_state(request: &WatchRequest) -> bool {
    let version = request.resource_version.as_deref().unwrap_or_default();
    version.is_empty() || version == "0" || request.send_initial_events
}

/// Table, metadata and protobuf watches have no decomposed list to replay from. One that
/// resumes from a version the client already holds (`kubectl get -w` watches from its
/// list's version) is held open without events: nothing changes while offline. One that
/// asks for the current state cannot be answered.
fn hold_open_without_events(request: &WatchRequest) -> Reply {
    if starts_from_current_state(request) {
        return Reply::Miss;
    }
    Reply::WatchReplay {
        initial_events: Vec::new(),
        list_resource_version: request.resource_version.clone().unwrap_or_default(),
        bookmark_event: Vec::new(),
    }
}

/// Answers an offline watch start from the cached list of its scope.
pub fn replay<S: Store>(store: &mut S, request: &WatchRequest) -> Result<Reply, StoreError> {
    if !request.scope.is_json() {
        return Ok(hold_open_without_events(request));
    }
    let scope_key = request.scope.store_key();
    let Some(StoredHead { head, .. }) = store.list_head(&scope_key, true)? else {
        return Ok(Reply::Miss);
    };
    let requested = request.resource_version.as_deref().unwrap_or_default();
    let from_current_state = starts_from_current_state(request);
    let cached = head.resource_version.as_str();
    if !from_current_state && requested != cached && newer(requested, cached) != Some(true) {
        return Ok(Reply::WatchExpired);
    }
    let (kind, api_version) = item_kind(&head);
    let mut initial_events = Vec::new();
    if from_current_state {
        for item in store.list_items(&scope_key)? {
            initial_events.extend_from_slice(b"{\"type\":\"ADDED\",\"object\":");
            initial_events.extend_from_slice(&item.json);
            initial_events.extend_from_slice(b"}\n");
        }
    }
    if request.send_initial_events {
        initial_events.extend(bookmark_event(&kind, &api_version, cached, true));
    }
    Ok(Reply::WatchReplay {
        initial_events,
        list_resource_version: cached.to_string(),
        bookmark_event: bookmark_event(&kind, &api_version, cached, false),
    })
}

/// The item kind and apiVersion of a list ("PodList" holds "Pod").
fn item_kind(head: &ListHead) -> (String, String) {
    let list_kind = json::string_member(&head.envelope, 0, &["kind"]).unwrap_or_default();
    let kind = list_kind.strip_suffix("List").unwrap_or(&list_kind).to_string();
    (kind, json::string_member(&head.envelope, 0, &["apiVersion"]).unwrap_or_default())
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// A BOOKMARK event line (with its newline) at `resource_version`.
pub fn bookmark_event(
    kind: &str,
    api_version: &str,
    resource_version: &str,
    ends_initial_events: bool,
) -> Vec<u8> {
    let annotations = if ends_initial_events {
        format!(",\"annotations\":{{\"{INITIAL_EVENTS_END}\":\"true\"}}")
    } else {
        String::new()
    };
    format!(
        "{{\"type\":\"BOOKMARK\",\"object\":{{\"kind\":{},\"apiVersion\":{},\"metadata\":{{\"resourceVersion\":{}{annotations}}}}}}}\n",
        quoted(kind),
        quoted(api_version),
        quoted(resource_version)
    )
    .into_bytes()
}

/// The ERROR event line kube-apiserver sends when a watch starts from a version it no longer
/// has: clients re-list on it.
pub fn expired_event(requested_resource_version: &str) -> Vec<u8> {
    let message = quoted(&format!("too old resource version: {requested_resource_version}"));
    format!(
        "{{\"type\":\"ERROR\",\"object\":{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":{message},\"reason\":\"Expired\",\"code\":410}}}}\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_events_are_valid_json_lines() {
        let bookmark = bookmark_event("Pod", "v1", "42", true);
        assert!(bookmark.ends_with(b"\n"));
        let value: serde_json::Value = serde_json::from_slice(&bookmark).expect("bookmark json");
        assert_eq!(value["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(value["object"]["metadata"]["annotations"][INITIAL_EVENTS_END], "true");
        let expired: serde_json::Value =
            serde_json::from_slice(&expired_event("7")).expect("error json");
        assert_eq!(expired["type"], "ERROR");
        assert_eq!(expired["object"]["code"], 410);
        assert_eq!(expired["object"]["reason"], "Expired");
    }
}
