//! Watch streams: splitting a watch body into events (JSON lines or protobuf frames,
//! `wire`), applying each event to the cached list of its scope and to the cached GET of
//! its object, and the offline replay (synthetic ADDED events, bookmarks, the 410 Expired
//! error) for a watch started from cache, in the encoding the client asked for.

use std::collections::HashSet;

use super::Reply;
use super::key::{ListScope, WatchRequest};
use super::list::{ListHead, ListItem, ObjectMeta, newer};
use super::store::{Change, Owner, Store, StoreError, StoredHead, StoredKey};
use super::wire::{Event, EventType, NextEvent, Wire};
use super::write::{cached_unless_newer, with_object};

/// A partial event longer than this is not buffered further: the stream stops updating.
const MAX_EVENT_BYTES: usize = 64 << 20;

/// One watch stream being teed into the cache.
pub struct WatchStream {
    wire: Wire,
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
    /// None for a scope whose lists the cache does not decompose.
    pub fn new(request: &WatchRequest) -> Option<WatchStream> {
        Some(WatchStream {
            wire: request.scope.wire()?,
            scope_key: request.scope.store_key(),
            scope: request.scope.clone(),
            pending: Vec::new(),
            initial_keys: request.send_initial_events.then(HashSet::new),
            replaying_current_state: starts_from_current_state(request),
            stopped: false,
        })
    }

    /// Feeds de-chunked body bytes (any boundaries) and applies every completed event; `now`
    /// (unix seconds) is when they arrived.
    pub fn feed<S: Store>(
        &mut self,
        store: &mut S,
        bytes: &[u8],
        now: u64,
    ) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            let used = self.apply_events(store, bytes, now)?;
            self.keep_partial(&bytes[used..]);
        } else {
            let mut stream = std::mem::take(&mut self.pending);
            stream.extend_from_slice(bytes);
            let used = self.apply_events(store, &stream, now)?;
            stream.drain(..used);
            self.keep_partial(&stream);
        }
        Ok(())
    }

    /// Applies the whole events at the start of `stream`; returns the bytes they took.
    fn apply_events<S: Store>(
        &mut self,
        store: &mut S,
        stream: &[u8],
        now: u64,
    ) -> Result<usize, StoreError> {
        let mut used = 0;
        while !self.stopped {
            let NextEvent::Whole { payload, next } = self.wire.next_event(&stream[used..]) else {
                break;
            };
            let event = &stream[used + payload.start..used + payload.end];
            used += next;
            if let Err(error) = self.apply_event(store, event, now) {
                self.stop("an event could not be stored");
                return Err(error);
            }
        }
        Ok(used)
    }

    /// Holds the start of an incomplete event, unless it is (or announces itself) too large.
    fn keep_partial(&mut self, partial: &[u8]) {
        if self.stopped {
            return;
        }
        let too_large = match self.wire.next_event(partial) {
            NextEvent::Partial { at_least } => at_least > MAX_EVENT_BYTES,
            NextEvent::Whole { .. } => false,
        };
        if too_large {
            self.stop("an event exceeds the size limit");
        } else {
            self.pending.clear();
            self.pending.extend_from_slice(partial);
        }
    }

    /// Marks the stream as no longer applied (its events after a gap would be wrong).
    pub fn stop(&mut self, reason: &str) {
        if !self.stopped {
            log::warn!("cache: no longer updating {} from its watch: {reason}", self.scope.path());
        }
        self.stopped = true;
        self.pending = Vec::new();
    }

    fn apply_event<S: Store>(
        &mut self,
        store: &mut S,
        payload: &[u8],
        now: u64,
    ) -> Result<(), StoreError> {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let Some(event) = self.wire.event(payload) else {
            self.stop("a watch event could not be read");
            return Ok(());
        };
        let changes = match event.kind {
            EventType::Other => return Ok(()),
            EventType::Bookmark => self.bookmark_changes(store, event.item, now)?,
            _ => {
                let Some(meta) = self.wire.item_meta(event.item) else {
                    self.stop("a watch event has no object name");
                    return Ok(());
                };
                if let (Some(keys), EventType::Added) = (&mut self.initial_keys, event.kind) {
                    keys.insert(meta.item_key());
                }
                let event = ObjectEvent { event: &event, meta: &meta, now };
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
        event: &ObjectEvent<'_>,
    ) -> Result<Vec<Change>, StoreError> {
        let ObjectEvent { event, meta, now } = *event;
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
        let item_change = match event.kind {
            EventType::Deleted => Change::RemoveItem { scope: scope.clone(), key },
            _ => Change::PutItem {
                scope: scope.clone(),
                item: ListItem {
                    key,
                    resource_version: meta.resource_version.clone(),
                    encoded: event.item.to_vec(),
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
        event: &ObjectEvent<'_>,
    ) -> Result<Option<Change>, StoreError> {
        let ObjectEvent { event, meta, now } = *event;
        let key = self.scope.object_key(&meta.namespace, &meta.name);
        let Some(cached) = cached_unless_newer(store, &key, &meta.resource_version)? else {
            return Ok(None);
        };
        Ok(match event.kind {
            // In a filtered watch, DELETED may only mean "stopped matching the selector".
            EventType::Deleted if self.scope.has_selectors() => None,
            EventType::Deleted => Some(Change::RemoveEntry { key }),
            _ => {
                let owner = Owner {
                    identity: self.scope.identity().to_string(),
                    resource: self.scope.resource_label(),
                };
                let response = with_object(cached, event.document, now);
                Some(Change::PutEntry { key, owner, response })
            }
        })
    }

    /// A bookmark not older than the list says nothing changed in between: the list is
    /// current as of it (a quiet scope's list stays fresh through bookmarks alone).
    fn bookmark_changes<S: Store>(
        &mut self,
        store: &mut S,
        item: &[u8],
        now: u64,
    ) -> Result<Vec<Change>, StoreError> {
        self.replaying_current_state = false;
        let (Some(version), ends_initial) = self.wire.bookmark(item) else {
            return Ok(Vec::new());
        };
        let Some(StoredHead { head, .. }) = store.list_head(&self.scope_key, false)? else {
            return Ok(Vec::new());
        };
        let mut changes = Vec::new();
        if let (Some(seen), true) = (self.initial_keys.take(), ends_initial) {
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

/// One event about an object, as it arrived.
#[derive(Clone, Copy)]
struct ObjectEvent<'a> {
    event: &'a Event<'a>,
    meta: &'a ObjectMeta,
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

/// Table and metadata watches have no decomposed list to replay from. One that resumes
/// from a version the client already holds (`kubectl get -w` watches from its list's
/// version) is held open without events: nothing changes while offline. One that asks for
/// the current state cannot be answered.
fn hold_open_without_events(request: &WatchRequest) -> Reply {
    if starts_from_current_state(request) {
        return Reply::Miss;
    }
    Reply::WatchReplay {
        wire: Wire::Json,
        initial_events: Vec::new(),
        list_resource_version: request.resource_version.clone().unwrap_or_default(),
        bookmark_event: Vec::new(),
    }
}

/// Answers an offline watch start from the cached list of its scope, in the scope's encoding.
pub fn replay<S: Store>(store: &mut S, request: &WatchRequest) -> Result<Reply, StoreError> {
    let Some(wire) = request.scope.wire() else {
        return Ok(hold_open_without_events(request));
    };
    let scope_key = request.scope.store_key();
    let Some(StoredHead { head, .. }) = store.list_head(&scope_key, true)? else {
        return Ok(Reply::Miss);
    };
    let requested = request.resource_version.as_deref().unwrap_or_default();
    let from_current_state = starts_from_current_state(request);
    let cached = head.resource_version.as_str();
    if !from_current_state && requested != cached && newer(requested, cached) != Some(true) {
        return Ok(Reply::WatchExpired { wire });
    }
    let item_type = Wire::item_type(&head);
    let mut initial_events = Vec::new();
    if from_current_state {
        for item in store.list_items(&scope_key)? {
            initial_events.extend(wire.added_event(&item_type, &item.encoded));
        }
    }
    if request.send_initial_events {
        initial_events.extend(wire.bookmark_event(&item_type, cached, true));
    }
    Ok(Reply::WatchReplay {
        wire,
        initial_events,
        list_resource_version: cached.to_string(),
        bookmark_event: wire.bookmark_event(&item_type, cached, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::{Classified, classify};
    use crate::cache::memory::MemoryStore;

    /// A frame announcing 4 GiB stops the stream at its prefix: nothing is buffered for it.
    #[test]
    fn an_oversized_frame_stops_the_stream_at_once() {
        let accept = Some("application/vnd.kubernetes.protobuf");
        let Classified::Watch(request) = classify("u", "GET", "/api/v1/pods?watch=1", accept)
        else {
            panic!("a watch");
        };
        let mut stream = WatchStream::new(&request).expect("a protobuf stream");
        let mut store = MemoryStore::new();
        stream.feed(&mut store, &0xFFFF_FFF0u32.to_be_bytes()[..3], 0).expect("feed");
        assert!(!stream.stopped, "three bytes announce nothing yet");
        stream.feed(&mut store, &[0xF0, 0x0a, 0x0a], 0).expect("feed");
        assert!(stream.stopped);
        assert!(stream.pending.is_empty());
    }
}
