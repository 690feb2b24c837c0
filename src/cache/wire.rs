//! The two encodings whose lists the cache splits into items and keeps current from watch
//! events: JSON (`list.rs`; a watch is one event per line) and Kubernetes protobuf
//! (`protobuf_list.rs`; a watch is length-prefixed frames). Everything that depends on the
//! encoding goes through `Wire`, so watch streams, offline replays and answers to writes are
//! written once for both. Other representations (Table, metadata-only, …) are stored exactly
//! as answered and have no `Wire`.

use super::key::Representation;
use super::list::{self, ListHead, ListItem, ObjectMeta};
use super::{json, protobuf_list};
use crate::protobuf;

/// The annotation kube puts on the BOOKMARK that ends `sendInitialEvents` replays.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Json,
    Protobuf,
}

/// What a watch event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    Bookmark,
    Other,
}

/// One watch event of either encoding.
pub struct Event<'a> {
    pub kind: EventType,
    /// The object as a GET of it answers (JSON: the object; protobuf: the envelope).
    pub document: &'a [u8],
    /// The object as a list holds it (JSON: the object; protobuf: its bare message).
    pub item: &'a [u8],
}

/// Where the next event of a watch stream ends.
pub enum NextEvent {
    /// The event is `stream[payload]`; the stream continues at `next`.
    Whole { payload: std::ops::Range<usize>, next: usize },
    /// Not complete yet; it will take at least this many bytes in all.
    Partial { at_least: usize },
}

impl Wire {
    pub fn of_representation(representation: &Representation) -> Option<Wire> {
        match representation {
            Representation::Json => Some(Wire::Json),
            Representation::Protobuf => Some(Wire::Protobuf),
            _ => None,
        }
    }

    /// The encoding of an answer of `content_type` (a watch's `;stream=watch` included).
    pub fn of_content_type(content_type: &str) -> Option<Wire> {
        let mut parts = content_type.split(';').map(str::trim);
        let media_type = parts.next().unwrap_or_default();
        let only_stream_params = parts.all(|p| p.starts_with("charset=") || p == "stream=watch");
        match media_type {
            "application/json" if only_stream_params => Some(Wire::Json),
            protobuf::MEDIA_TYPE if only_stream_params => Some(Wire::Protobuf),
            _ => None,
        }
    }

    /// The Content-Type of a watch stream in this encoding.
    pub fn watch_content_type(self) -> &'static str {
        match self {
            Wire::Json => "application/json",
            Wire::Protobuf => "application/vnd.kubernetes.protobuf;stream=watch",
        }
    }

    /// A complete list split in parts (see `list::decompose`).
    pub fn decompose(self, content_type: &str, body: &[u8]) -> Option<(ListHead, Vec<ListItem>)> {
        match self {
            Wire::Json => list::decompose(content_type, body),
            Wire::Protobuf => protobuf_list::decompose(content_type, body),
        }
    }

    /// The list body of `head` with `items`, in the encoding the head was stored in.
    pub fn rebuild(head: &ListHead, items: &[ListItem]) -> Option<Vec<u8>> {
        match Wire::of_content_type(&head.content_type)? {
            Wire::Json => Some(list::rebuild(head, items)),
            Wire::Protobuf => protobuf_list::rebuild(head, items),
        }
    }

    /// The metadata of a list item (or an event's `item`).
    pub fn item_meta(self, item: &[u8]) -> Option<ObjectMeta> {
        match self {
            Wire::Json => ObjectMeta::of(item, 0),
            Wire::Protobuf => protobuf_list::object_meta(item),
        }
    }

    /// The metadata of an object answered by a GET (a cached entry's body).
    pub fn document_meta(self, document: &[u8]) -> Option<ObjectMeta> {
        match self {
            Wire::Json => ObjectMeta::of(document, 0),
            Wire::Protobuf => protobuf_list::document_meta(document),
        }
    }

    /// Where the first event of `stream` ends.
    pub fn next_event(self, stream: &[u8]) -> NextEvent {
        match self {
            Wire::Json => match stream.iter().position(|b| *b == b'\n') {
                Some(newline) => NextEvent::Whole { payload: 0..newline, next: newline + 1 },
                None => NextEvent::Partial { at_least: stream.len() + 1 },
            },
            Wire::Protobuf => match protobuf_list::frame_len(stream) {
                Some(Ok(whole)) => {
                    NextEvent::Whole { payload: protobuf::FRAME_PREFIX..whole, next: whole }
                }
                Some(Err(length)) => {
                    NextEvent::Partial { at_least: protobuf::FRAME_PREFIX + length }
                }
                None => NextEvent::Partial { at_least: protobuf::FRAME_PREFIX },
            },
        }
    }

    /// Reads one event (a JSON line, a frame without its prefix); None when it is not one.
    pub fn event(self, payload: &[u8]) -> Option<Event<'_>> {
        let (event_type, document, item) = match self {
            Wire::Json => {
                let event_type = json::string_member(payload, 0, &["type"])?;
                let object = &payload[json::member(payload, 0, "object")?];
                (event_kind(&event_type), object, object)
            }
            Wire::Protobuf => {
                let event = protobuf_list::event(payload).ok()?;
                (event_kind(event.event_type), event.document, event.object)
            }
        };
        Some(Event { kind: event_type, document, item })
    }

    /// The resourceVersion a BOOKMARK's item carries, and whether it ends an initial replay.
    pub fn bookmark(self, item: &[u8]) -> (Option<String>, bool) {
        let (version, end) = match self {
            Wire::Json => (
                json::string_member(item, 0, &["metadata", "resourceVersion"]),
                json::string_member(item, 0, &["metadata", "annotations", INITIAL_EVENTS_END]),
            ),
            Wire::Protobuf => (
                protobuf_list::resource_version(item),
                protobuf_list::annotation(item, INITIAL_EVENTS_END),
            ),
        };
        (version, end.as_deref() == Some("true"))
    }

    /// The `apiVersion` and item kind of a stored list ("PodList" holds "Pod").
    pub fn item_type(head: &ListHead) -> (String, String) {
        let (api_version, list_kind) = match Wire::of_content_type(&head.content_type) {
            Some(Wire::Protobuf) => protobuf_list::list_type(head).unwrap_or_default(),
            _ => (
                json::string_member(&head.envelope, 0, &["apiVersion"]).unwrap_or_default(),
                json::string_member(&head.envelope, 0, &["kind"]).unwrap_or_default(),
            ),
        };
        let kind = list_kind.strip_suffix("List").unwrap_or(&list_kind).to_string();
        (api_version, kind)
    }

    /// The ADDED event for a list item of the given type.
    pub fn added_event(self, (api_version, kind): &(String, String), item: &[u8]) -> Vec<u8> {
        match self {
            Wire::Json => [b"{\"type\":\"ADDED\",\"object\":".as_slice(), item, b"}\n"].concat(),
            Wire::Protobuf => protobuf_list::added_event(api_version, kind, item),
        }
    }

    /// A BOOKMARK event at `resource_version`, ending an initial replay when asked.
    pub fn bookmark_event(
        self,
        (api_version, kind): &(String, String),
        resource_version: &str,
        ends_initial_events: bool,
    ) -> Vec<u8> {
        match self {
            Wire::Json => {
                json_bookmark_event(kind, api_version, resource_version, ends_initial_events)
            }
            Wire::Protobuf => protobuf_list::bookmark_event(
                api_version,
                kind,
                resource_version,
                ends_initial_events.then_some(INITIAL_EVENTS_END),
            ),
        }
    }

    /// The ERROR event kube-apiserver sends when a watch starts from a version it no longer
    /// has (410 Expired): clients re-list on it.
    pub fn expired_event(self, requested_resource_version: &str) -> Vec<u8> {
        let message = format!("too old resource version: {requested_resource_version}");
        match self {
            Wire::Json => format!(
                "{{\"type\":\"ERROR\",\"object\":{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":{},\"reason\":\"Expired\",\"code\":410}}}}\n",
                quoted(&message)
            )
            .into_bytes(),
            Wire::Protobuf => protobuf_list::expired_event(&message),
        }
    }
}

fn event_kind(event_type: &str) -> EventType {
    match event_type {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        "BOOKMARK" => EventType::Bookmark,
        _ => EventType::Other,
    }
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn json_bookmark_event(
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

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: (&str, &str) = ("v1", "Pod");

    fn pod_type() -> (String, String) {
        (TYPE.0.to_string(), TYPE.1.to_string())
    }

    #[test]
    fn json_helper_events_are_valid_json_lines() {
        let bookmark = Wire::Json.bookmark_event(&pod_type(), "42", true);
        assert!(bookmark.ends_with(b"\n"));
        let value: serde_json::Value = serde_json::from_slice(&bookmark).expect("bookmark json");
        assert_eq!(value["object"]["metadata"]["resourceVersion"], "42");
        assert_eq!(value["object"]["metadata"]["annotations"][INITIAL_EVENTS_END], "true");
        let expired: serde_json::Value =
            serde_json::from_slice(&Wire::Json.expired_event("7")).expect("error json");
        assert_eq!(expired["type"], "ERROR");
        assert_eq!(expired["object"]["code"], 410);
        assert_eq!(expired["object"]["reason"], "Expired");
    }

    /// What one encoding writes, the same encoding reads back.
    #[test]
    fn written_events_read_back_in_both_encodings() {
        let json_pod = br#"{"metadata":{"name":"a","namespace":"ns","resourceVersion":"5"}}"#;
        let proto_pod = protobuf::Writer::new()
            .bytes(
                1,
                protobuf::Writer::new().string(1, "a").string(3, "ns").string(6, "5").as_bytes(),
            )
            .as_bytes()
            .to_vec();
        for (wire, item) in [(Wire::Json, json_pod.to_vec()), (Wire::Protobuf, proto_pod)] {
            let added = wire.added_event(&pod_type(), &item);
            let NextEvent::Whole { payload, next } = wire.next_event(&added) else {
                panic!("{wire:?}: a whole event");
            };
            assert_eq!(next, added.len());
            let event = wire.event(&added[payload]).expect("an event");
            assert_eq!(event.kind, EventType::Added);
            assert_eq!(event.item, item.as_slice());
            assert_eq!(wire.item_meta(event.item).map(|m| m.item_key()), Some("ns/a".into()));
            assert_eq!(
                wire.document_meta(event.document).map(|m| m.resource_version),
                Some("5".into())
            );

            let bookmark = wire.bookmark_event(&pod_type(), "9", true);
            let NextEvent::Whole { payload, .. } = wire.next_event(&bookmark) else {
                panic!("{wire:?}: a whole bookmark");
            };
            let event = wire.event(&bookmark[payload]).expect("a bookmark");
            assert_eq!(event.kind, EventType::Bookmark);
            assert_eq!(wire.bookmark(event.item), (Some("9".into()), true));
            assert!(matches!(wire.next_event(&bookmark[..2]), NextEvent::Partial { .. }));
        }
    }

    #[test]
    fn content_types_name_their_wire() {
        assert_eq!(Wire::of_content_type("application/json"), Some(Wire::Json));
        assert_eq!(Wire::of_content_type("application/json;charset=utf-8"), Some(Wire::Json));
        let stream = "application/vnd.kubernetes.protobuf;stream=watch";
        assert_eq!(Wire::of_content_type(stream), Some(Wire::Protobuf));
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io";
        assert_eq!(Wire::of_content_type(table), None);
        assert_eq!(Wire::of_content_type("text/plain"), None);
    }
}
