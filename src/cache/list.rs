//! Complete JSON lists split into an envelope plus one item per object, and joined back:
//! watch events then change one item instead of rewriting a whole list, and an unchanged
//! list rebuilds to the exact bytes the apiserver sent.

use super::json;

/// The parts of a List body. `envelope` is the body with the `items` array emptied; the items
/// go back at `items_at` (just after its `[`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListHead {
    pub content_type: String,
    pub envelope: Vec<u8>,
    pub items_at: usize,
    pub resource_version: String,
}

/// One object of a list, keyed `namespace/name` (etcd's order, which kube lists follow).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListItem {
    pub key: String,
    pub resource_version: String,
    pub encoded: Vec<u8>,
}

/// The identifying metadata of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
}

impl ObjectMeta {
    /// Reads `metadata.{namespace,name,resourceVersion}` of the object at `at`.
    pub fn of(bytes: &[u8], at: usize) -> Option<ObjectMeta> {
        let metadata = json::member(bytes, at, "metadata")?;
        let field = |name| json::string_member(bytes, metadata.start, &[name]);
        Some(ObjectMeta {
            namespace: field("namespace").unwrap_or_default(),
            name: field("name").filter(|n| !n.is_empty())?,
            resource_version: field("resourceVersion").unwrap_or_default(),
        })
    }

    pub fn item_key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A List body split in parts, or None when `body` is not a complete List (no items array,
/// an item without a name, or a `metadata.continue` token: then it is one page).
pub fn decompose(content_type: &str, body: &[u8]) -> Option<(ListHead, Vec<ListItem>)> {
    let members = json::object_members(body, 0)?;
    let member = |name: &str| {
        members
            .iter()
            .find(|(key, _)| &body[key.clone()] == name.as_bytes())
            .map(|(_, v)| v.clone())
    };
    let metadata = member("metadata")?;
    let continues = json::string_member(body, metadata.start, &["continue"]);
    if continues.is_some_and(|c| !c.is_empty()) {
        return None;
    }
    let items_span = member("items")?;
    let spans = json::array_elements(body, items_span.start)?;
    let items = spans
        .into_iter()
        .map(|span| {
            let meta = ObjectMeta::of(body, span.start)?;
            Some(ListItem {
                key: meta.item_key(),
                resource_version: meta.resource_version,
                encoded: body[span].to_vec(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let open = items_span.start + 1;
    let close = items_span.end - 1;
    let mut envelope = body[..open].to_vec();
    envelope.extend_from_slice(&body[close..]);
    let head = ListHead {
        content_type: content_type.to_string(),
        envelope,
        items_at: open,
        resource_version: json::string_member(body, metadata.start, &["resourceVersion"])
            .unwrap_or_default(),
    };
    Some((head, items))
}

/// The List body for `head` with `items` (already in key order).
pub fn rebuild(head: &ListHead, items: &[ListItem]) -> Vec<u8> {
    let (envelope, items_at) = envelope_at_version(head);
    let items_len: usize = items.iter().map(|item| item.encoded.len() + 1).sum();
    let mut body = Vec::with_capacity(envelope.len() + items_len);
    body.extend_from_slice(&envelope[..items_at]);
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&item.encoded);
    }
    body.extend_from_slice(&envelope[items_at..]);
    body
}

/// The envelope with `metadata.resourceVersion` set to the head's (watch events move it).
fn envelope_at_version(head: &ListHead) -> (Vec<u8>, usize) {
    let envelope = &head.envelope;
    let Some(span) = json::member_path(envelope, 0, &["metadata", "resourceVersion"]) else {
        return (envelope.clone(), head.items_at);
    };
    if json::string_at(envelope, span.clone()).as_deref() == Some(head.resource_version.as_str()) {
        return (envelope.clone(), head.items_at);
    }
    let quoted = serde_json::Value::from(head.resource_version.as_str()).to_string();
    let mut spliced = envelope[..span.start].to_vec();
    spliced.extend_from_slice(quoted.as_bytes());
    spliced.extend_from_slice(&envelope[span.end..]);
    let items_at = if span.start < head.items_at {
        head.items_at + quoted.len() - span.len()
    } else {
        head.items_at
    };
    (spliced, items_at)
}

/// Whether version `a` is newer than `b`, when both are numbers; unknown (None) otherwise.
/// Kubernetes says resource versions are opaque, but etcd-backed ones are integers and a
/// caching proxy may compare them the way kube's own watch cache does.
pub fn newer(a: &str, b: &str) -> Option<bool> {
    Some(a.parse::<u64>().ok()? > b.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const POD_LIST: &str = concat!(
        r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"20"},"items":["#,
        r#"{"metadata":{"name":"a","namespace":"ns","resourceVersion":"11"},"spec":{}},"#,
        r#"{"metadata":{"name":"b","namespace":"ns","resourceVersion":"12"},"spec":{"x":"]"}}"#,
        "]}\n"
    );

    #[test]
    fn unchanged_list_rebuilds_byte_identical() {
        let (head, items) = decompose("application/json", POD_LIST.as_bytes()).expect("list");
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].key, "ns/b");
        assert_eq!(head.resource_version, "20");
        assert_eq!(rebuild(&head, &items), POD_LIST.as_bytes());
    }

    #[test]
    fn new_version_is_spliced_into_metadata() {
        let (mut head, items) = decompose("application/json", POD_LIST.as_bytes()).expect("list");
        head.resource_version = "12345".into();
        let body = rebuild(&head, &items[..1]);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(value["metadata"]["resourceVersion"], "12345");
        assert_eq!(value["items"].as_array().map(Vec::len), Some(1));
        let empty = rebuild(&head, &[]);
        let value: serde_json::Value = serde_json::from_slice(&empty).expect("json");
        assert_eq!(value["items"], serde_json::json!([]));
    }

    #[test]
    fn pages_and_non_lists_are_not_decomposed() {
        let page =
            r#"{"kind":"PodList","metadata":{"continue":"abc","resourceVersion":"1"},"items":[]}"#;
        assert!(decompose("application/json", page.as_bytes()).is_none());
        let last_page =
            r#"{"kind":"PodList","metadata":{"continue":"","resourceVersion":"1"},"items":[]}"#;
        assert!(decompose("application/json", last_page.as_bytes()).is_some());
        assert!(
            decompose("application/json", br#"{"kind":"Pod","metadata":{"name":"a"}}"#).is_none()
        );
        assert!(
            decompose("application/json", br#"{"metadata":{},"items":[{"metadata":{}}]}"#)
                .is_none()
        );
        assert!(decompose("application/json", b"not json").is_none());
    }

    #[test]
    fn version_comparison() {
        assert_eq!(newer("10", "9"), Some(true));
        assert_eq!(newer("9", "10"), Some(false));
        assert_eq!(newer("x", "10"), None);
    }
}
