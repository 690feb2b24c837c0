//! Which cacheable answers the cache was just handed, remembered on the reactor so an
//! unchanged answer is neither copied nor sent to the cache thread again (no copy, no
//! wake-up, no hash of the body there).
//!
//! An answer is known by its cache key, its content type and the `resourceVersion` at the
//! top of its JSON `metadata`, read from the first bytes of the body: for an object it
//! names the object's revision, for a list the snapshot the list was read at, so the same
//! version means the same answer. Answers without one (other formats, aggregated APIs that
//! set none) are always stored. Every key is still stored once per `REFRESH`, so what the
//! cache holds is never older than that even if it evicted the answer meanwhile, and its
//! stored time stays current to the second it keeps; a write through the proxy forgets all.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Bytes at the start of a body in which the `resourceVersion` must be found.
pub const PREFIX_BYTES: usize = 1024;
/// An unchanged answer is stored again after this long.
const REFRESH: Duration = Duration::from_secs(1);
/// Keys remembered at most; past it the memo starts over (only costs stores).
const MAX_ENTRIES: usize = 16 * 1024;

const METADATA: &[u8] = b"\"metadata\":{";
const RESOURCE_VERSION: &[u8] = b"\"resourceVersion\":\"";

struct Memo {
    version: Box<[u8]>,
    content_type: Box<str>,
    stored: Instant,
}

#[derive(Default)]
pub struct StoreMemo {
    entries: HashMap<String, Memo>,
}

impl StoreMemo {
    /// Whether an answer for `key` starting with `prefix` was handed to the cache, the
    /// same version, less than `REFRESH` ago: then it need not be copied.
    pub fn holds(&self, key: &str, content_type: &str, prefix: &[u8], now: Instant) -> bool {
        let Some(memo) = self.entries.get(key) else { return false };
        now.saturating_duration_since(memo.stored) < REFRESH
            && *memo.content_type == *content_type
            && resource_version(prefix).is_some_and(|version| *memo.version == *version)
    }

    /// An answer was handed to the cache: remember its version (or forget the key when it
    /// names none).
    pub fn stored(&mut self, key: String, content_type: &str, body: &[u8], now: Instant) {
        let Some(version) = resource_version(body) else {
            self.entries.remove(&key);
            return;
        };
        if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        let memo = Memo { version: version.into(), content_type: content_type.into(), stored: now };
        self.entries.insert(key, memo);
    }

    /// A write went through: cached answers may have changed under their keys.
    pub fn forget_all(&mut self) {
        self.entries.clear();
    }
}

/// The `resourceVersion` of the top-level `metadata`, when the first `PREFIX_BYTES` show
/// it before any nested object or array (where it could belong to something else).
fn resource_version(body: &[u8]) -> Option<&[u8]> {
    let prefix = &body[..body.len().min(PREFIX_BYTES)];
    // The first `"metadata":{` must be the document's own: in a list whose `items` come
    // first (unstructured lists, sorted keys) it would be the first item's.
    let at = find(prefix, METADATA)?;
    if depth_at(prefix, at)? != 1 {
        return None;
    }
    let metadata = at + METADATA.len();
    let key = metadata + find(&prefix[metadata..], RESOURCE_VERSION)?;
    if prefix[metadata..key].iter().any(|&b| matches!(b, b'{' | b'[' | b'\\')) {
        return None;
    }
    let start = key + RESOURCE_VERSION.len();
    let length = prefix[start..].iter().position(|&b| b == b'"')?;
    let version = &prefix[start..start + length];
    let plain = !version.is_empty() && !version.contains(&b'\\');
    plain.then_some(version)
}

/// How deep in objects and arrays `position` is (outside strings); `None` inside a string.
fn depth_at(json: &[u8], position: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in &json[..position] {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    (!in_string).then_some(depth)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    // Scans for the first byte, then compares: a memcmp at every offset was 3 % of a GET.
    let (&first, _) = needle.split_first()?;
    let mut from = 0;
    loop {
        let at = from + haystack.get(from..)?.iter().position(|&byte| byte == first)?;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";
    const POD_V1: &[u8] = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"default","uid":"u-1","resourceVersion":"41","labels":{"a":"b"}},"spec":{}}"#;
    const POD_V2: &[u8] = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"web","namespace":"default","uid":"u-1","resourceVersion":"42","labels":{"a":"b"}},"spec":{}}"#;

    #[test]
    fn find_locates_the_first_occurrence() {
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"abab", b"ab"), Some(0));
        assert_eq!(find(b"xxab", b"ab"), Some(2));
        assert_eq!(find(b"xxa", b"ab"), None);
        assert_eq!(find(b"", b"ab"), None);
        assert_eq!(find(b"ab", b""), None);
    }

    #[test]
    fn the_version_is_read_from_the_top_level_metadata_only() {
        assert_eq!(resource_version(POD_V1), Some(&b"41"[..]));
        let list = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}"#;
        assert_eq!(resource_version(list), Some(&b"7"[..]));
        // Inside a nested object (labels first), escaped, empty or too far: not trusted.
        let nested = br#"{"metadata":{"labels":{"resourceVersion":"1"},"resourceVersion":"2"}}"#;
        assert_eq!(resource_version(nested), None);
        assert_eq!(resource_version(br#"{"metadata":{"resourceVersion":""}}"#), None);
        let escaped = br#"{"metadata":{"annotations":"{\"resourceVersion\":\"9\"}"}}"#;
        assert_eq!(resource_version(escaped), None);
        let mut far = br#"{"metadata":{"name":""#.to_vec();
        far.extend(std::iter::repeat_n(b'x', PREFIX_BYTES));
        far.extend(br#"","resourceVersion":"3"}}"#);
        assert_eq!(resource_version(&far), None);
        assert_eq!(resource_version(b"\x6b\x38\x73\x00protobuf"), None);
        // Sorted keys put `items` first: the first metadata is an item's, not the list's.
        let items_first = br#"{"apiVersion":"v1","items":[{"metadata":{"resourceVersion":"5"}}],"kind":"PodList","metadata":{"resourceVersion":"9"}}"#;
        assert_eq!(resource_version(items_first), None);
        let in_a_string = br#"{"note":"\"metadata\":{","metadata":{"resourceVersion":"4"}}"#;
        assert_eq!(resource_version(in_a_string), Some(&b"4"[..]), "the string is skipped");
    }

    #[test]
    fn a_changed_answer_is_always_stored() {
        let mut memo = StoreMemo::default();
        let now = Instant::now();
        assert!(!memo.holds("k", JSON, POD_V1, now), "nothing stored yet");
        memo.stored("k".into(), JSON, POD_V1, now);
        assert!(memo.holds("k", JSON, &POD_V1[..120], now), "same version: skipped");
        assert!(!memo.holds("k", JSON, POD_V2, now), "a new version is stored");
        assert!(!memo.holds("other", JSON, POD_V1, now), "another key is stored");
        assert!(!memo.holds("k", "application/json;as=Table", POD_V1, now));
        assert!(!memo.holds("k", JSON, b"{\"kind\":\"Status\"}", now), "no version: stored");
    }

    #[test]
    fn unchanged_answers_are_stored_again_each_refresh_and_after_writes() {
        let mut memo = StoreMemo::default();
        let now = Instant::now();
        memo.stored("k".into(), JSON, POD_V1, now);
        assert!(memo.holds("k", JSON, POD_V1, now + REFRESH / 2));
        assert!(!memo.holds("k", JSON, POD_V1, now + REFRESH), "refreshed once per period");
        memo.forget_all();
        assert!(!memo.holds("k", JSON, POD_V1, now));
        memo.stored("k".into(), JSON, POD_V1, now);
        memo.stored("k".into(), JSON, b"not json", now);
        assert!(!memo.holds("k", JSON, POD_V1, now), "an answer without a version forgets");
    }
}
