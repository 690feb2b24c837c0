//! The response cache that keeps an edge node running while the cloud is unreachable: which
//! requests are cacheable (`key`), how complete lists are kept current from watch events
//! (`list`, `watch`) and from the answers to writes (`write`), the two stores (`sqlite`,
//! `memory`) behind one trait (`store`), and the helper thread the reactor talks to without
//! ever blocking (`thread`).
//!
//! Reactor usage: `classify` each request; store 200 answers of `Read`s with
//! `CacheHandle::store`; tee JSON and protobuf watch bodies with `watch_opened`/`watch_bytes`/`watch_closed`;
//! hand the answers of requests `classify_write` recognizes to `write_answered`; offline,
//! `lookup` and pick the answers up with `take_replies` when the waker fires.

mod engine;
#[cfg(test)]
mod engine_protobuf_tests;
mod json;
mod key;
mod list;
mod memory;
mod protobuf_list;
mod schema;
mod sqlite;
mod store;
mod thread;
mod watch;
mod wire;
mod write;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use key::{
    Classified, ListScope, ObjectWrite, ReadKey, Representation, STREAMING_SUBRESOURCES,
    WatchRequest, WriteMethod, classify, classify_write,
};
pub use thread::{CacheHandle, CacheReporter};
pub use wire::Wire;

/// Default cap on stored bytes.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default length of the write and lookup queues.
pub const DEFAULT_QUEUE_LEN: usize = 1024;

/// Where entries live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheKind {
    /// `<dir>/cache.db` (`--cache-type=file`).
    Sqlite { dir: PathBuf },
    /// Lost on restart (`--cache-type=memory`).
    Memory,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    pub kind: CacheKind,
    /// Least recently used entries are evicted beyond this many stored bytes.
    pub max_bytes: u64,
    /// Bounded queue length (writes and lookups each).
    pub queue_len: usize,
}

impl CacheConfig {
    /// A config with the default size cap and queue length.
    pub fn new(kind: CacheKind) -> CacheConfig {
        CacheConfig { kind, max_bytes: DEFAULT_MAX_BYTES, queue_len: DEFAULT_QUEUE_LEN }
    }
}

#[derive(Debug)]
pub enum CacheError {
    /// The lookup queue is full (the reactor answers 503).
    QueueFull,
    /// The SQLite store could not be opened even after moving a bad file aside.
    Open(String),
    /// The cache thread could not be started.
    Spawn(String),
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheError::QueueFull => f.write_str("cache queue is full"),
            CacheError::Open(reason) => write!(f, "cannot open the cache database: {reason}"),
            CacheError::Spawn(reason) => write!(f, "cannot start the cache thread: {reason}"),
        }
    }
}

impl std::error::Error for CacheError {}

/// A stored answer, replayed as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// When the cloud gave this answer, or last confirmed it (the same answer again, or a
    /// watch event bringing it up to date), in unix seconds.
    pub stored_at: u64,
}

impl CachedResponse {
    /// Whole seconds since `stored_at`, never negative (the clock may have been set back).
    pub fn age(&self) -> u64 {
        self.age_at(crate::clock::unix_seconds())
    }

    fn age_at(&self, now: u64) -> u64 {
        now.saturating_sub(self.stored_at)
    }
}

/// The answer to a `Lookup`.
#[derive(Clone, Debug)]
pub enum Reply {
    Hit(CachedResponse),
    Miss,
    /// Offline watch start, in `wire`'s encoding: send `initial_events` (synthetic ADDED
    /// for every cached item when the watch asked for no version, "" or "0", plus the end
    /// BOOKMARK for `sendInitialEvents=true`; empty when the asked version is the cached
    /// list's or newer), then, if bookmarks were allowed, `bookmark_event` periodically.
    WatchReplay {
        wire: Wire,
        initial_events: Vec<u8>,
        list_resource_version: String,
        bookmark_event: Vec<u8>,
    },
    /// The asked version is older than the cached list: send `wire.expired_event(rv)` and
    /// close.
    WatchExpired {
        wire: Wire,
    },
    Failed(String),
}

#[derive(Clone, Debug)]
pub enum Lookup {
    Read(ReadKey),
    WatchStart(WatchRequest),
}

/// Counters for /metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    pub dropped_writes: u64,
    pub write_errors: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// Opens the store and starts the cache thread. `waker` is woken whenever replies are ready.
/// A database of a schema this build does not know, or whose upgrade failed, is left as it
/// is, and the cache runs in memory (see `schema`).
pub fn start(config: CacheConfig, waker: Arc<mio::Waker>) -> Result<CacheHandle, CacheError> {
    let CacheKind::Sqlite { dir } = &config.kind else {
        log::info!(
            "cache: in memory (max {} bytes); cached answers are lost on restart",
            config.max_bytes
        );
        return start_in_memory(&config, waker);
    };
    let path = dir.join(sqlite::FILE_NAME);
    match sqlite::SqliteStore::open(dir) {
        Ok(store) => {
            log::info!("cache: {} (max {} bytes)", path.display(), config.max_bytes);
            CacheHandle::spawn(store, config.max_bytes, config.queue_len, waker)
        }
        Err(store::StoreError::UnknownSchema { found, known }) => {
            log::warn!(
                "cache: {} has schema version {found}, which this lite-apiserver does not know \
                 (it knows 0 to {known}: written by a newer release, or not a cache); the file \
                 is left untouched and answers are cached in memory only, lost on restart \
                 (move the file away to start a new one)",
                path.display()
            );
            start_in_memory(&config, waker)
        }
        Err(error @ store::StoreError::UpgradeFailed { .. }) => {
            log::warn!(
                "cache: {} could not be upgraded ({error}); it is left as it was, to be upgraded \
                 at the next start, and answers are cached in memory only meanwhile",
                path.display()
            );
            start_in_memory(&config, waker)
        }
        Err(error) => Err(CacheError::Open(error.to_string())),
    }
}

fn start_in_memory(
    config: &CacheConfig,
    waker: Arc<mio::Waker>,
) -> Result<CacheHandle, CacheError> {
    CacheHandle::spawn(memory::MemoryStore::new(), config.max_bytes, config.queue_len, waker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const WAKE: mio::Token = mio::Token(7);

    struct Reactor {
        poll: mio::Poll,
        events: mio::Events,
    }

    impl Reactor {
        fn new() -> (Reactor, Arc<mio::Waker>) {
            let poll = mio::Poll::new().expect("poll");
            let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE).expect("waker"));
            (Reactor { poll, events: mio::Events::with_capacity(8) }, waker)
        }

        /// Polls until `count` replies arrived through the waker.
        fn replies(&mut self, cache: &CacheHandle, count: usize) -> Vec<(u64, Reply)> {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut replies = Vec::new();
            while replies.len() < count && Instant::now() < deadline {
                self.poll.poll(&mut self.events, Some(Duration::from_millis(100))).expect("poll");
                if self.events.iter().any(|e| e.token() == WAKE) {
                    replies.extend(cache.take_replies());
                }
            }
            replies
        }
    }

    /// Lookups overtake queued writes by design; tests wait for the write first.
    fn wait_stored(cache: &CacheHandle, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.stats().stored < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn read(identity: &str, target: &str) -> ReadKey {
        match classify(identity, "GET", target, None) {
            Classified::Read(key) => key,
            other => panic!("not a read: {other:?}"),
        }
    }

    const LIST: &[u8] = b"{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"7\"},\"items\":[]}\n";

    fn round_trip(kind: CacheKind) {
        let (mut reactor, waker) = Reactor::new();
        let cache = start(CacheConfig::new(kind), waker).expect("start");
        let key = read("cn:kubelet", "/api/v1/pods?limit=500");
        cache.store(key.clone(), "application/json", LIST.to_vec());
        wait_stored(&cache, 1);
        cache.lookup(1, Lookup::Read(key)).expect("lookup");
        cache.lookup(2, Lookup::Read(read("token:x", "/api/v1/pods"))).expect("lookup");
        let mut replies = reactor.replies(&cache, 2);
        replies.sort_by_key(|(id, _)| *id);
        assert!(
            matches!(&replies[..], [(1, Reply::Hit(r)), (2, Reply::Miss)] if r.body == LIST),
            "{replies:?}"
        );
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.stored, stats.entries), (1, 1, 1, 1));
        cache.shutdown();
    }

    #[test]
    fn memory_cache_answers_through_the_waker() {
        round_trip(CacheKind::Memory);
    }

    #[test]
    fn sqlite_cache_answers_through_the_waker_and_survives_restart() {
        let dir = sqlite::tests::temp_dir("handle");
        round_trip(CacheKind::Sqlite { dir: dir.clone() });
        let (mut reactor, waker) = Reactor::new();
        let cache = start(CacheConfig::new(CacheKind::Sqlite { dir }), waker).expect("restart");
        cache.lookup(3, Lookup::Read(read("cn:kubelet", "/api/v1/pods"))).expect("lookup");
        let replies = reactor.replies(&cache, 1);
        assert!(matches!(&replies[..], [(3, Reply::Hit(r))] if r.body == LIST), "{replies:?}");
        let summary: serde_json::Value =
            serde_json::from_str(&cache.reporter().debug_summary()).expect("summary json");
        assert_eq!(summary["identities"]["cn:kubelet"]["pods"]["lists"], 1);
    }

    #[test]
    fn shutdown_flushes_queued_writes() {
        let dir = sqlite::tests::temp_dir("flush");
        let (_reactor, waker) = Reactor::new();
        let cache =
            start(CacheConfig::new(CacheKind::Sqlite { dir: dir.clone() }), waker).expect("start");
        for i in 0..200 {
            cache.store(
                read("cn:a", &format!("/api/v1/namespaces/n/pods/p{i}")),
                "application/json",
                vec![b'x'; 1000],
            );
        }
        let dropped = cache.stats().dropped_writes;
        cache.shutdown();
        let (_reactor, waker) = Reactor::new();
        let cache = start(CacheConfig::new(CacheKind::Sqlite { dir }), waker).expect("restart");
        assert_eq!(cache.stats().entries, 200 - dropped);
    }

    #[test]
    fn full_queues_drop_writes_and_refuse_lookups() {
        let (_reactor, waker) = Reactor::new();
        let config =
            CacheConfig { kind: CacheKind::Memory, max_bytes: DEFAULT_MAX_BYTES, queue_len: 1 };
        let cache = start(config, waker).expect("start");
        for i in 0..1000 {
            let key = read("cn:a", &format!("/api/v1/namespaces/n/pods/p{i}"));
            cache.store(key, "application/json", vec![b'x'; 10_000]);
        }
        assert!(
            cache.stats().dropped_writes > 0,
            "a one-slot queue cannot take 1000 writes at once"
        );
        let dropped_stores = cache.stats().dropped_writes;
        for i in 0..1000 {
            let write = classify_write("DELETE", &format!("/api/v1/namespaces/n/pods/p{i}"));
            let write = write.expect("an object DELETE");
            cache.write_answered(write, 200, "application/json", vec![b'x'; 10_000]);
        }
        assert!(
            cache.stats().dropped_writes > dropped_stores,
            "write answers share the stores' bounded lane"
        );
        let key = read("cn:a", "/api/v1/pods");
        let refused = (0..1000).any(|id| cache.lookup(id, Lookup::Read(key.clone())).is_err());
        assert!(refused, "a one-slot lookup queue refuses a burst");
    }

    #[test]
    fn a_newer_answer_replaces_a_queued_one_for_the_same_key() {
        let (mut reactor, waker) = Reactor::new();
        let config =
            CacheConfig { kind: CacheKind::Memory, max_bytes: DEFAULT_MAX_BYTES, queue_len: 1 };
        let cache = start(config, waker).expect("start");
        let key = read("cn:a", "/api/v1/namespaces/n/pods/p");
        let body = |i: usize| format!("{{\"kind\":\"Pod\",\"n\":{i}}}").into_bytes();
        for i in 0..1000 {
            cache.store(key.clone(), "application/json", body(i));
        }
        assert_eq!(
            cache.stats().dropped_writes,
            0,
            "a one-slot queue holds one key's latest answer"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            cache.lookup(1, Lookup::Read(key.clone())).expect("lookup");
            let replies = reactor.replies(&cache, 1);
            if matches!(&replies[..], [(1, Reply::Hit(r))] if r.body == body(999)) {
                break;
            }
            assert!(Instant::now() < deadline, "the last answer was never stored: {replies:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_delete_answer_reaches_the_store_through_the_handle() {
        let (mut reactor, waker) = Reactor::new();
        let cache = start(CacheConfig::new(CacheKind::Memory), waker).expect("start");
        let pod = "/api/v1/namespaces/n/pods/p";
        let body =
            br#"{"kind":"Pod","metadata":{"name":"p","namespace":"n","resourceVersion":"5"}}"#;
        cache.store(read("cn:a", pod), "application/json", body.to_vec());
        wait_stored(&cache, 1);
        let write = classify_write("DELETE", pod).expect("an object DELETE");
        let gone =
            br#"{"kind":"Pod","metadata":{"name":"p","namespace":"n","resourceVersion":"6"}}"#;
        cache.write_answered(write, 200, "application/json", gone.to_vec());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            cache.lookup(1, Lookup::Read(read("cn:a", pod))).expect("lookup");
            let replies = reactor.replies(&cache, 1);
            if matches!(&replies[..], [(1, Reply::Miss)]) {
                break;
            }
            assert!(Instant::now() < deadline, "the deleted pod is still cached: {replies:?}");
        }
        assert_eq!(cache.stats().dropped_writes, 0);
    }

    #[test]
    fn unusable_directory_is_an_error_not_a_panic() {
        let (_reactor, waker) = Reactor::new();
        let file = sqlite::tests::temp_dir("notadir");
        std::fs::write(&file, b"a file where the directory should be").expect("file");
        let result = start(CacheConfig::new(CacheKind::Sqlite { dir: file }), waker);
        assert!(matches!(result, Err(CacheError::Open(_))), "opening under a file must fail");
    }

    #[test]
    fn age_is_never_negative() {
        let cached = CachedResponse {
            status: 200,
            content_type: "application/json".into(),
            body: Vec::new(),
            stored_at: 1_000,
        };
        assert_eq!(cached.age_at(1_042), 42);
        assert_eq!(cached.age_at(900), 0, "a clock set back");
    }

    #[test]
    fn a_database_of_an_unknown_schema_is_left_alone_and_answers_are_cached_in_memory() {
        let dir = sqlite::tests::temp_dir("unknown-schema");
        let file = dir.join(sqlite::FILE_NAME);
        drop(sqlite::SqliteStore::open(&dir).expect("create"));
        let connection = rusqlite::Connection::open(&file).expect("open raw");
        connection.pragma_update(None, "user_version", schema::VERSION + 1).expect("bump");
        drop(connection);
        let bytes = std::fs::read(&file).expect("read");

        let (mut reactor, waker) = Reactor::new();
        let cache = start(CacheConfig::new(CacheKind::Sqlite { dir }), waker).expect("start");
        let key = read("cn:kubelet", "/api/v1/pods");
        cache.store(key.clone(), "application/json", LIST.to_vec());
        wait_stored(&cache, 1);
        cache.lookup(1, Lookup::Read(key)).expect("lookup");
        let replies = reactor.replies(&cache, 1);
        assert!(matches!(&replies[..], [(1, Reply::Hit(r))] if r.body == LIST), "{replies:?}");
        cache.shutdown();
        assert_eq!(std::fs::read(&file).expect("read"), bytes, "the file was changed");
    }
}
