//! What the cache thread does with each message, over any `Store`: storing responses
//! (complete JSON and protobuf lists decomposed, everything else exact), answering lookups, feeding
//! watch streams, applying the answers to writes, and keeping the total size under its cap.

use std::collections::HashMap;

use super::key::{ReadKey, WatchRequest};
use super::store::{Change, Owner, Store, StoreError, StoredHead, StoredKey, SummaryRow, Totals};
use super::watch::{self, WatchStream};
use super::wire::Wire;
use super::write::{self, WriteAnswer};
use super::{CachedResponse, Lookup, Reply};
use crate::clock::unix_seconds;

/// Fingerprints remembered to skip re-storing unchanged answers, at most.
const MAX_FINGERPRINTS: usize = 16 * 1024;

pub struct Engine<S: Store> {
    store: S,
    max_bytes: u64,
    watches: HashMap<u64, WatchStream>,
    /// Store key → fingerprint of the answer last stored under it, and where it went.
    /// Clients re-read the same lists all the time; storing (and re-splitting) an identical
    /// list is waste: it is only marked current.
    stored_fingerprints: HashMap<String, (u64, StoredKey)>,
    /// Unix seconds, the time answers are stamped with (tests set their own).
    clock: fn() -> u64,
}

impl<S: Store> Engine<S> {
    pub fn new(store: S, max_bytes: u64) -> Engine<S> {
        Engine {
            store,
            max_bytes,
            watches: HashMap::new(),
            stored_fingerprints: HashMap::new(),
            clock: unix_seconds,
        }
    }

    /// Stores a 200 answer: a complete list as its scope's list, anything else as is.
    pub fn store_response(
        &mut self,
        key: &ReadKey,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), StoreError> {
        let store_key = key.store_key();
        let fingerprint = fingerprint(content_type, &body);
        let now = (self.clock)();
        match self.stored_fingerprints.get(&store_key) {
            Some((known, stored)) if *known == fingerprint => {
                let refresh = Change::Refresh { key: stored.clone(), stored_at: now };
                return self.store.apply(vec![refresh]);
            }
            _ => {}
        }
        let owner =
            Owner { identity: key.identity().to_string(), resource: key.resource().to_string() };
        let complete_list = key.scope().and_then(|scope| {
            let wire = Wire::of_content_type(content_type).filter(|w| Some(*w) == scope.wire())?;
            Some((scope, wire.decompose(content_type, &body)?))
        });
        let (change, stored) = match complete_list {
            Some((scope, (head, items))) => {
                let scope = scope.store_key();
                let stored = StoredKey::List(scope.clone());
                (Change::PutList { scope, owner, head, items, stored_at: now }, stored)
            }
            None => {
                let content_type = content_type.to_string();
                let response = CachedResponse { status: 200, content_type, body, stored_at: now };
                let stored = StoredKey::Entry(store_key.clone());
                (Change::PutEntry { key: store_key.clone(), owner, response }, stored)
            }
        };
        self.store.apply(vec![change])?;
        if self.stored_fingerprints.len() >= MAX_FINGERPRINTS {
            self.stored_fingerprints.clear();
        }
        self.stored_fingerprints.insert(store_key, (fingerprint, stored));
        self.evict_if_needed()
    }

    /// Answers from the cache in the representation asked for, or else in JSON when the
    /// client accepts that too.
    pub fn answer(&mut self, lookup: &Lookup) -> Result<Reply, StoreError> {
        let reply = match lookup {
            Lookup::Read(key) => self.read(key)?,
            Lookup::WatchStart(request) => watch::replay(&mut self.store, request)?,
        };
        if !matches!(reply, Reply::Miss) {
            return Ok(reply);
        }
        match lookup {
            Lookup::Read(key) => key.json_fallback().map_or(Ok(reply), |json| self.read(&json)),
            Lookup::WatchStart(request) => request
                .json_fallback()
                .map_or(Ok(reply), |json| watch::replay(&mut self.store, &json)),
        }
    }

    fn read(&mut self, key: &ReadKey) -> Result<Reply, StoreError> {
        if let Some(scope) = key.scope() {
            let scope_key = scope.store_key();
            if let Some(StoredHead { head, stored_at }) = self.store.list_head(&scope_key, true)? {
                let items = self.store.list_items(&scope_key)?;
                let Some(body) = Wire::rebuild(&head, &items) else {
                    return Ok(Reply::Failed(format!(
                        "the cached list of {} is damaged",
                        key.path()
                    )));
                };
                let content_type = head.content_type;
                return Ok(Reply::Hit(CachedResponse {
                    status: 200,
                    content_type,
                    body,
                    stored_at,
                }));
            }
        }
        Ok(match self.store.entry(&key.store_key(), true)? {
            Some(response) => Reply::Hit(response),
            None => Reply::Miss,
        })
    }

    pub fn watch_opened(&mut self, watch_id: u64, request: &WatchRequest) {
        if let Some(stream) = WatchStream::new(request) {
            self.watches.insert(watch_id, stream);
        }
    }

    pub fn watch_bytes(&mut self, watch_id: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(stream) = self.watches.get_mut(&watch_id) else {
            return Ok(());
        };
        stream.feed(&mut self.store, bytes, (self.clock)())?;
        self.evict_if_needed()
    }

    /// Stops applying a stream whose bytes were dropped (a gap would corrupt its list).
    pub fn watch_interrupted(&mut self, watch_id: u64) {
        if let Some(stream) = self.watches.get_mut(&watch_id) {
            stream.stop("its events were dropped (cache queue full)");
        }
    }

    pub fn watch_closed(&mut self, watch_id: u64) {
        self.watches.remove(&watch_id);
    }

    /// Applies what the cloud answered to a write of one object (see `write`).
    pub fn write_answered(&mut self, answer: &WriteAnswer) -> Result<(), StoreError> {
        let changes = write::changes(&mut self.store, answer, (self.clock)())?;
        if changes.is_empty() {
            return Ok(());
        }
        log::debug!(
            "cache: {:?} {} changed {} cached answers and list items",
            answer.write.method(),
            answer.write.path(),
            changes.len()
        );
        self.store.apply(changes)?;
        // Some stored answers no longer are what their fingerprints describe: the same
        // answer coming again must be stored, not skipped.
        self.stored_fingerprints.clear();
        self.evict_if_needed()
    }

    /// Evicts down to 90% of the cap once it is exceeded, so eviction runs in batches.
    fn evict_if_needed(&mut self) -> Result<(), StoreError> {
        if self.store.totals().bytes > self.max_bytes {
            // Evicted answers must be stored again when they come back.
            self.stored_fingerprints.clear();
            let evicted = self.store.evict_to(self.max_bytes / 10 * 9)?;
            log::debug!("cache: evicted {evicted} least recently used entries");
        }
        Ok(())
    }

    pub fn totals(&self) -> Totals {
        self.store.totals()
    }

    pub fn summary(&mut self) -> Result<Vec<SummaryRow>, StoreError> {
        self.store.summary()
    }
}

fn fingerprint(content_type: &str, body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    content_type.hash(&mut hasher);
    body.hash(&mut hasher);
    hasher.finish()
}

/// Behaviour tests, run against both stores.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::{Classified, classify, classify_write};
    use crate::cache::memory::MemoryStore;
    use crate::cache::sqlite::SqliteStore;
    use crate::cache::sqlite::tests::temp_dir;
    use serde_json::{Value, json};
    use std::cell::Cell;

    thread_local! {
        /// The clock of `test_clock`, per test thread (tests run in parallel).
        static NOW: Cell<u64> = const { Cell::new(0) };
    }

    fn test_clock() -> u64 {
        NOW.with(Cell::get)
    }

    fn set_now(seconds: u64) {
        NOW.with(|now| now.set(seconds));
    }

    const KUBELET: &str = "cn:system:node:edge-1";

    fn read_key(identity: &str, target: &str, accept: Option<&str>) -> ReadKey {
        match classify(identity, "GET", target, accept) {
            Classified::Read(key) => key,
            other => panic!("{target}: not a read: {other:?}"),
        }
    }

    fn watch_request(identity: &str, target: &str) -> WatchRequest {
        match classify(identity, "GET", target, None) {
            Classified::Watch(request) => request,
            other => panic!("{target}: not a watch: {other:?}"),
        }
    }

    fn pod(name: &str, rv: &str, phase: &str) -> Value {
        json!({"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
               "status": {"phase": phase}})
    }

    /// A list the way kube-apiserver writes it: kind, apiVersion, metadata, items; newline.
    fn pod_list(rv: &str, pods: &[Value]) -> Vec<u8> {
        let items: Vec<String> = pods.iter().map(Value::to_string).collect();
        format!(
            "{{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[{}]}}\n",
            items.join(",")
        )
        .into_bytes()
    }

    fn event(kind: &str, object: &Value) -> Vec<u8> {
        let mut line = json!({"type": kind, "object": object}).to_string().into_bytes();
        line.push(b'\n');
        line
    }

    fn hit<S: Store>(engine: &mut Engine<S>, key: &ReadKey) -> Vec<u8> {
        match engine.answer(&Lookup::Read(key.clone())).expect("lookup") {
            Reply::Hit(response) => response.body,
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    fn hit_json<S: Store>(engine: &mut Engine<S>, key: &ReadKey) -> Value {
        serde_json::from_slice(&hit(engine, key)).expect("json body")
    }

    fn is_miss<S: Store>(engine: &mut Engine<S>, key: &ReadKey) -> bool {
        matches!(engine.answer(&Lookup::Read(key.clone())).expect("lookup"), Reply::Miss)
    }

    fn run_all<S: Store>(make: impl Fn() -> S) {
        let engine = || Engine::new(make(), 1 << 30);
        complete_list_answers_any_limit(&mut engine());
        pages_are_exact_entries(&mut engine());
        other_representations_replay_byte_for_byte(&mut engine());
        identities_are_isolated(&mut engine());
        watch_events_update_list_and_object(&mut engine());
        stale_and_already_listed_events_are_ignored(&mut engine());
        selector_scopes_do_not_delete_objects(&mut engine());
        events_split_anywhere_apply_the_same(&mut engine());
        replays_follow_requested_versions(&mut engine());
        initial_events_prune_deleted_objects(&mut engine());
        interrupted_streams_stop_updating(&mut engine());
        large_bodies_are_stored_whole(&mut engine());
        deleted_objects_leave_every_identitys_reads(&mut engine());
        terminating_objects_replace_older_cached_states(&mut engine());
        unclear_delete_answers_change_nothing(&mut engine());
        stored_times_follow_answers_watch_events_and_bookmarks(&mut engine());
        size_cap_evicts_least_recently_used(&mut Engine::new(make(), 1200));
    }

    #[test]
    fn memory_engine_behaviour() {
        run_all(MemoryStore::new);
    }

    #[test]
    fn sqlite_engine_behaviour() {
        run_all(|| SqliteStore::open(&temp_dir("engine")).expect("open"));
    }

    fn complete_list_answers_any_limit<S: Store>(engine: &mut Engine<S>) {
        let body = pod_list("100", &[pod("a", "90", "Running"), pod("b", "95", "Pending")]);
        let asked =
            read_key(KUBELET, "/api/v1/namespaces/default/pods?limit=500&resourceVersion=0", None);
        engine.store_response(&asked, "application/json", body.clone()).expect("store");
        assert_eq!(hit(engine, &asked), body, "byte-identical");
        let other_limit = read_key(KUBELET, "/api/v1/namespaces/default/pods?limit=1", None);
        assert_eq!(hit(engine, &other_limit), body);
        let selected =
            read_key(KUBELET, "/api/v1/namespaces/default/pods?labelSelector=app%3Dx", None);
        assert!(is_miss(engine, &selected), "another selector is another scope");
    }

    fn pages_are_exact_entries<S: Store>(engine: &mut Engine<S>) {
        let page = br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"5","continue":"tok"},"items":[]}"#;
        let first = read_key(KUBELET, "/api/v1/pods?limit=1", None);
        engine.store_response(&first, "application/json", page.to_vec()).expect("store");
        assert_eq!(hit(engine, &first), page);
        assert!(
            is_miss(engine, &read_key(KUBELET, "/api/v1/pods", None)),
            "a page is not the list"
        );
        let next = read_key(KUBELET, "/api/v1/pods?limit=1&continue=tok", None);
        let last = pod_list("5", &[pod("b", "4", "Running")]);
        engine.store_response(&next, "application/json", last.clone()).expect("store");
        assert_eq!(hit(engine, &next), last);
        assert!(
            is_miss(engine, &read_key(KUBELET, "/api/v1/pods", None)),
            "a last page is not the list"
        );
    }

    fn other_representations_replay_byte_for_byte<S: Store>(engine: &mut Engine<S>) {
        let table_accept = Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json");
        let table = read_key(KUBELET, "/api/v1/namespaces/default/pods", table_accept);
        let table_body = br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[]}"#.to_vec();
        engine.store_response(&table, "application/json", table_body.clone()).expect("store");
        let proto = read_key(
            KUBELET,
            "/api/v1/namespaces/default/pods",
            Some("application/vnd.kubernetes.protobuf"),
        );
        let proto_body = vec![0x6b, 0x38, 0x73, 0x00, 0xff, 0x0a];
        engine
            .store_response(&proto, "application/vnd.kubernetes.protobuf", proto_body.clone())
            .expect("store");
        assert_eq!(hit(engine, &table), table_body);
        assert_eq!(hit(engine, &proto), proto_body);
        assert!(is_miss(engine, &read_key(KUBELET, "/api/v1/namespaces/default/pods", None)));
    }

    fn identities_are_isolated<S: Store>(engine: &mut Engine<S>) {
        let secret = read_key(KUBELET, "/api/v1/namespaces/default/secrets/s", None);
        engine
            .store_response(&secret, "application/json", b"{\"kind\":\"Secret\"}".to_vec())
            .expect("store");
        let list = read_key(KUBELET, "/api/v1/namespaces/default/secrets", None);
        engine.store_response(&list, "application/json", pod_list("1", &[])).expect("store");
        let token = "token:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert!(is_miss(engine, &read_key(token, "/api/v1/namespaces/default/secrets/s", None)));
        assert!(is_miss(engine, &read_key(token, "/api/v1/namespaces/default/secrets", None)));
        let replay = engine.answer(&Lookup::WatchStart(watch_request(
            token,
            "/api/v1/namespaces/default/secrets?watch=1",
        )));
        assert!(matches!(replay.expect("lookup"), Reply::Miss));
    }

    fn watch_events_update_list_and_object<S: Store>(engine: &mut Engine<S>) {
        let list_key = read_key(KUBELET, "/api/v1/namespaces/default/pods?limit=500", None);
        let body = pod_list("100", &[pod("a", "90", "Pending"), pod("b", "95", "Running")]);
        engine.store_response(&list_key, "application/json", body).expect("store list");
        let get_a = read_key(KUBELET, "/api/v1/namespaces/default/pods/a", None);
        engine
            .store_response(
                &get_a,
                "application/json",
                format!("{}\n", pod("a", "90", "Pending")).into_bytes(),
            )
            .expect("get");
        let get_b = read_key(KUBELET, "/api/v1/namespaces/default/pods/b", None);
        engine
            .store_response(
                &get_b,
                "application/json",
                pod("b", "95", "Running").to_string().into_bytes(),
            )
            .expect("get");

        let request = watch_request(
            KUBELET,
            "/api/v1/namespaces/default/pods?watch=true&resourceVersion=100&allowWatchBookmarks=true",
        );
        engine.watch_opened(1, &request);
        let mut stream = event("MODIFIED", &pod("a", "101", "Running"));
        stream.extend(event("ADDED", &pod("c", "102", "Pending")));
        stream.extend(event("DELETED", &pod("b", "103", "Running")));
        stream.extend(event(
            "BOOKMARK",
            &json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "110"}}),
        ));
        stream.extend(event("ERROR", &json!({"kind": "Status", "code": 500})));
        engine.watch_bytes(1, &stream).expect("events");
        engine.watch_closed(1);

        let expected: Value = serde_json::from_slice(&pod_list(
            "110",
            &[pod("a", "101", "Running"), pod("c", "102", "Pending")],
        ))
        .expect("json");
        assert_eq!(hit_json(engine, &list_key), expected, "rebuilt as kube would return it");
        assert_eq!(hit(engine, &get_a), format!("{}\n", pod("a", "101", "Running")).into_bytes());
        assert!(is_miss(engine, &get_b), "deleted object's GET is gone");
        assert!(
            is_miss(engine, &read_key(KUBELET, "/api/v1/namespaces/default/pods/c", None)),
            "GETs are not invented"
        );
    }

    fn stale_and_already_listed_events_are_ignored<S: Store>(engine: &mut Engine<S>) {
        let list_key = read_key(KUBELET, "/api/v1/namespaces/default/pods", None);
        engine
            .store_response(
                &list_key,
                "application/json",
                pod_list("100", &[pod("a", "90", "Running")]),
            )
            .expect("store");
        let get_a = read_key(KUBELET, "/api/v1/namespaces/default/pods/a", None);
        engine
            .store_response(
                &get_a,
                "application/json",
                pod("a", "99", "Running").to_string().into_bytes(),
            )
            .expect("get");
        engine.watch_opened(
            2,
            &watch_request(KUBELET, "/api/v1/namespaces/default/pods?watch=1&resourceVersion=80"),
        );
        let mut stream = event("ADDED", &pod("gone", "85", "Running"));
        stream.extend(event("MODIFIED", &pod("a", "95", "Failed")));
        engine.watch_bytes(2, &stream).expect("events");
        let expected: Value =
            serde_json::from_slice(&pod_list("100", &[pod("a", "90", "Running")])).expect("json");
        assert_eq!(hit_json(engine, &list_key), expected);
        assert_eq!(
            hit_json(engine, &get_a),
            pod("a", "99", "Running"),
            "older MODIFIED ignored for the GET"
        );
    }

    fn selector_scopes_do_not_delete_objects<S: Store>(engine: &mut Engine<S>) {
        let target = "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb";
        let list_key = read_key(KUBELET, target, None);
        engine
            .store_response(
                &list_key,
                "application/json",
                pod_list("100", &[pod("a", "90", "Running")]),
            )
            .expect("store");
        let get_a = read_key(KUBELET, "/api/v1/namespaces/default/pods/a", None);
        engine
            .store_response(
                &get_a,
                "application/json",
                pod("a", "90", "Running").to_string().into_bytes(),
            )
            .expect("get");
        engine.watch_opened(
            3,
            &watch_request(KUBELET, &format!("{target}&watch=true&resourceVersion=100")),
        );
        engine.watch_bytes(3, &event("DELETED", &pod("a", "101", "Running"))).expect("event");
        assert_eq!(hit_json(engine, &list_key)["items"], json!([]));
        // The event cannot tell "deleted" from "stopped matching": the GET is left as it was.
        assert_eq!(hit_json(engine, &get_a), pod("a", "90", "Running"));
        let unfiltered = read_key(KUBELET, "/api/v1/namespaces/default/pods", None);
        assert!(is_miss(engine, &unfiltered));
    }

    fn events_split_anywhere_apply_the_same<S: Store>(engine: &mut Engine<S>) {
        let list_key = read_key(KUBELET, "/api/v1/configmaps", None);
        engine.store_response(&list_key, "application/json", pod_list("10", &[])).expect("store");
        engine.watch_opened(
            4,
            &watch_request(KUBELET, "/api/v1/configmaps?watch=1&resourceVersion=10"),
        );
        let mut stream = event("ADDED", &pod("x", "11", "a\nb"));
        stream.extend(event("ADDED", &pod("y", "12", "{}")));
        for byte in &stream {
            engine.watch_bytes(4, std::slice::from_ref(byte)).expect("byte");
        }
        let expected: Value = serde_json::from_slice(&pod_list(
            "12",
            &[pod("x", "11", "a\nb"), pod("y", "12", "{}")],
        ))
        .expect("json");
        assert_eq!(hit_json(engine, &list_key), expected);
    }

    fn replays_follow_requested_versions<S: Store>(engine: &mut Engine<S>) {
        let list_key =
            read_key(KUBELET, "/api/v1/nodes?fieldSelector=metadata.name%3Dedge-1", None);
        let node = json!({"kind": "Node", "metadata": {"name": "edge-1", "resourceVersion": "40"}});
        let body = format!(
            "{{\"kind\":\"NodeList\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"50\"}},\"items\":[{node}]}}"
        );
        engine.store_response(&list_key, "application/json", body.into_bytes()).expect("store");
        let base = "/api/v1/nodes?fieldSelector=metadata.name%3Dedge-1&watch=true";
        let start = |engine: &mut Engine<S>, query: &str| {
            engine
                .answer(&Lookup::WatchStart(watch_request(KUBELET, &format!("{base}{query}"))))
                .expect("lookup")
        };
        let Reply::WatchReplay { initial_events, list_resource_version, bookmark_event, .. } =
            start(engine, "")
        else {
            panic!("replay expected");
        };
        assert_eq!(
            initial_events,
            format!("{{\"type\":\"ADDED\",\"object\":{node}}}\n").into_bytes()
        );
        assert_eq!(list_resource_version, "50");
        let bookmark: Value = serde_json::from_slice(&bookmark_event).expect("bookmark");
        assert_eq!(
            bookmark["object"],
            json!({"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": "50"}})
        );
        assert!(
            matches!(start(engine, "&resourceVersion=0"), Reply::WatchReplay { ref initial_events, .. } if !initial_events.is_empty())
        );
        assert!(
            matches!(start(engine, "&resourceVersion=50"), Reply::WatchReplay { ref initial_events, .. } if initial_events.is_empty())
        );
        assert!(
            matches!(start(engine, "&resourceVersion=60"), Reply::WatchReplay { ref initial_events, .. } if initial_events.is_empty())
        );
        assert!(matches!(start(engine, "&resourceVersion=49"), Reply::WatchExpired { .. }));
        let Reply::WatchReplay { initial_events, .. } =
            start(engine, "&resourceVersion=50&sendInitialEvents=true")
        else {
            panic!("replay expected");
        };
        let lines: Vec<Value> = initial_events
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        let other_scope = watch_request(KUBELET, "/api/v1/nodes?watch=true");
        assert!(matches!(
            engine.answer(&Lookup::WatchStart(other_scope)).expect("lookup"),
            Reply::Miss
        ));
    }

    fn initial_events_prune_deleted_objects<S: Store>(engine: &mut Engine<S>) {
        let list_key = read_key(KUBELET, "/api/v1/services", None);
        let body = pod_list(
            "100",
            &[pod("kept", "90", "a"), pod("deleted", "91", "b"), pod("changed", "92", "c")],
        );
        engine.store_response(&list_key, "application/json", body).expect("store");
        engine.watch_opened(5, &watch_request(KUBELET, "/api/v1/services?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"));
        let mut stream = event("ADDED", &pod("changed", "120", "c2"));
        stream.extend(event("ADDED", &pod("kept", "90", "a")));
        stream.extend(event("ADDED", &pod("new", "110", "n")));
        let end = json!({"kind": "Pod", "apiVersion": "v1",
                         "metadata": {"resourceVersion": "130", "annotations": {"k8s.io/initial-events-end": "true"}}});
        stream.extend(event("BOOKMARK", &end));
        engine.watch_bytes(5, &stream).expect("events");
        let expected: Value = serde_json::from_slice(&pod_list(
            "130",
            &[pod("changed", "120", "c2"), pod("kept", "90", "a"), pod("new", "110", "n")],
        ))
        .expect("json");
        assert_eq!(hit_json(engine, &list_key), expected);
    }

    fn interrupted_streams_stop_updating<S: Store>(engine: &mut Engine<S>) {
        let list_key = read_key(KUBELET, "/api/v1/endpoints", None);
        engine.store_response(&list_key, "application/json", pod_list("10", &[])).expect("store");
        engine.watch_opened(
            6,
            &watch_request(KUBELET, "/api/v1/endpoints?watch=1&resourceVersion=10"),
        );
        let line = event("ADDED", &pod("x", "11", "a"));
        engine.watch_bytes(6, &line[..5]).expect("partial");
        engine.watch_interrupted(6);
        engine.watch_bytes(6, &line[5..]).expect("rest");
        engine.watch_bytes(6, &event("ADDED", &pod("y", "12", "a"))).expect("later");
        assert_eq!(hit_json(engine, &list_key)["items"], json!([]));
        engine.watch_opened(
            7,
            &watch_request(KUBELET, "/api/v1/endpoints?watch=1&resourceVersion=10"),
        );
        engine.watch_bytes(7, b"not json\n").expect("garbage");
        engine.watch_bytes(7, &event("ADDED", &pod("z", "13", "a"))).expect("after garbage");
        assert_eq!(hit_json(engine, &list_key)["items"], json!([]));
    }

    fn large_bodies_are_stored_whole<S: Store>(engine: &mut Engine<S>) {
        let big: Vec<Value> = (0..20_000)
            .map(|i| pod(&format!("pod-{i:05}"), &i.to_string(), &"x".repeat(250)))
            .collect();
        let body = pod_list("30000", &big);
        assert!(body.len() > 5 << 20);
        let key = read_key(KUBELET, "/api/v1/pods", None);
        engine.store_response(&key, "application/json", body.clone()).expect("store");
        assert_eq!(hit(engine, &key), body);
        let opaque = read_key(KUBELET, "/openapi/v2", None);
        engine.store_response(&opaque, "application/json", body.clone()).expect("store");
        assert_eq!(hit(engine, &opaque), body);
    }

    const TOKEN: &str = "token:9f86d081884c7d659a2feaa0c55ad015";
    const DEFAULT_PODS: &str = "/api/v1/namespaces/default/pods";
    const TABLE: Option<&str> = Some("application/json;as=Table;v=v1;g=meta.k8s.io");

    fn store<S: Store>(engine: &mut Engine<S>, key: &ReadKey, body: Vec<u8>) {
        engine.store_response(key, "application/json", body).expect("store");
    }

    fn object_body(object: &Value) -> Vec<u8> {
        format!("{object}\n").into_bytes()
    }

    /// The cloud's answer to `DELETE <target>`.
    fn delete<S: Store>(
        engine: &mut Engine<S>,
        target: &str,
        status: u16,
        content_type: &str,
        body: &[u8],
    ) {
        let write = classify_write("DELETE", target).expect("an object DELETE");
        let answer = WriteAnswer {
            write,
            status,
            content_type: content_type.to_string(),
            body: body.to_vec(),
        };
        engine.write_answered(&answer).expect("write answer");
    }

    fn names<S: Store>(engine: &mut Engine<S>, key: &ReadKey) -> Vec<String> {
        let list = hit_json(engine, key);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .iter()
            .map(|item| item["metadata"]["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn terminating(name: &str, rv: &str, grace: u64, finalizers: &[&str]) -> Value {
        let mut object = pod(name, rv, "Running");
        object["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
        object["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if !finalizers.is_empty() {
            object["metadata"]["finalizers"] = json!(finalizers);
        }
        object
    }

    fn deleted_objects_leave_every_identitys_reads<S: Store>(engine: &mut Engine<S>) {
        let pods = [pod("a", "90", "Running"), pod("b", "95", "Running")];
        let list = read_key(KUBELET, &format!("{DEFAULT_PODS}?limit=500"), None);
        let on_node = read_key(KUBELET, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None);
        let token_list = read_key(TOKEN, &format!("{DEFAULT_PODS}?labelSelector=app%3Dx"), None);
        for key in [&list, &on_node, &token_list] {
            store(engine, key, pod_list("100", &pods));
        }
        let get_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a"), None);
        let token_get_a = read_key(TOKEN, &format!("{DEFAULT_PODS}/a?resourceVersion=0"), None);
        let status_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a/status"), None);
        let table_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a"), TABLE);
        for key in [&get_a, &token_get_a, &status_a] {
            store(engine, key, object_body(&pods[0]));
        }
        store(engine, &table_a, br#"{"kind":"Table","rows":[]}"#.to_vec());
        let get_b = read_key(KUBELET, &format!("{DEFAULT_PODS}/b"), None);
        store(engine, &get_b, object_body(&pods[1]));
        let other_namespace = read_key(KUBELET, "/api/v1/namespaces/other/pods/a", None);
        store(engine, &other_namespace, object_body(&pod("a", "80", "Running")));

        // The deleted object answered as it was removed (no deletionTimestamp).
        let removed = object_body(&pod("a", "101", "Running"));
        delete(engine, &format!("{DEFAULT_PODS}/a"), 200, "application/json", &removed);
        for key in [&get_a, &token_get_a, &status_a, &table_a] {
            assert!(is_miss(engine, key), "{}: still cached", key.path());
        }
        for key in [&list, &on_node, &token_list] {
            assert_eq!(names(engine, key), ["b"], "{}", key.path());
            assert_eq!(
                hit_json(engine, key)["metadata"]["resourceVersion"],
                "100",
                "list version kept"
            );
        }
        assert_eq!(hit_json(engine, &get_b), pods[1], "another object is untouched");
        assert!(
            !is_miss(engine, &other_namespace),
            "the same name in another namespace is untouched"
        );

        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": "b", "kind": "pods"}});
        delete(
            engine,
            &format!("{DEFAULT_PODS}/b?gracePeriodSeconds=0"),
            200,
            "application/json",
            &object_body(&status),
        );
        assert!(is_miss(engine, &get_b));
        assert!(names(engine, &list).is_empty());

        // kubelet's last DELETE of a pod it stopped: marked, but no grace period left.
        let get_c = read_key(KUBELET, &format!("{DEFAULT_PODS}/c"), None);
        store(engine, &get_c, object_body(&pod("c", "90", "Running")));
        let finished = object_body(&terminating("c", "120", 0, &[]));
        delete(
            engine,
            &format!("{DEFAULT_PODS}/c"),
            200,
            "application/json; charset=utf-8",
            &finished,
        );
        assert!(is_miss(engine, &get_c), "a pod removed by its final DELETE is gone");
    }

    fn terminating_objects_replace_older_cached_states<S: Store>(engine: &mut Engine<S>) {
        let list = read_key(KUBELET, DEFAULT_PODS, None);
        let on_node = read_key(TOKEN, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None);
        let pods = [pod("a", "90", "Running"), pod("c", "200", "Running")];
        store(engine, &list, pod_list("200", &pods));
        store(engine, &on_node, pod_list("200", &pods[..1]));
        let get_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a"), None);
        let token_get_a = read_key(TOKEN, &format!("{DEFAULT_PODS}/a"), None);
        store(engine, &get_a, object_body(&pods[0]));
        store(engine, &token_get_a, pods[0].to_string().into_bytes());
        let table_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a"), TABLE);
        let table = br#"{"kind":"Table","rows":[]}"#.to_vec();
        store(engine, &table_a, table.clone());

        let graceful = terminating("a", "150", 30, &[]);
        delete(
            engine,
            &format!("{DEFAULT_PODS}/a"),
            200,
            "application/json",
            &object_body(&graceful),
        );
        assert_eq!(hit(engine, &get_a), object_body(&graceful), "framed like the cached GET");
        assert_eq!(
            hit(engine, &token_get_a),
            graceful.to_string().into_bytes(),
            "every identity's copy"
        );
        assert_eq!(hit(engine, &table_a), table, "other representations are left as they are");
        for key in [&list, &on_node] {
            let cached = hit_json(engine, key);
            assert_eq!(cached["items"][0], graceful, "{}", key.path());
            assert_eq!(cached["metadata"]["resourceVersion"], "200", "list version kept");
        }

        // A cached state newer than the answer is kept; a list lacking the object gets none.
        let foreground = terminating("c", "150", 0, &["foregroundDeletion"]);
        delete(
            engine,
            &format!("{DEFAULT_PODS}/c"),
            202,
            "application/json",
            &object_body(&foreground),
        );
        assert_eq!(hit_json(engine, &list)["items"][1], pods[1], "newer list item kept");
        assert_eq!(names(engine, &on_node), ["a"], "no item invented");
        let get_d = read_key(KUBELET, &format!("{DEFAULT_PODS}/d"), None);
        let finalized = terminating("d", "150", 0, &["example.com/keep"]);
        delete(
            engine,
            &format!("{DEFAULT_PODS}/d"),
            200,
            "application/json",
            &object_body(&finalized),
        );
        assert!(is_miss(engine, &get_d), "no GET invented");
        assert_eq!(names(engine, &list), ["a", "c"]);
    }

    fn unclear_delete_answers_change_nothing<S: Store>(engine: &mut Engine<S>) {
        let list = read_key(KUBELET, DEFAULT_PODS, None);
        let get_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a"), None);
        let cached = pod("a", "300", "Running");
        store(engine, &list, pod_list("300", std::slice::from_ref(&cached)));
        store(engine, &get_a, object_body(&cached));
        let target = format!("{DEFAULT_PODS}/a");
        let removed = object_body(&pod("a", "301", "Running"));
        let not_found = object_body(&json!({"kind": "Status", "status": "Failure", "code": 404}));
        let answers: [(u16, &str, &[u8]); 7] = [
            (404, "application/json", &not_found),
            (409, "application/json", &removed),
            (
                200,
                "application/json",
                &object_body(&json!({"kind": "Status", "status": "Failure"})),
            ),
            (
                200,
                "application/vnd.kubernetes.protobuf",
                b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Status",
            ),
            (200, "application/json", &object_body(&pod("not-a", "301", "Running"))),
            (200, "application/json", b"{\"kind\":\"Pod\",\"metadata\":"),
            // Gone as of a state older than the cached one: the object was created again since.
            (200, "application/json", &object_body(&pod("a", "250", "Running"))),
        ];
        for (status, content_type, body) in answers {
            delete(engine, &target, status, content_type, body);
            assert_eq!(hit_json(engine, &get_a), cached, "{status} {content_type}");
            assert_eq!(names(engine, &list), ["a"], "{status} {content_type}");
        }
    }

    fn size_cap_evicts_least_recently_used<S: Store>(engine: &mut Engine<S>) {
        let keys: Vec<ReadKey> = (0..5)
            .map(|i| read_key(KUBELET, &format!("/api/v1/namespaces/default/pods/p{i}"), None))
            .collect();
        for key in &keys[..4] {
            engine.store_response(key, "application/json", vec![b'x'; 200]).expect("store");
        }
        hit(engine, &keys[0]);
        engine.store_response(&keys[4], "application/json", vec![b'x'; 200]).expect("store");
        assert!(engine.totals().bytes <= 1200);
        assert!(!is_miss(engine, &keys[0]), "recently read entry kept");
        assert!(is_miss(engine, &keys[1]), "least recently used entry evicted");
        assert!(!is_miss(engine, &keys[4]), "newest entry kept");
    }

    fn stored_at<S: Store>(engine: &mut Engine<S>, key: &ReadKey) -> u64 {
        match engine.answer(&Lookup::Read(key.clone())).expect("lookup") {
            Reply::Hit(response) => response.stored_at,
            other => panic!("{}: expected a hit, got {other:?}", key.path()),
        }
    }

    fn stored_times_follow_answers_watch_events_and_bookmarks<S: Store>(engine: &mut Engine<S>) {
        engine.clock = test_clock;
        let list = read_key(KUBELET, DEFAULT_PODS, None);
        let get_a = read_key(KUBELET, &format!("{DEFAULT_PODS}/a"), None);
        let get_b = read_key(KUBELET, &format!("{DEFAULT_PODS}/b"), None);
        let times = |engine: &mut Engine<S>| {
            [stored_at(engine, &list), stored_at(engine, &get_a), stored_at(engine, &get_b)]
        };
        set_now(1_000);
        store(engine, &list, pod_list("100", &[pod("a", "90", "Running"), pod("b", "95", "x")]));
        store(engine, &get_a, object_body(&pod("a", "90", "Running")));
        store(engine, &get_b, object_body(&pod("b", "95", "x")));
        assert_eq!(times(engine), [1_000, 1_000, 1_000]);

        set_now(1_100);
        store(engine, &get_b, object_body(&pod("b", "95", "x")));
        assert_eq!(times(engine), [1_000, 1_000, 1_100], "the same answer again is current");

        let request =
            watch_request(KUBELET, &format!("{DEFAULT_PODS}?watch=1&resourceVersion=100"));
        engine.watch_opened(1, &request);
        set_now(1_200);
        engine.watch_bytes(1, &event("MODIFIED", &pod("a", "101", "Running"))).expect("event");
        assert_eq!(times(engine), [1_200, 1_200, 1_100], "the event's list and object");

        set_now(1_300);
        engine.watch_bytes(1, &event("MODIFIED", &pod("a", "100", "Old"))).expect("stale");
        assert_eq!(times(engine), [1_200, 1_200, 1_100], "an event older than the list");

        let bookmark = |rv: &str| {
            event(
                "BOOKMARK",
                &json!({"kind": "Pod", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": rv}}),
            )
        };
        set_now(1_400);
        engine.watch_bytes(1, &bookmark("101")).expect("bookmark");
        assert_eq!(times(engine), [1_400, 1_200, 1_100], "nothing changed up to the bookmark");
        set_now(1_500);
        engine.watch_bytes(1, &bookmark("100")).expect("old bookmark");
        assert_eq!(times(engine), [1_400, 1_200, 1_100], "a bookmark older than the list");

        set_now(1_600);
        let graceful = object_body(&terminating("a", "150", 30, &[]));
        delete(engine, &format!("{DEFAULT_PODS}/a"), 200, "application/json", &graceful);
        assert_eq!(
            times(engine),
            [1_400, 1_600, 1_100],
            "a write's answer is the object's newest state, not the rest of the list's"
        );
    }
}
