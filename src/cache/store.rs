//! The storage trait both backends implement (SQLite on disk, memory), the changes it applies
//! atomically, and the test suite every backend must pass.

use std::fmt;

use super::CachedResponse;
use super::list::{ListHead, ListItem};

/// Who an entry belongs to, for /debug/cache and eviction bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub identity: String,
    pub resource: String,
}

/// One change; a `Vec<Change>` is applied as one transaction.
#[derive(Clone, Debug)]
pub enum Change {
    /// Stores (or replaces) an exact answer.
    PutEntry {
        key: String,
        owner: Owner,
        response: CachedResponse,
    },
    RemoveEntry {
        key: String,
    },
    /// Stores (or replaces, items included) the complete list of a scope.
    PutList {
        scope: String,
        owner: Owner,
        head: ListHead,
        items: Vec<ListItem>,
        /// Unix seconds, like `CachedResponse::stored_at`.
        stored_at: u64,
    },
    /// Removes a list and its items.
    RemoveList {
        scope: String,
    },
    /// Upserts one item of an existing list (no-op when the list is absent).
    PutItem {
        scope: String,
        item: ListItem,
    },
    RemoveItem {
        scope: String,
        key: String,
    },
    SetListVersion {
        scope: String,
        resource_version: String,
    },
    /// The stored answer is known current at `stored_at` (the same answer came again, or a
    /// watch brought it up to date); a no-op when absent. Item changes alone do not refresh
    /// a list: a write's answer updates one item, not the rest.
    Refresh {
        key: StoredKey,
        stored_at: u64,
    },
}

/// A stored list's head and when it was last known current (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredHead {
    pub head: ListHead,
    pub stored_at: u64,
}

/// A stored key, and whether it is an exact entry's or a list's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredKey {
    Entry(String),
    List(String),
}

/// Entry (exact answers + lists) and byte counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub bytes: u64,
}

/// One line of /debug/cache: what one identity holds of one resource in one content type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryRow {
    pub identity: String,
    pub resource: String,
    /// The representation as answered (`application/json`, `…protobuf`, a Table, …).
    pub content_type: String,
    pub entries: u64,
    pub lists: u64,
    pub list_items: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum StoreError {
    Sqlite(rusqlite::Error),
    Io(std::io::Error),
    /// The database's schema version is not one of `0..=known` (a newer release wrote it, or
    /// it is not a cache): it is left untouched.
    UnknownSchema {
        found: i64,
        known: i64,
    },
    /// Upgrading the schema from version `from` failed (a full disk); rolled back, the file
    /// is as it was.
    UpgradeFailed {
        from: i64,
        error: rusqlite::Error,
    },
}

impl StoreError {
    /// A short name for the kind of failure, used to rate-limit warnings.
    pub fn kind(&self) -> String {
        match self {
            StoreError::Sqlite(e) => match e.sqlite_error_code() {
                Some(code) => format!("sqlite {code:?}"),
                None => "sqlite".to_string(),
            },
            StoreError::Io(e) => format!("io {:?}", e.kind()),
            StoreError::UnknownSchema { .. } => "unknown schema".to_string(),
            StoreError::UpgradeFailed { .. } => "schema upgrade".to_string(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Sqlite(e) => write!(f, "sqlite: {e}"),
            StoreError::Io(e) => write!(f, "io: {e}"),
            StoreError::UnknownSchema { found, known } => {
                write!(f, "schema version {found} is unknown (known: 0 to {known})")
            }
            StoreError::UpgradeFailed { from, error } => {
                write!(f, "upgrading schema version {from} failed: {error}")
            }
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// A cache backend. Reads with `touch` count as an access for least-recently-used eviction.
pub trait Store {
    fn entry(&mut self, key: &str, touch: bool) -> Result<Option<CachedResponse>, StoreError>;
    fn list_head(&mut self, scope: &str, touch: bool) -> Result<Option<StoredHead>, StoreError>;
    /// The list's items in key order.
    fn list_items(&mut self, scope: &str) -> Result<Vec<ListItem>, StoreError>;
    fn item_version(&mut self, scope: &str, key: &str) -> Result<Option<String>, StoreError>;
    /// The keys of entries and lists containing `needle`, any identity, in no order.
    fn keys_containing(&mut self, needle: &str) -> Result<Vec<StoredKey>, StoreError>;
    /// Applies all changes or none.
    fn apply(&mut self, changes: Vec<Change>) -> Result<(), StoreError>;
    /// Removes least-recently-used entries and lists until at most `target_bytes` remain.
    fn evict_to(&mut self, target_bytes: u64) -> Result<u64, StoreError>;
    fn totals(&self) -> Totals;
    fn summary(&mut self) -> Result<Vec<SummaryRow>, StoreError>;
}

/// Bytes an exact entry accounts for.
pub fn entry_bytes(key: &str, response: &CachedResponse) -> u64 {
    (key.len() + response.content_type.len() + response.body.len()) as u64
}

/// Bytes a list head accounts for (its items add their JSON length).
pub fn head_bytes(scope: &str, head: &ListHead) -> u64 {
    (scope.len() + head.content_type.len() + head.envelope.len() + head.resource_version.len())
        as u64
}

pub fn item_bytes(item: &ListItem) -> u64 {
    (item.key.len() + item.resource_version.len() + item.encoded.len()) as u64
}

/// The suite every backend passes: `run_all(|| make a fresh store)`.
#[cfg(test)]
pub mod suite {
    use super::*;

    pub fn owner(identity: &str) -> Owner {
        Owner { identity: identity.to_string(), resource: "pods".to_string() }
    }

    /// When the suite's answers were stored, unless a test says otherwise.
    pub const STORED_AT: u64 = 1_000;

    pub fn response(body: &str) -> CachedResponse {
        CachedResponse {
            status: 200,
            content_type: "application/json".into(),
            body: body.as_bytes().to_vec(),
            stored_at: STORED_AT,
        }
    }

    pub fn item(key: &str, rv: &str) -> ListItem {
        ListItem {
            key: key.into(),
            resource_version: rv.into(),
            encoded: format!("{{\"k\":\"{key}\"}}").into_bytes(),
        }
    }

    pub fn head(rv: &str) -> ListHead {
        ListHead {
            content_type: "application/json".into(),
            envelope: br#"{"metadata":{},"items":[]}"#.to_vec(),
            items_at: 24,
            resource_version: rv.into(),
        }
    }

    fn put_list(scope: &str, identity: &str, items: Vec<ListItem>) -> Change {
        put_list_at(scope, identity, items, STORED_AT)
    }

    fn put_list_at(scope: &str, identity: &str, items: Vec<ListItem>, stored_at: u64) -> Change {
        let owner = owner(identity);
        Change::PutList { scope: scope.into(), owner, head: head("1"), items, stored_at }
    }

    fn stored_head(rv: &str) -> StoredHead {
        StoredHead { head: head(rv), stored_at: STORED_AT }
    }

    pub fn run_all<S: Store>(make: impl Fn() -> S) {
        entries_round_trip(&mut make());
        lists_round_trip_in_key_order(&mut make());
        item_changes_apply(&mut make());
        put_list_replaces_items(&mut make());
        item_changes_need_a_list(&mut make());
        totals_follow_changes(&mut make());
        eviction_removes_least_recently_used(&mut make());
        summary_counts_per_identity(&mut make());
        keys_are_found_by_what_they_contain(&mut make());
        stored_times_follow_answers_and_refreshes(&mut make());
    }

    fn entries_round_trip<S: Store>(store: &mut S) {
        let change =
            Change::PutEntry { key: "k1".into(), owner: owner("a"), response: response("one") };
        store.apply(vec![change]).expect("put");
        assert_eq!(store.entry("k1", true).expect("read"), Some(response("one")));
        assert_eq!(store.entry("k2", true).expect("read"), None);
        let change =
            Change::PutEntry { key: "k1".into(), owner: owner("a"), response: response("two") };
        store.apply(vec![change]).expect("replace");
        assert_eq!(store.entry("k1", false).expect("read"), Some(response("two")));
        store.apply(vec![Change::RemoveEntry { key: "k1".into() }]).expect("remove");
        assert_eq!(store.entry("k1", false).expect("read"), None);
    }

    fn lists_round_trip_in_key_order<S: Store>(store: &mut S) {
        let items = vec![item("b/x", "3"), item("a/y", "2"), item("a-b/z", "4")];
        store.apply(vec![put_list("s", "a", items)]).expect("put list");
        assert_eq!(store.list_head("s", true).expect("head"), Some(stored_head("1")));
        let keys: Vec<String> =
            store.list_items("s").expect("items").into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["a-b/z", "a/y", "b/x"]);
        assert_eq!(store.item_version("s", "a/y").expect("rv").as_deref(), Some("2"));
        assert_eq!(store.list_head("other", true).expect("head"), None);
    }

    fn item_changes_apply<S: Store>(store: &mut S) {
        store
            .apply(vec![put_list("s", "a", vec![item("n/a", "1"), item("n/b", "1")])])
            .expect("put");
        store
            .apply(vec![
                Change::PutItem { scope: "s".into(), item: item("n/c", "5") },
                Change::PutItem { scope: "s".into(), item: item("n/a", "6") },
                Change::RemoveItem { scope: "s".into(), key: "n/b".into() },
                Change::SetListVersion { scope: "s".into(), resource_version: "6".into() },
            ])
            .expect("changes");
        let items = store.list_items("s").expect("items");
        assert_eq!(items, vec![item("n/a", "6"), item("n/c", "5")]);
        assert_eq!(
            store.list_head("s", false).expect("head").map(|h| h.head.resource_version).as_deref(),
            Some("6")
        );
    }

    fn put_list_replaces_items<S: Store>(store: &mut S) {
        store
            .apply(vec![put_list("s", "a", vec![item("n/a", "1"), item("n/b", "1")])])
            .expect("put");
        store.apply(vec![put_list("s", "a", vec![item("n/c", "2")])]).expect("replace");
        assert_eq!(store.list_items("s").expect("items"), vec![item("n/c", "2")]);
        assert_eq!(store.totals().entries, 1);
    }

    fn item_changes_need_a_list<S: Store>(store: &mut S) {
        store
            .apply(vec![
                Change::PutItem { scope: "none".into(), item: item("n/a", "1") },
                Change::SetListVersion { scope: "none".into(), resource_version: "6".into() },
            ])
            .expect("no-op");
        assert_eq!(store.list_head("none", false).expect("head"), None);
        assert!(store.list_items("none").expect("items").is_empty());
        assert_eq!(store.totals(), Totals::default());
    }

    fn totals_follow_changes<S: Store>(store: &mut S) {
        let entry =
            Change::PutEntry { key: "k".into(), owner: owner("a"), response: response("body") };
        store.apply(vec![entry, put_list("s", "a", vec![item("n/a", "1")])]).expect("put");
        let expected = entry_bytes("k", &response("body"))
            + head_bytes("s", &head("1"))
            + item_bytes(&item("n/a", "1"));
        assert_eq!(store.totals(), Totals { entries: 2, bytes: expected });
        store
            .apply(vec![Change::PutItem { scope: "s".into(), item: item("n/b", "1") }])
            .expect("item");
        assert_eq!(store.totals().bytes, expected + item_bytes(&item("n/b", "1")));
        store
            .apply(vec![
                Change::RemoveEntry { key: "k".into() },
                Change::RemoveItem { scope: "s".into(), key: "n/a".into() },
            ])
            .expect("remove");
        assert_eq!(
            store.totals(),
            Totals {
                entries: 1,
                bytes: head_bytes("s", &head("1")) + item_bytes(&item("n/b", "1"))
            }
        );
    }

    fn eviction_removes_least_recently_used<S: Store>(store: &mut S) {
        for key in ["old", "mid", "new"] {
            let change = Change::PutEntry {
                key: key.into(),
                owner: owner("a"),
                response: response(&"x".repeat(100)),
            };
            store.apply(vec![change]).expect("put");
        }
        store.apply(vec![put_list("list", "a", vec![item("n/a", "1")])]).expect("list");
        assert!(store.entry("old", true).expect("touch").is_some());
        let per_entry = entry_bytes("old", &response(&"x".repeat(100)));
        let target = store.totals().bytes - per_entry;
        let evicted = store.evict_to(target).expect("evict");
        assert_eq!(evicted, 1);
        assert!(store.entry("mid", false).expect("read").is_none(), "mid was least recently used");
        assert!(store.entry("old", false).expect("read").is_some(), "old was touched");
        store.evict_to(0).expect("evict all");
        assert_eq!(store.totals(), Totals::default());
        assert!(store.list_head("list", false).expect("head").is_none());
        assert!(store.list_items("list").expect("items").is_empty());
    }

    fn keys_are_found_by_what_they_contain<S: Store>(store: &mut S) {
        let entry = |key: &str| Change::PutEntry {
            key: key.into(),
            owner: owner("a"),
            response: response("1"),
        };
        store
            .apply(vec![
                entry("1:a\n/ns/x/pods/p\n"),
                entry("1:b\n/ns/x/pods/q\n"),
                entry("1:a\n/ns/y/pods/p\n"),
                put_list("1:a\n/ns/x/pods\nl=", "a", vec![item("x/p", "1")]),
                put_list("1:b\n/pods\nl=", "b", vec![item("x/p", "1")]),
            ])
            .expect("put");
        let mut found = store.keys_containing("\n/ns/x/pods").expect("keys");
        found.sort();
        assert_eq!(
            found,
            vec![
                StoredKey::Entry("1:a\n/ns/x/pods/p\n".into()),
                StoredKey::Entry("1:b\n/ns/x/pods/q\n".into()),
                StoredKey::List("1:a\n/ns/x/pods\nl=".into()),
            ]
        );
        assert_eq!(
            store.keys_containing("\n/pods\n").expect("keys"),
            vec![StoredKey::List("1:b\n/pods\nl=".into())]
        );
        assert!(store.keys_containing("%").expect("keys").is_empty(), "no pattern syntax");
    }

    fn summary_counts_per_identity<S: Store>(store: &mut S) {
        store
            .apply(vec![
                Change::PutEntry { key: "k1".into(), owner: owner("a"), response: response("1") },
                Change::PutEntry { key: "k2".into(), owner: owner("a"), response: response("2") },
                Change::PutEntry { key: "k3".into(), owner: owner("b"), response: response("3") },
                put_list("s", "a", vec![item("n/a", "1"), item("n/b", "1")]),
            ])
            .expect("put");
        let mut rows = store.summary().expect("summary");
        rows.sort_by(|x, y| x.identity.cmp(&y.identity));
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].identity.as_str(), rows[0].entries, rows[0].lists, rows[0].list_items),
            ("a", 2, 1, 2)
        );
        assert_eq!((rows[1].identity.as_str(), rows[1].entries, rows[1].lists), ("b", 1, 0));
    }

    fn stored_times_follow_answers_and_refreshes<S: Store>(store: &mut S) {
        let entry = |body: &str, stored_at| Change::PutEntry {
            key: "k".into(),
            owner: owner("a"),
            response: CachedResponse { stored_at, ..response(body) },
        };
        let entry_time =
            |store: &mut S| store.entry("k", false).expect("read").map(|e| e.stored_at);
        let list_time =
            |store: &mut S| store.list_head("s", false).expect("head").map(|h| h.stored_at);
        store
            .apply(vec![entry("one", 100), put_list_at("s", "a", vec![item("n/a", "1")], 110)])
            .expect("put");
        assert_eq!((entry_time(store), list_time(store)), (Some(100), Some(110)));

        // A write's answer changes one item: the rest of the list is no fresher.
        store
            .apply(vec![
                Change::PutItem { scope: "s".into(), item: item("n/b", "2") },
                Change::RemoveItem { scope: "s".into(), key: "n/a".into() },
                Change::SetListVersion { scope: "s".into(), resource_version: "2".into() },
            ])
            .expect("items");
        assert_eq!(list_time(store), Some(110), "item changes alone keep the list's time");

        let totals = store.totals();
        store
            .apply(vec![
                Change::Refresh { key: StoredKey::List("s".into()), stored_at: 250 },
                Change::Refresh { key: StoredKey::Entry("k".into()), stored_at: 300 },
                Change::Refresh { key: StoredKey::Entry("absent".into()), stored_at: 400 },
                Change::Refresh { key: StoredKey::List("absent".into()), stored_at: 400 },
            ])
            .expect("refresh");
        assert_eq!((entry_time(store), list_time(store)), (Some(300), Some(250)));
        assert_eq!(store.totals(), totals, "a refresh stores nothing new");
        assert_eq!(store.entry("absent", false).expect("read"), None);
        assert_eq!(store.list_head("absent", false).expect("head"), None);
        assert_eq!(
            store.entry("k", false).expect("read").map(|e| e.body),
            Some(b"one".to_vec()),
            "a refresh keeps the answer"
        );
        assert_eq!(store.list_items("s").expect("items"), vec![item("n/b", "2")]);

        // A new answer brings its own time, even an earlier one (the clock was set back).
        store.apply(vec![entry("two", 50), put_list_at("s", "a", Vec::new(), 60)]).expect("new");
        assert_eq!((entry_time(store), list_time(store)), (Some(50), Some(60)));
    }
}
