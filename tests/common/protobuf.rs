//! Kubernetes protobuf as the tests build and read it, with the real generated types
//! (k8s-pb): the `k8s\0` + `runtime.Unknown` envelope of every body, and watch streams of
//! 4-byte big-endian lengths each followed by a bare `WatchEvent` whose object is enveloped.
//! Every reader panics, saying what it expected, on anything else.

use std::time::Duration;

use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime as kruntime;
use prost::Message;

use super::WatchStream;

/// The media type of a protobuf body.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// The Content-Type of a protobuf watch.
pub const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// What kubelet, kube-proxy and flannel send as `Accept`: protobuf, JSON as the fallback.
pub const KUBELET_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";
/// The magic every protobuf body starts with.
pub const MAGIC: &[u8] = b"k8s\0";

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}` with the empty contentEncoding and contentType
/// client-go writes: a request body as kubelet sends it.
pub fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = kruntime::Unknown {
        type_meta: Some(kruntime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [MAGIC, &unknown.encode_to_vec()].concat()
}

/// The `runtime.Unknown` of an enveloped body.
pub fn open_envelope(body: &[u8]) -> kruntime::Unknown {
    let unknown = body.strip_prefix(MAGIC).unwrap_or_else(|| {
        panic!("no k8s protobuf magic: {:?}", String::from_utf8_lossy(&body[..body.len().min(64)]))
    });
    kruntime::Unknown::decode(unknown).expect("runtime.Unknown")
}

/// `(apiVersion, kind)` of an envelope's typeMeta.
pub fn type_meta(unknown: &kruntime::Unknown) -> (String, String) {
    let type_meta = unknown.type_meta.clone().unwrap_or_default();
    (type_meta.api_version.unwrap_or_default(), type_meta.kind.unwrap_or_default())
}

/// The message `M` of an enveloped body whose typeMeta names `kind` (`Pod`, `PodList`,
/// `Status`).
pub fn decode<M: Message + Default>(body: &[u8], kind: &str) -> M {
    let unknown = open_envelope(body);
    assert_eq!(type_meta(&unknown).1, kind, "typeMeta.kind of the envelope");
    M::decode(unknown.raw.unwrap_or_default().as_slice())
        .unwrap_or_else(|e| panic!("{kind} does not decode: {e}"))
}

/// The length of the whole frame at the start of `buf`, once it has arrived (for
/// [`WatchStream::next_message`]).
pub fn whole_frame(buf: &[u8]) -> Option<usize> {
    let length: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let total = 4 + u32::from_be_bytes(length) as usize;
    (buf.len() >= total).then_some(total)
}

/// The frames of a protobuf watch body read whole; panics on a truncated one.
pub fn split_frames(mut body: &[u8]) -> Vec<meta::WatchEvent> {
    let mut events = Vec::new();
    while !body.is_empty() {
        let len = whole_frame(body).unwrap_or_else(|| panic!("truncated frame: {body:?}"));
        events.push(watch_event(&body[..len]));
        body = &body[len..];
    }
    events
}

/// One frame (length prefix included) as the bare `WatchEvent` it must hold.
pub fn watch_event(frame: &[u8]) -> meta::WatchEvent {
    assert!(!frame[4..].starts_with(MAGIC), "a watch frame has no envelope of its own");
    meta::WatchEvent::decode(&frame[4..]).expect("WatchEvent")
}

/// The next watch event of a protobuf watch, or `None` if none is whole within `timeout`.
pub fn next_watch_event(stream: &mut WatchStream, timeout: Duration) -> Option<meta::WatchEvent> {
    stream.next_message(timeout, whole_frame).map(|frame| watch_event(&frame))
}

/// The event's type (`ADDED`, `BOOKMARK`, ...) and its object `M`, enveloped as `kind`.
pub fn event_object<M: Message + Default>(event: &meta::WatchEvent, kind: &str) -> (String, M) {
    let raw = event.object.as_ref().and_then(|o| o.raw.as_deref()).expect("WatchEvent.object.raw");
    (event.r#type.clone().unwrap_or_default(), decode(raw, kind))
}
