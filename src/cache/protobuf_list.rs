//! Kubernetes protobuf lists, objects and watch events, read and written without generated
//! code, for the cache to keep protobuf lists current exactly as it keeps JSON ones
//! (`list.rs`, `watch.rs`): the same `ListHead`/`ListItem` parts, the same events.
//!
//! The wire format (k8s.io/apimachinery generated.proto, kube's protobuf serializer):
//! - a body is `k8s\0` + `runtime.Unknown` (`protobuf::decode_envelope`) whose `raw` is the
//!   object's message; an object's `ObjectMeta` is its field 1 (name 1, namespace 3,
//!   resourceVersion 6, deletionTimestamp 9, deletionGracePeriodSeconds 10, annotations 12,
//!   finalizers 14);
//! - a list's `raw` holds its `ListMeta` as field 1 (resourceVersion 2, continue 3) and its
//!   items as field 2, each the bare item message (no envelope);
//! - a watch stream is 4-byte big-endian length-prefixed frames, each a bare `WatchEvent`
//!   (type 1, object 2 → `RawExtension.raw` 1), that `raw` being the object in the envelope.
//!
//! A list head keeps the envelope with the items taken out of `raw`; `items_at` is where in
//! `raw` they go back. Go writes fields in number order, so an unchanged list rebuilds to
//! the exact bytes the cloud sent.

use super::list::{ListHead, ListItem, ObjectMeta};
use super::write::DeletionMarks;
use crate::protobuf::{self, FRAME_PREFIX, ProtoError, Reader, Unknown, Writer};

const LIST_METADATA: u32 = 1;
const LIST_ITEMS: u32 = 2;
const LIST_META_RESOURCE_VERSION: u32 = 2;
const LIST_META_CONTINUE: u32 = 3;
const OBJECT_METADATA: u32 = 1;
const META_NAME: u32 = 1;
const META_NAMESPACE: u32 = 3;
const META_RESOURCE_VERSION: u32 = 6;
const META_DELETION_TIMESTAMP: u32 = 9;
const META_DELETION_GRACE_PERIOD_SECONDS: u32 = 10;
const META_ANNOTATIONS: u32 = 12;
const META_FINALIZERS: u32 = 14;
const MAP_KEY: u32 = 1;
const MAP_VALUE: u32 = 2;
const EVENT_TYPE: u32 = 1;
const EVENT_OBJECT: u32 = 2;
const RAW_EXTENSION_RAW: u32 = 1;
// meta/v1 Status.
const STATUS_METADATA: u32 = 1;
const STATUS_STATUS: u32 = 2;
const STATUS_MESSAGE: u32 = 3;
const STATUS_REASON: u32 = 4;
const STATUS_CODE: u32 = 6;

/// A list body split in parts, or None when `body` is not a complete protobuf list (not
/// the envelope, an item without a name, items not all together, or a `continue` token:
/// then it is one page).
pub fn decompose(content_type: &str, body: &[u8]) -> Option<(ListHead, Vec<ListItem>)> {
    let envelope = protobuf::decode_envelope(body).ok()?;
    let raw = envelope.raw;
    let mut resource_version = String::new();
    let mut items = Vec::new();
    // The list without its items: the bytes before the first item and after the last.
    let mut rest = Vec::with_capacity(64);
    let mut items_at = None;
    let mut offset = 0;
    let mut reader = Reader::new(raw);
    while let Some(field) = reader.next() {
        let (number, value) = field.ok()?;
        let end = raw.len() - reader.remaining();
        match number {
            LIST_ITEMS => {
                // Items interleaved with other fields cannot go back in one place.
                if items_at.is_some_and(|at| at != rest.len()) {
                    return None;
                }
                items_at = Some(rest.len());
                let item = value.bytes(LIST_ITEMS).ok()?;
                let meta = object_meta(item)?;
                items.push(ListItem {
                    key: meta.item_key(),
                    resource_version: meta.resource_version,
                    encoded: item.to_vec(),
                });
            }
            _ => {
                if number == LIST_METADATA {
                    let list_meta = value.bytes(LIST_METADATA).ok()?;
                    if !string_field(list_meta, LIST_META_CONTINUE)?.is_empty() {
                        return None;
                    }
                    resource_version = string_field(list_meta, LIST_META_RESOURCE_VERSION)?;
                }
                rest.extend_from_slice(&raw[offset..end]);
            }
        }
        offset = end;
    }
    let items_at = items_at.unwrap_or(rest.len());
    let head = ListHead {
        content_type: content_type.to_string(),
        envelope: protobuf::encode_envelope(&Unknown { raw: &rest, ..envelope }),
        items_at,
        resource_version,
    };
    Some((head, items))
}

/// The list body for `head` with `items` (in key order), its `ListMeta.resourceVersion` set
/// to the head's (watch events move it). None when the head is not a protobuf envelope.
pub fn rebuild(head: &ListHead, items: &[ListItem]) -> Option<Vec<u8>> {
    let envelope = protobuf::decode_envelope(&head.envelope).ok()?;
    let (before, after) = envelope.raw.split_at_checked(head.items_at)?;
    let items_len: usize = items.iter().map(|item| item.encoded.len() + 6).sum();
    let mut raw = Writer::from_vec(Vec::with_capacity(envelope.raw.len() + items_len + 16));
    for field in Reader::new(before) {
        let (number, value) = field.ok()?;
        if number == LIST_METADATA {
            let list_meta = value.bytes(LIST_METADATA).ok()?;
            raw.bytes(LIST_METADATA, &with_resource_version(list_meta, &head.resource_version)?);
        } else {
            raw.value(number, value);
        }
    }
    for item in items {
        raw.bytes(LIST_ITEMS, &item.encoded);
    }
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(after);
    Some(protobuf::encode_envelope(&Unknown { raw: &raw, ..envelope }))
}

/// `list_meta` with its resourceVersion replaced (or added in field order when missing).
fn with_resource_version(list_meta: &[u8], version: &str) -> Option<Vec<u8>> {
    let mut out = Writer::new();
    let mut written = false;
    for field in Reader::new(list_meta) {
        let (number, value) = field.ok()?;
        if number >= LIST_META_RESOURCE_VERSION && !written {
            out.string(LIST_META_RESOURCE_VERSION, version);
            written = true;
        }
        if number != LIST_META_RESOURCE_VERSION {
            out.value(number, value);
        }
    }
    if !written {
        out.string(LIST_META_RESOURCE_VERSION, version);
    }
    Some(out.into_bytes())
}

/// The last value of string field `number` in `message`, "" when absent.
fn string_field(message: &[u8], number: u32) -> Option<String> {
    let mut found = "";
    for field in Reader::new(message) {
        let (n, value) = field.ok()?;
        if n == number {
            found = value.string(n).ok()?;
        }
    }
    Some(found.to_string())
}

/// The embedded message at field `number` of `message` (the last one), if any.
fn message_field(message: &[u8], number: u32) -> Option<&[u8]> {
    let mut found = None;
    for field in Reader::new(message) {
        let (n, value) = field.ok()?;
        if n == number {
            found = Some(value.bytes(n).ok()?);
        }
    }
    found
}

/// The identifying metadata of an object's bare message (a list item).
pub fn object_meta(object: &[u8]) -> Option<ObjectMeta> {
    let meta = message_field(object, OBJECT_METADATA)?;
    Some(ObjectMeta {
        namespace: string_field(meta, META_NAMESPACE)?,
        name: string_field(meta, META_NAME)?,
        resource_version: string_field(meta, META_RESOURCE_VERSION)?,
    })
    .filter(|meta| !meta.name.is_empty())
}

/// The metadata of an object answered as a document (`k8s\0` + envelope).
pub fn document_meta(document: &[u8]) -> Option<ObjectMeta> {
    object_meta(protobuf::decode_envelope(document).ok()?.raw)
}

/// What a DELETE answered in protobuf: a `Status`, or the object.
pub enum DeleteAnswer<'a> {
    Status {
        success: bool,
    },
    /// The object's bare message.
    Object(&'a [u8]),
}

/// Reads a DELETE's protobuf answer, None when it is not a protobuf document.
pub fn delete_answer(document: &[u8]) -> Option<DeleteAnswer<'_>> {
    let envelope = protobuf::decode_envelope(document).ok()?;
    if envelope.kind == "Status" {
        let status = string_field(envelope.raw, STATUS_STATUS)?;
        return Some(DeleteAnswer::Status { success: status == "Success" });
    }
    Some(DeleteAnswer::Object(envelope.raw))
}

/// The deletion marks of the object (bare message) a DELETE answered.
pub fn deletion_marks(object: &[u8]) -> Option<DeletionMarks> {
    let meta = message_field(object, OBJECT_METADATA)?;
    let mut marks = DeletionMarks { marked: false, no_grace_left: false, finalizers_left: false };
    for field in Reader::new(meta) {
        match field.ok()? {
            (META_DELETION_TIMESTAMP, _) => marks.marked = true,
            (META_DELETION_GRACE_PERIOD_SECONDS, value) => {
                marks.no_grace_left = value.int64(META_DELETION_GRACE_PERIOD_SECONDS).ok()? == 0;
            }
            (META_FINALIZERS, _) => marks.finalizers_left = true,
            _ => {}
        }
    }
    Some(marks)
}

/// The value of annotation `key` on an object's bare message.
pub fn annotation(object: &[u8], key: &str) -> Option<String> {
    let meta = message_field(object, OBJECT_METADATA)?;
    let mut found = None;
    for field in Reader::new(meta) {
        let (n, value) = field.ok()?;
        if n == META_ANNOTATIONS {
            let entry = value.bytes(n).ok()?;
            if string_field(entry, MAP_KEY)? == key {
                found = Some(string_field(entry, MAP_VALUE)?);
            }
        }
    }
    found
}

/// The resourceVersion of an object's bare message, even one without a name (a BOOKMARK).
pub fn resource_version(object: &[u8]) -> Option<String> {
    string_field(message_field(object, OBJECT_METADATA)?, META_RESOURCE_VERSION)
}

/// The `apiVersion` and `kind` a list head's envelope names.
pub fn list_type(head: &ListHead) -> Option<(String, String)> {
    let envelope = protobuf::decode_envelope(&head.envelope).ok()?;
    Some((envelope.api_version.to_string(), envelope.kind.to_string()))
}

/// One watch event: its type and its object, both as a document (the envelope, which is
/// what a GET of the object answers) and as the bare message (what a list holds).
pub struct Event<'a> {
    pub event_type: &'a str,
    pub document: &'a [u8],
    pub object: &'a [u8],
}

/// Reads one frame's `WatchEvent` (without its length prefix).
pub fn event(frame: &[u8]) -> Result<Event<'_>, ProtoError> {
    let mut event_type = "";
    let mut document: &[u8] = &[];
    for field in Reader::new(frame) {
        match field? {
            (EVENT_TYPE, value) => event_type = value.string(EVENT_TYPE)?,
            (EVENT_OBJECT, value) => {
                let raw_extension = value.bytes(EVENT_OBJECT)?;
                for inner in Reader::new(raw_extension) {
                    if let (RAW_EXTENSION_RAW, value) = inner? {
                        document = value.bytes(RAW_EXTENSION_RAW)?;
                    }
                }
            }
            _ => {}
        }
    }
    let object = protobuf::decode_envelope(document)?.raw;
    Ok(Event { event_type, document, object })
}

/// The length of the frame at the start of `stream` (prefix included), once it is whole;
/// `Err(length)` with the announced length while it is still incomplete.
pub fn frame_len(stream: &[u8]) -> Option<Result<usize, usize>> {
    let length = protobuf::announced_frame_len(stream)?;
    let whole = FRAME_PREFIX + length;
    Some(if stream.len() >= whole { Ok(whole) } else { Err(length) })
}

/// A length-prefixed frame of a `WatchEvent` of `event_type` carrying `document`.
fn frame(event_type: &str, document: &[u8]) -> Vec<u8> {
    let mut raw_extension = Writer::new();
    raw_extension.bytes(RAW_EXTENSION_RAW, document);
    let mut event = Writer::new();
    event.string(EVENT_TYPE, event_type).bytes(EVENT_OBJECT, raw_extension.as_bytes());
    let event = event.into_bytes();
    let mut out = Vec::with_capacity(FRAME_PREFIX + event.len());
    out.extend_from_slice(&(event.len() as u32).to_be_bytes());
    out.extend_from_slice(&event);
    out
}

/// An object's bare message as a document of `kind` in `api_version`.
fn document(api_version: &str, kind: &str, object: &[u8]) -> Vec<u8> {
    protobuf::encode_envelope(&Unknown { api_version, kind, raw: object, ..Unknown::default() })
}

/// The ADDED frame of a list item of `kind`.
pub fn added_event(api_version: &str, kind: &str, item: &[u8]) -> Vec<u8> {
    frame("ADDED", &document(api_version, kind, item))
}

/// A BOOKMARK frame at `resource_version`; `ends_initial_events` adds the annotation that
/// ends a `sendInitialEvents` replay.
pub fn bookmark_event(
    api_version: &str,
    kind: &str,
    resource_version: &str,
    ends_initial_events: Option<&str>,
) -> Vec<u8> {
    let mut meta = Writer::new();
    meta.string(META_RESOURCE_VERSION, resource_version);
    if let Some(annotation) = ends_initial_events {
        let mut entry = Writer::new();
        entry.string(MAP_KEY, annotation).string(MAP_VALUE, "true");
        meta.bytes(META_ANNOTATIONS, entry.as_bytes());
    }
    let mut object = Writer::new();
    object.bytes(OBJECT_METADATA, meta.as_bytes());
    frame("BOOKMARK", &document(api_version, kind, object.as_bytes()))
}

/// The ERROR frame with a `Status` kube-apiserver sends for a watch from a version it no
/// longer has (410 Expired): clients re-list on it.
pub fn expired_event(message: &str) -> Vec<u8> {
    let mut status = Writer::new();
    status
        .bytes(STATUS_METADATA, &[])
        .string(STATUS_STATUS, "Failure")
        .string(STATUS_MESSAGE, message)
        .string(STATUS_REASON, "Expired")
        .varint(STATUS_CODE, 410);
    frame("ERROR", &document("v1", "Status", status.as_bytes()))
}

#[cfg(test)]
pub(super) mod tests {
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime as kruntime;
    use prost::Message;

    use super::*;

    fn pod(name: &str, rv: &str) -> core::Pod {
        core::Pod {
            metadata: Some(meta::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            spec: Some(core::PodSpec { node_name: Some("edge-1".into()), ..Default::default() }),
            status: Some(core::PodStatus { phase: Some("Running".into()), ..Default::default() }),
        }
    }

    /// As kube-apiserver encodes a body: every envelope field written.
    pub fn envelope(kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let unknown = kruntime::Unknown {
            type_meta: Some(kruntime::TypeMeta {
                api_version: Some("v1".into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat()
    }

    pub fn pod_list(rv: &str, pods: Vec<core::Pod>) -> Vec<u8> {
        let list = core::PodList {
            metadata: Some(meta::ListMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            }),
            items: pods,
        };
        envelope("PodList", list.encode_to_vec())
    }

    fn decode_list(body: &[u8]) -> core::PodList {
        let unknown = kruntime::Unknown::decode(&body[4..]).expect("envelope");
        core::PodList::decode(unknown.raw.unwrap_or_default().as_slice()).expect("pod list")
    }

    const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

    #[test]
    fn unchanged_list_rebuilds_byte_identical() {
        for pods in [vec![], vec![pod("a", "11"), pod("b", "12")]] {
            let body = pod_list("20", pods.clone());
            let (head, items) = decompose(PROTOBUF, &body).expect("a list");
            assert_eq!(head.resource_version, "20");
            assert_eq!(items.len(), pods.len());
            assert_eq!(rebuild(&head, &items).expect("rebuilt"), body);
        }
        let (_, items) = decompose(PROTOBUF, &pod_list("20", vec![pod("b", "12")])).expect("list");
        assert_eq!(items[0].key, "ns/b");
        assert_eq!(items[0].resource_version, "12");
        assert_eq!(items[0].encoded, pod("b", "12").encode_to_vec());
    }

    #[test]
    fn a_changed_list_decodes_with_the_real_types() {
        let (mut head, mut items) =
            decompose(PROTOBUF, &pod_list("20", vec![pod("a", "11")])).expect("list");
        head.resource_version = "123456".into();
        let newer = pod("c", "123456");
        items.push(ListItem {
            key: "ns/c".into(),
            resource_version: "123456".into(),
            encoded: newer.encode_to_vec(),
        });
        let list = decode_list(&rebuild(&head, &items).expect("rebuilt"));
        assert_eq!(list.metadata.and_then(|m| m.resource_version).as_deref(), Some("123456"));
        assert_eq!(list.items, vec![pod("a", "11"), newer]);
        assert_eq!(list_type(&head), Some(("v1".into(), "PodList".into())));
    }

    #[test]
    fn pages_and_non_lists_are_not_decomposed() {
        let page = core::PodList {
            metadata: Some(meta::ListMeta {
                resource_version: Some("1".into()),
                r#continue: Some("abc".into()),
                ..Default::default()
            }),
            items: vec![pod("a", "1")],
        };
        assert!(decompose(PROTOBUF, &envelope("PodList", page.encode_to_vec())).is_none());
        let nameless = core::Pod::default();
        let list = core::PodList { metadata: None, items: vec![nameless] };
        assert!(decompose(PROTOBUF, &envelope("PodList", list.encode_to_vec())).is_none());
        assert!(decompose(PROTOBUF, b"{\"items\":[]}").is_none());
        assert!(decompose(PROTOBUF, b"k8s\0\xff").is_none());
    }

    #[test]
    fn events_read_and_written_match_the_real_types() {
        let object = pod("a", "30");
        let written = added_event("v1", "Pod", &object.encode_to_vec());
        assert_eq!(frame_len(&written), Some(Ok(written.len())));
        assert_eq!(frame_len(&written[..written.len() - 1]), Some(Err(written.len() - 4)));
        let real = meta::WatchEvent::decode(&written[4..]).expect("a WatchEvent");
        assert_eq!(real.r#type.as_deref(), Some("ADDED"));
        let document = real.object.and_then(|o| o.raw).expect("raw");
        let unknown = kruntime::Unknown::decode(&document[4..]).expect("envelope");
        assert_eq!(core::Pod::decode(unknown.raw.unwrap_or_default().as_slice()), Ok(object));

        let read = event(&written[4..]).expect("an event");
        assert_eq!(read.event_type, "ADDED");
        assert_eq!(read.document, document.as_slice());
        let meta = object_meta(read.object).expect("meta");
        assert_eq!((meta.item_key(), meta.resource_version), ("ns/a".into(), "30".into()));
        assert_eq!(document_meta(read.document).map(|m| m.name), Some("a".into()));
    }

    #[test]
    fn bookmarks_and_errors_decode_with_the_real_types() {
        let bookmark = bookmark_event("v1", "Pod", "42", Some("k8s.io/initial-events-end"));
        let read = event(&bookmark[4..]).expect("a bookmark");
        assert_eq!(read.event_type, "BOOKMARK");
        assert_eq!(resource_version(read.object).as_deref(), Some("42"));
        let end = annotation(read.object, "k8s.io/initial-events-end");
        assert_eq!(end.as_deref(), Some("true"));
        let pod = core::Pod::decode(read.object).expect("a Pod");
        let annotations = pod.metadata.expect("metadata").annotations;
        assert_eq!(annotations["k8s.io/initial-events-end"], "true");

        let error = expired_event("too old resource version: 7");
        let read = event(&error[4..]).expect("an error");
        assert_eq!(read.event_type, "ERROR");
        let status = meta::Status::decode(read.object).expect("a Status");
        assert_eq!(status.code, Some(410));
        assert_eq!(status.reason.as_deref(), Some("Expired"));
        assert_eq!(status.message.as_deref(), Some("too old resource version: 7"));
    }
}
