//! A small JSON structure scanner: finds the byte spans of values without building a tree,
//! so list bodies and watch events are split into items and re-joined byte-for-byte (the
//! bytes kube-apiserver wrote are kept, not re-serialized with another key order).
//!
//! It checks structure (brackets, strings, separators), not every scalar's grammar: its input
//! is what the upstream apiserver sent with status 200.

use std::ops::Range;

pub type Span = Range<usize>;

/// Nesting deeper than this is refused rather than scanned (kube objects are far shallower).
const MAX_DEPTH: usize = 512;

fn skip_whitespace(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
        at += 1;
    }
    at
}

/// End (exclusive) of the string whose opening quote is at `at`.
fn string_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

fn scalar_end(bytes: &[u8], at: usize) -> Option<usize> {
    let length = bytes[at..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .count();
    (length > 0).then_some(at + length)
}

/// Span of the value that starts at `at` (leading whitespace skipped).
pub fn value_span(bytes: &[u8], at: usize) -> Option<Span> {
    let start = skip_whitespace(bytes, at);
    let first = *bytes.get(start)?;
    let end = match first {
        b'"' => string_end(bytes, start)?,
        b'{' | b'[' => container_end(bytes, start)?,
        _ => scalar_end(bytes, start)?,
    };
    Some(start..end)
}

/// End of the object or array opening at `at`, matching brackets iteratively.
fn container_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut open = Vec::new();
    let mut i = at;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i = string_end(bytes, i)?;
                continue;
            }
            b'{' => open.push(b'}'),
            b'[' => open.push(b']'),
            close @ (b'}' | b']') => {
                if open.pop() != Some(close) {
                    return None;
                }
                if open.is_empty() {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        if open.len() > MAX_DEPTH {
            return None;
        }
        i += 1;
    }
    None
}

/// The (key span without quotes, value span) pairs of the object starting at `at`.
pub fn object_members(bytes: &[u8], at: usize) -> Option<Vec<(Span, Span)>> {
    let mut i = skip_whitespace(bytes, at);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    i = skip_whitespace(bytes, i + 1);
    if bytes.get(i) == Some(&b'}') {
        return Some(members);
    }
    loop {
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, i)?;
        let key = i + 1..key_end - 1;
        i = skip_whitespace(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let value = value_span(bytes, i + 1)?;
        i = skip_whitespace(bytes, value.end);
        members.push((key, value));
        match bytes.get(i) {
            Some(b',') => i = skip_whitespace(bytes, i + 1),
            Some(b'}') => return Some(members),
            _ => return None,
        }
    }
}

/// The element spans of the array starting at `at`.
pub fn array_elements(bytes: &[u8], at: usize) -> Option<Vec<Span>> {
    let mut i = skip_whitespace(bytes, at);
    if bytes.get(i) != Some(&b'[') {
        return None;
    }
    let mut elements = Vec::new();
    i = skip_whitespace(bytes, i + 1);
    if bytes.get(i) == Some(&b']') {
        return Some(elements);
    }
    loop {
        let element = value_span(bytes, i)?;
        i = skip_whitespace(bytes, element.end);
        elements.push(element);
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Some(elements),
            _ => return None,
        }
    }
}

/// Value span of member `name` of the object starting at `at` (names compared unescaped-raw;
/// the Kubernetes field names looked up here never need escapes).
pub fn member(bytes: &[u8], at: usize, name: &str) -> Option<Span> {
    object_members(bytes, at)?
        .into_iter()
        .find(|(key, _)| &bytes[key.clone()] == name.as_bytes())
        .map(|(_, value)| value)
}

/// Value span at a path of member names, e.g. `["metadata", "resourceVersion"]`.
pub fn member_path(bytes: &[u8], at: usize, path: &[&str]) -> Option<Span> {
    let mut span = skip_whitespace(bytes, at)..bytes.len();
    for name in path {
        span = member(bytes, span.start, name)?;
    }
    Some(span)
}

/// The decoded string at `span` (None when that value is not a JSON string).
pub fn string_at(bytes: &[u8], span: Span) -> Option<String> {
    serde_json::from_slice::<String>(&bytes[span]).ok()
}

/// The string at a path of member names.
pub fn string_member(bytes: &[u8], at: usize, path: &[&str]) -> Option<String> {
    string_at(bytes, member_path(bytes, at, path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = br#" {"a" : [1, {"b":"x\"]}"} , true], "c":{"d":"e"}, "n":null} "#;

    #[test]
    fn finds_members_and_elements() {
        let a = member(DOC, 0, "a").expect("a");
        let elements = array_elements(DOC, a.start).expect("array");
        assert_eq!(elements.len(), 3);
        assert_eq!(&DOC[elements[1].clone()], br#"{"b":"x\"]}"}"#);
        assert_eq!(string_member(DOC, 0, &["c", "d"]).as_deref(), Some("e"));
        assert_eq!(&DOC[member(DOC, 0, "n").expect("n")], b"null");
        assert!(member(DOC, 0, "missing").is_none());
    }

    #[test]
    fn refuses_malformed_input() {
        assert!(object_members(br#"{"a":1"#, 0).is_none());
        assert!(object_members(br#"{"a" 1}"#, 0).is_none());
        assert!(value_span(br#"[1,2}"#, 0).is_none());
        assert!(array_elements(br#"[1 2]"#, 0).is_none());
        assert!(value_span(b"", 0).is_none());
    }

    #[test]
    fn empty_containers() {
        assert_eq!(object_members(b"{ }", 0).map(|m| m.len()), Some(0));
        assert_eq!(array_elements(b"[ ]", 0).map(|e| e.len()), Some(0));
    }
}
