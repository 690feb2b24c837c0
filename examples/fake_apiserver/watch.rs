//! WATCH streams: synthetic ADDED events for the current state (or a replay from a
//! resourceVersion), then live events, BOOKMARKs and a 410 Expired ERROR when the requested
//! history is gone. One event per chunk, flushed at once; JSON lines, or for protobuf
//! clients (`;stream=watch`) frames: a 4-byte big-endian length, then a bare `WatchEvent`
//! whose object is enveloped as in a GET (`protobuf.rs`).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{Conn, json_bytes};
use crate::protobuf;
use crate::repr::{PROTOBUF, Repr};
use crate::resources::{self, ResourceId, ResourceType};
use crate::selectors::Selector;
use crate::status::ApiError;
use crate::store::{Event, EventType, Shared};

/// The longest a watcher sleeps without checking its deadline and its client.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(1);

pub struct WatchSpec {
    pub resource: ResourceId,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// `None` (resourceVersion absent or "0"): start with the current state as ADDED events.
    pub start_after: Option<u64>,
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: mark the end of the initial state with a BOOKMARK.
    pub initial_events_end: bool,
    pub timeout: Duration,
    pub repr: Repr,
}

impl WatchSpec {
    fn in_scope(&self, object: &Value) -> bool {
        let namespace_matches =
            self.namespace.as_deref().is_none_or(|ns| object["metadata"]["namespace"] == ns);
        namespace_matches && self.selector.matches(object)
    }

    /// The event as this watcher sees it: objects entering or leaving the selector are
    /// reported as ADDED or DELETED (the old state at the event's resourceVersion), as kube's
    /// watch cache does.
    fn translate(&self, event: &Event) -> Option<(EventType, Value)> {
        if event.resource != self.resource {
            return None;
        }
        let now = self.in_scope(&event.object);
        match (event.kind, event.previous.as_ref().map(|p| self.in_scope(p)), now) {
            (EventType::Modified, Some(false), true) => {
                Some((EventType::Added, event.object.clone()))
            }
            (EventType::Modified, Some(true), false) => event.previous.as_ref().map(|previous| {
                let mut object = previous.clone();
                object["metadata"]["resourceVersion"] = json!(event.rv.to_string());
                (EventType::Deleted, object)
            }),
            (kind, _, true) => Some((kind, event.object.clone())),
            _ => None,
        }
    }
}

struct Watcher<'c> {
    conn: &'c mut Conn,
    resource: &'static ResourceType,
    repr: Repr,
    table_headers_sent: bool,
}

impl Watcher<'_> {
    fn send(&mut self, kind: &str, object: Value) -> io::Result<()> {
        let frame = match self.repr {
            Repr::Protobuf(_) => {
                let event = protobuf::watch_event(kind, self.repr.encode(&object));
                let length = u32::try_from(event.len()).unwrap_or(u32::MAX).to_be_bytes();
                [&length[..], &event].concat()
            }
            _ => [json_bytes(&json!({ "type": kind, "object": object })), b"\n".to_vec()].concat(),
        };
        self.conn.write_chunk(&frame)
    }

    fn send_object(&mut self, kind: EventType, object: &Value) -> io::Result<()> {
        let with_headers = !self.table_headers_sent;
        self.table_headers_sent = true;
        let rendered = self.repr.object(self.resource, object, with_headers);
        self.send(kind.as_str(), rendered)
    }

    fn send_bookmark(&mut self, rv: u64, initial_events_end: bool) -> io::Result<()> {
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": metadata,
        });
        self.send("BOOKMARK", object)
    }
}

/// Streams the watch until its timeout (then ends the body cleanly), an Expired history
/// (after the ERROR event), or the client going away (an `Err`, or `Ok` when noticed idle).
pub fn serve(
    conn: &mut Conn,
    shared: &Shared,
    spec: &WatchSpec,
    bookmark_interval: Duration,
) -> io::Result<()> {
    let content_type = if matches!(spec.repr, Repr::Protobuf(_)) {
        format!("{PROTOBUF};stream=watch")
    } else {
        "application/json".into()
    };
    conn.start_chunked(200, &content_type)?;
    let mut watcher = Watcher {
        conn,
        resource: resources::get(spec.resource),
        repr: spec.repr,
        table_headers_sent: false,
    };

    let mut cursor = match spec.start_after {
        Some(rv) => rv,
        None => send_current_state(&mut watcher, shared, spec)?,
    };
    if spec.initial_events_end {
        watcher.send_bookmark(cursor, true)?;
    }
    let deadline = Instant::now() + spec.timeout;
    let mut next_bookmark = Instant::now() + bookmark_interval;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wake_at = if spec.bookmarks { deadline.min(next_bookmark) } else { deadline };
        let wait = wake_at.saturating_duration_since(now).min(MAX_IDLE_WAIT);
        let batch = shared.wait_past(cursor, wait).events_after(cursor);
        match batch {
            Err(expired) => {
                watcher.send("ERROR", expired.to_status())?;
                break;
            }
            Ok(events) if events.is_empty() && watcher.conn.peer_closed() => return Ok(()),
            Ok(events) => cursor = send_events(&mut watcher, spec, &events, cursor)?,
        }
        if spec.bookmarks && Instant::now() >= next_bookmark {
            watcher.send_bookmark(cursor, false)?;
            next_bookmark = Instant::now() + bookmark_interval;
        }
    }
    watcher.conn.finish_chunked()
}

/// Sends ADDED for every object in scope; returns the resourceVersion they were read at.
fn send_current_state(watcher: &mut Watcher, shared: &Shared, spec: &WatchSpec) -> io::Result<u64> {
    let (objects, rv) = {
        let store = shared.read();
        let objects: Vec<Value> = store
            .list(spec.resource, spec.namespace.as_deref())
            .filter(|o| spec.selector.matches(o))
            .cloned()
            .collect();
        (objects, store.rv())
    };
    for object in &objects {
        watcher.send_object(EventType::Added, object)?;
    }
    Ok(rv)
}

/// Sends the events this watcher should see; returns the new cursor.
fn send_events(
    watcher: &mut Watcher,
    spec: &WatchSpec,
    events: &[Arc<Event>],
    mut cursor: u64,
) -> io::Result<u64> {
    for event in events {
        if let Some((kind, object)) = spec.translate(event) {
            watcher.send_object(kind, &object)?;
        }
        cursor = event.rv;
    }
    Ok(cursor)
}

/// Parses a watch's `resourceVersion`: absent or "0" means "current state first".
pub fn parse_start(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    match value {
        None | Some("" | "0") => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {text:?}"))),
    }
}
