//! The properties the fuzz targets check, one function per target, shared with the seeded
//! stress test in `tests/hardening.rs` (included there with `#[path]`): each takes arbitrary
//! bytes and panics when lite-apiserver breaks a rule on them. Depends only on the
//! `lite_apiserver` library, `mio` and `serde_json`, which both builds have.

// Each including crate uses a subset (a fuzz target calls one function).
#![allow(dead_code)]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lite_apiserver::body::BodyTracker;
use lite_apiserver::cache::{self, CacheConfig, CacheHandle, CacheKind, Classified, Lookup, Reply};
use lite_apiserver::config;
use lite_apiserver::http1::{self, Framing, HttpError};

/// Request heads: parsing never panics, a complete head is never longer than its input or the
/// limit, every prefix of a complete head is "need more bytes" (what the reactor relies on when
/// it re-parses as bytes arrive), and what we would send upstream parses back to the same
/// method and target.
pub fn request_head(data: &[u8]) {
    let parsed = http1::parse_request(data);
    if let Ok(Some((head, length))) = &parsed {
        assert!(
            *length <= data.len() && *length <= http1::MAX_HEAD_BYTES,
            "head length {length} of {}",
            data.len()
        );
        for cut in [0, length / 3, length / 2, length.saturating_sub(1)] {
            if cut < *length {
                let prefix = http1::parse_request(&data[..cut]);
                assert!(
                    matches!(prefix, Ok(None)),
                    "prefix {cut} of a {length}-byte head: {prefix:?}"
                );
            }
        }
        let _ = (head.framing(), head.keep_alive(), head.is_upgrade(), head.path());
        let _ = http1::query_param(&head.target, "watch");
        if head.validate().is_ok() {
            let upstream = head.to_upstream_bytes(
                "cloud.example:6443",
                &[("Accept", "application/json"), ("Accept-Encoding", "")],
            );
            match http1::parse_request(&upstream) {
                Ok(Some((again, used))) => {
                    assert_eq!(used, upstream.len(), "the upstream head has trailing bytes");
                    assert_eq!(
                        (again.method.as_str(), again.target.as_str()),
                        (head.method.as_str(), head.target.as_str())
                    );
                    assert_eq!(
                        again.framing(),
                        head.framing(),
                        "framing changed on the way upstream"
                    );
                }
                Err(HttpError::HeadTooLarge) | Err(HttpError::TooManyHeaders) => {} // Host/Accept added at the limit
                other => panic!("the head sent upstream does not parse: {other:?}"),
            }
        }
    }
    response_head(data);
}

/// Response heads: parsing and framing never panic; the head written to a client parses back
/// to the same status.
fn response_head(data: &[u8]) {
    if let Ok(Some((head, _))) = http1::parse_response(data) {
        for method in ["GET", "HEAD"] {
            let _ = head.framing(method);
        }
        if head.reason.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
            let out = head.to_client_bytes(1, true, false, &[]);
            if let Ok(Some((again, _))) = http1::parse_response(&out) {
                assert_eq!(again.status, head.status);
            }
        }
    }
}

/// Chunked bodies: the tracker's verdict, payload and consumed count do not depend on how the
/// bytes are split into reads, and it never claims more bytes than it was given. The first two
/// input bytes choose the split.
pub fn chunked_body(data: &[u8]) {
    let (split, body) = match data {
        [a, b, rest @ ..] => (usize::from(*a) % 17 + 1 + usize::from(*b) % 3 * 64, rest),
        _ => (1, data),
    };
    let whole = run_tracker(body, body.len().max(1));
    let pieces = run_tracker(body, split);
    assert_eq!(whole, pieces, "split {split} changed the outcome");
    if let Ok((_, consumed, _)) = whole {
        assert!(consumed <= body.len());
    }
}

type TrackerOutcome = Result<(Vec<u8>, usize, bool), (Vec<u8>, HttpError)>;

fn run_tracker(body: &[u8], split: usize) -> TrackerOutcome {
    let mut tracker = BodyTracker::new(Framing::Chunked);
    let mut payload = Vec::new();
    let mut consumed = 0;
    for piece in body.chunks(split) {
        let progress = match tracker.feed(piece, &mut |p| payload.extend_from_slice(p)) {
            Ok(progress) => progress,
            Err(error) => return Err((payload, error)),
        };
        assert!(progress.consumed <= piece.len());
        consumed += progress.consumed;
        if progress.done {
            assert!(tracker.is_done());
            return Ok((payload, consumed, true));
        }
        assert_eq!(progress.consumed, piece.len(), "stopped early without being done");
    }
    Ok((payload, consumed, tracker.is_done()))
}

/// Command lines: parsing never panics, and an accepted configuration is usable. NUL bytes
/// separate arguments; an odd first byte prepends the required flags so validation runs deep.
pub fn flags(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut args: Vec<String> = Vec::new();
    if data.first().is_some_and(|b| b % 2 == 1) {
        args.extend(
            [
                "--ca-file=/ca.crt",
                "--tls-cert-file=/s.crt",
                "--tls-private-key-file=/s.key",
                "--kube-apiserver-url=https://cloud:6443",
            ]
            .map(String::from),
        );
    }
    args.extend(text.split('\0').skip(1).map(str::to_string));
    if let Ok(config::Command::Run(config)) = config::parse(args) {
        assert!(!config.upstream_host.is_empty(), "accepted an empty upstream host");
    }
}

const IDENTITY: &str = "cn:fuzz";
const COLLECTION: &str = "/api/v1/namespaces/default/pods";
const INITIAL_LIST: &[u8] = b"{\"kind\":\"PodList\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[\
{\"metadata\":{\"name\":\"a\",\"namespace\":\"default\",\"resourceVersion\":\"5\"}},\
{\"metadata\":{\"name\":\"b\",\"namespace\":\"default\",\"resourceVersion\":\"9\"}}]}\n";
/// Watch starts the first input byte picks from.
const WATCH_QUERIES: [&str; 5] = [
    "watch=true",
    "watch=true&resourceVersion=10",
    "watch=true&resourceVersion=0&allowWatchBookmarks=true",
    "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true",
    "watch=1&resourceVersion=3",
];
/// How long the cache thread may take for one input before it counts as hung.
const CACHE_DEADLINE: Duration = Duration::from_secs(10);

struct Wake {
    poll: mio::Poll,
    waker: Arc<mio::Waker>,
}

thread_local! {
    static WAKE: RefCell<Option<Wake>> = const { RefCell::new(None) };
}

fn read_key(target: &str) -> cache::ReadKey {
    match cache::classify(IDENTITY, "GET", target, None) {
        Classified::Read(key) => key,
        other => panic!("{target} is not a cacheable read: {other:?}"),
    }
}

/// Watch event streams, through the cache's public handle: a cached list, then a watch whose
/// de-chunked body is the input (split into reads by the second byte), then an offline read of
/// the list and an offline watch start. The cache thread must not panic or hang, and when every
/// line fed was JSON, the list it answers offline must be JSON too.
pub fn watch_stream(data: &[u8]) {
    let (query, split, body) = match data {
        [a, b, rest @ ..] => {
            (WATCH_QUERIES[usize::from(*a) % WATCH_QUERIES.len()], usize::from(*b) + 1, rest)
        }
        _ => return,
    };
    let watch = match cache::classify(IDENTITY, "GET", &format!("{COLLECTION}?{query}"), None) {
        Classified::Watch(watch) => watch,
        other => panic!("{query} is not a watch: {other:?}"),
    };
    WAKE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let wake = slot.get_or_insert_with(|| {
            let poll = mio::Poll::new().expect("poll");
            let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
            Wake { poll, waker }
        });
        let handle = cache::start(CacheConfig::new(CacheKind::Memory), wake.waker.clone())
            .expect("memory cache");
        handle.store(read_key(COLLECTION), "application/json", INITIAL_LIST.to_vec());
        handle.watch_opened(1, &watch);
        for piece in body.chunks(split) {
            handle.watch_bytes(1, piece);
        }
        handle.watch_closed(1);
        // Writes are applied in order: once this sentinel is stored, so is everything before it.
        handle.store(
            read_key("/api/v1/namespaces/default/configmaps"),
            "application/json",
            b"{}".to_vec(),
        );
        let deadline = Instant::now() + CACHE_DEADLINE;
        while handle.stats().stored < 2 {
            assert!(
                Instant::now() < deadline,
                "the cache thread did not get through the watch stream"
            );
            std::thread::yield_now();
        }
        handle.lookup(1, Lookup::Read(read_key(COLLECTION))).expect("lookup queued");
        handle.lookup(2, Lookup::WatchStart(watch)).expect("lookup queued");
        let replies = collect_replies(wake, &handle, 2);
        let all_json = body.split(|b| *b == b'\n').all(|line| {
            line.iter().all(u8::is_ascii_whitespace)
                || serde_json::from_slice::<serde_json::Value>(line).is_ok()
        });
        for (id, reply) in &replies {
            if let (1, Reply::Hit(response), true) = (id, reply, all_json) {
                let parsed = serde_json::from_slice::<serde_json::Value>(&response.body);
                assert!(
                    parsed.is_ok(),
                    "offline list is not JSON after JSON events: {}",
                    String::from_utf8_lossy(&response.body)
                );
            }
        }
        handle.shutdown();
    });
}

fn collect_replies(wake: &mut Wake, handle: &CacheHandle, count: usize) -> Vec<(u64, Reply)> {
    let deadline = Instant::now() + CACHE_DEADLINE;
    let mut events = mio::Events::with_capacity(4);
    let mut replies = Vec::new();
    while replies.len() < count {
        assert!(Instant::now() < deadline, "the cache thread did not answer its lookups");
        let _ = wake.poll.poll(&mut events, Some(Duration::from_millis(50)));
        replies.extend(handle.take_replies());
    }
    replies
}

/// A small xorshift generator, so the stress test needs no dependency and every run is the
/// same.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Mutates `seed` the way a fuzzer would: byte flips, inserted interesting tokens,
    /// deletions, duplications and truncation.
    pub fn mutate(&mut self, seed: &[u8], tokens: &[&[u8]]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..=self.below(8) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if !out.is_empty() => {
                    let i = at.min(out.len() - 1);
                    out[i] = self.next() as u8;
                }
                1 => {
                    let token = tokens[self.below(tokens.len())];
                    out.splice(at..at, token.iter().copied());
                }
                2 if at < out.len() => {
                    let end = (at + self.below(16) + 1).min(out.len());
                    out.drain(at..end);
                }
                3 if at < out.len() => {
                    let end = (at + self.below(64) + 1).min(out.len());
                    let copy = out[at..end].to_vec();
                    out.splice(at..at, copy);
                }
                4 => out.truncate(at),
                _ => out.insert(at, self.next() as u8),
            }
        }
        out
    }
}
