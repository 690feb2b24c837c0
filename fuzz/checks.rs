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
    read_key_as(target, None)
}

fn read_key_as(target: &str, accept: Option<&str>) -> cache::ReadKey {
    match cache::classify(IDENTITY, "GET", target, accept) {
        Classified::Read(key) => key,
        other => panic!("{target} is not a cacheable read: {other:?}"),
    }
}

/// kubelet's Accept, for the protobuf half of `watch_stream`.
const PROTOBUF_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";

/// `INITIAL_LIST` in protobuf: `k8s\0` + `runtime.Unknown` holding a PodList of a and b.
fn initial_protobuf_list() -> Vec<u8> {
    let pod = |name: &str, rv: &str| {
        let mut meta = Writer::new();
        meta.string(1, name).string(3, "default").string(6, rv);
        let mut pod = Writer::new();
        pod.bytes(1, meta.as_bytes());
        pod.into_bytes()
    };
    let mut list_meta = Writer::new();
    list_meta.string(2, "10");
    let mut list = Writer::new();
    list.bytes(1, list_meta.as_bytes()).bytes(2, &pod("a", "5")).bytes(2, &pod("b", "9"));
    let raw = list.into_bytes();
    let unknown =
        protobuf::Unknown { api_version: "v1", kind: "PodList", raw: &raw, ..Default::default() };
    protobuf::encode_envelope(&unknown)
}

/// Watch event streams, through the cache's public handle: a cached list, then a watch whose
/// de-chunked body is the input (split into reads by the second byte), then an offline read of
/// the list and an offline watch start. The first byte picks the watch and, with its top bit,
/// JSON lines or protobuf frames. The cache thread must not panic or hang; when every line fed
/// was JSON, the list it answers offline must be JSON too; a protobuf list answered offline
/// must still be a protobuf list, the same one whether the stream came whole or in reads.
pub fn watch_stream(data: &[u8]) {
    let (query, protobuf, split, body) = match data {
        [a, b, rest @ ..] => (
            WATCH_QUERIES[usize::from(*a & 0x7f) % WATCH_QUERIES.len()],
            *a & 0x80 != 0,
            usize::from(*b) + 1,
            rest,
        ),
        _ => return,
    };
    if !protobuf {
        let replies = watch_replies(query, None, body, split);
        check_json_replies(body, &replies);
        return;
    }
    let in_reads = watch_replies(query, Some(PROTOBUF_ACCEPT), body, split);
    let whole = watch_replies(query, Some(PROTOBUF_ACCEPT), body, body.len().max(1));
    let list = |replies: &[(u64, Reply)]| match replies.iter().find(|(id, _)| *id == 1) {
        Some((_, Reply::Hit(response))) => Some(response.body.clone()),
        _ => None,
    };
    if let Some(body) = list(&in_reads) {
        let content_type = protobuf::MEDIA_TYPE;
        assert!(
            cache::Wire::Protobuf.decompose(content_type, &body).is_some(),
            "the offline protobuf list no longer is one"
        );
    }
    assert_eq!(list(&in_reads), list(&whole), "reads of {split} bytes changed the list");
}

/// Runs one watch stream through a fresh memory cache; returns its replies to an offline
/// read of the list (id 1) and an offline start of the same watch (id 2).
fn watch_replies(
    query: &str,
    accept: Option<&str>,
    body: &[u8],
    split: usize,
) -> Vec<(u64, Reply)> {
    let target = format!("{COLLECTION}?{query}");
    let watch = match cache::classify(IDENTITY, "GET", &target, accept) {
        Classified::Watch(watch) => watch,
        other => panic!("{query} is not a watch: {other:?}"),
    };
    let (content_type, list) = match accept {
        Some(_) => (protobuf::MEDIA_TYPE, initial_protobuf_list()),
        None => ("application/json", INITIAL_LIST.to_vec()),
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
        handle.store(read_key_as(COLLECTION, accept), content_type, list);
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
        handle.lookup(1, Lookup::Read(read_key_as(COLLECTION, accept))).expect("lookup queued");
        handle.lookup(2, Lookup::WatchStart(watch)).expect("lookup queued");
        let replies = collect_replies(wake, &handle, 2);
        handle.shutdown();
        replies
    })
}

fn check_json_replies(body: &[u8], replies: &[(u64, Reply)]) {
    let all_json = body.split(|b| *b == b'\n').all(|line| {
        line.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde_json::Value>(line).is_ok()
    });
    for (id, reply) in replies {
        if let (1, Reply::Hit(response), true) = (id, reply, all_json) {
            let parsed = serde_json::from_slice::<serde_json::Value>(&response.body);
            assert!(
                parsed.is_ok(),
                "offline list is not JSON after JSON events: {}",
                String::from_utf8_lossy(&response.body)
            );
        }
    }
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

// ---------------------------------------------------------------------------------------
// Service-account tokens (src/jwt.rs).
// ---------------------------------------------------------------------------------------

use lite_apiserver::jwt::{self, KeySet, Policy, Verdict, VerdictCache};
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};

/// The issuer and the time every JWT input is judged against (seeds are signed for them).
pub const JWT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
pub const JWT_NOW: i64 = 1_700_000_000;
/// TEST-ONLY keys: the crate's RSA test key, and a P-256 key made with openssl for fuzzing
/// (its 32-byte private scalar, then its 65-byte uncompressed public point).
const RSA_PKCS8: &[u8] = include_bytes!("../src/testdata/jwt_test_only_rsa2048.pk8");
const EC_KEY: &[u8; 97] = include_bytes!("testdata/ec_p256.test-only.key");

/// The fixed signing keys and the key set they publish.
pub struct Signers {
    pub rsa: RsaKeyPair,
    pub ec: EcdsaKeyPair,
    pub keys: KeySet,
}

thread_local! {
    static SIGNERS: Signers = Signers::new();
}

impl Signers {
    fn new() -> Signers {
        let rng = ring::rand::SystemRandom::new();
        let rsa = RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("RSA test key");
        let (private, public) = EC_KEY.split_at(32);
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let ec = EcdsaKeyPair::from_private_key_and_public_key(alg, private, public, &rng)
            .expect("P-256 test key");
        let keys = KeySet::from_value(&jwks(&rsa, &ec)).expect("test JWKS");
        Signers { rsa, ec, keys }
    }

    /// `header.payload.signature`, RS256 (deterministic, so a fuzz input replays exactly).
    pub fn sign_rs256(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", base64url(header), base64url(payload));
        let mut sig = vec![0; self.rsa.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        self.rsa
            .sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
            .expect("RS256 signature");
        format!("{input}.{}", base64url(&sig))
    }

    /// The same with ES256 (randomised: for seeds, not for replayed properties).
    pub fn sign_es256(&self, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", base64url(header), base64url(payload));
        let rng = ring::rand::SystemRandom::new();
        let sig = self.ec.sign(&rng, input.as_bytes()).expect("ES256 signature");
        format!("{input}.{}", base64url(sig.as_ref()))
    }

    /// Whether `signature` over exactly `signing_input` is valid under one of the keys —
    /// checked with ring directly, not through the verifier under test.
    fn oracle(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
        rsa.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signing_input, signature).is_ok()
            || UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.ec.public_key())
                .verify(signing_input, signature)
                .is_ok()
    }
}

/// The JWKS publishing both test keys, as kube-apiserver would.
pub fn jwks(rsa: &RsaKeyPair, ec: &EcdsaKeyPair) -> serde_json::Value {
    let components = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let point = ec.public_key().as_ref();
    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
    serde_json::json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256",
         "n": base64url(&components.n), "e": base64url(&components.e)},
        {"kty": "EC", "kid": "ec", "use": "sig", "alg": "ES256", "crv": "P-256",
         "x": base64url(x), "y": base64url(y)},
    ]})
}

/// Runs `f` with the fixed signers (one per thread: ring key pairs are costly to parse).
pub fn with_signers<T>(f: impl FnOnce(&Signers) -> T) -> T {
    SIGNERS.with(f)
}

/// Unpadded base64url (the crate has only the decoder).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn proves(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::ServiceAccount { .. } | Verdict::Expired { .. })
}

/// Bearer tokens. The first byte picks the mode: the rest as a token (most inputs), or the
/// rest as claims (odd) or as `header\nclaims` (2 mod 4) signed RS256 with the test key, so
/// the claim checks behind the signature are reached. Properties: no panic; a token judged
/// signed (`ServiceAccount` or `Expired`) has a signature over exactly its first two
/// segments that ring accepts under one of the keys; the verdict cache agrees with `verify`
/// and with itself; and a signed token with one byte changed (chosen by the input) is not.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    with_signers(|signers| {
        let token = match mode % 4 {
            1 => signers.sign_rs256(br#"{"alg":"RS256","kid":"rsa","typ":"JWT"}"#, rest),
            2 => {
                let at = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                signers.sign_rs256(&rest[..at], rest.get(at + 1..).unwrap_or_default())
            }
            _ => match std::str::from_utf8(rest) {
                Ok(text) => text.to_string(),
                Err(_) => return,
            },
        };
        let verdict = judge_token(signers, &token);
        if proves(&verdict) {
            let mutation = rest.iter().fold(0usize, |h, &b| h.wrapping_mul(31) ^ usize::from(b));
            let at = mutation % token.len();
            let mut mutated = token.clone().into_bytes();
            // Any other printable byte: the token stays a string.
            mutated[at] = b' ' + (mutated[at] - b' ' + 1 + (mode >> 2) % 94) % 95;
            let mutated = String::from_utf8(mutated).expect("ASCII token");
            let again = judge_token(signers, &mutated);
            assert!(!proves(&again), "byte {at} changed and still {again:?}");
        }
    });
}

/// The verdict on `token`, checked against the oracle and the verdict cache.
fn judge_token(signers: &Signers, token: &str) -> Verdict {
    let policy = Policy::new(JWT_ISSUER);
    let verdict = jwt::verify(token, &signers.keys, &policy, JWT_NOW);
    if proves(&verdict) {
        let (signed, signature) = token.rsplit_once('.').expect("a signed token has segments");
        let signature = jwt::decode_base64url(signature).expect("a signed token's signature");
        assert!(
            signers.oracle(signed.as_bytes(), &signature),
            "{verdict:?} without a valid signature"
        );
        assert!(
            jwt::cache_identity(&verdict).is_some()
                == matches!(verdict, Verdict::ServiceAccount { .. })
        );
    }
    let mut cache = VerdictCache::new(4);
    for _ in 0..2 {
        let cached = cache.verify_cached(token, &signers.keys, &policy, JWT_NOW);
        assert_eq!(cached, verdict, "the verdict cache disagrees with verify");
    }
    verdict
}

// ---------------------------------------------------------------------------------------
// Protobuf bodies and length-prefixed watch frames (src/protobuf.rs, src/watch_frames.rs).
// ---------------------------------------------------------------------------------------

use lite_apiserver::protobuf::{self, Reader, Writer};
use lite_apiserver::watch_frames::{EventFramer, EventFraming};

/// How deep `rebuilt` looks into length-delimited fields that parse as messages.
const PROTO_DEPTH: usize = 4;

/// Protobuf from the cloud. Properties: no panic; an envelope that decodes re-encodes to one
/// that decodes the same, and re-encoding that is a fixed point; a message's fields, written
/// again with `Writer` (nested messages too), read back the same, and the same fields come
/// out of every prefix up to the first error; and the input taken as a length-prefixed watch
/// stream, fed in reads split by the first byte, comes out of `EventFramer` as the same
/// bytes, frame by frame, as when fed whole.
pub fn protobuf(data: &[u8]) {
    if let Ok(unknown) = protobuf::decode_envelope(data) {
        let encoded = protobuf::encode_envelope(&unknown);
        let again = protobuf::decode_envelope(&encoded).expect("a re-encoded envelope decodes");
        assert_eq!(again, unknown, "the envelope changed on the way round");
        assert_eq!(protobuf::encode_envelope(&again), encoded);
        message(unknown.raw, PROTO_DEPTH);
    }
    message(data.strip_prefix(protobuf::MAGIC.as_slice()).unwrap_or(data), PROTO_DEPTH);
    watch_frames(data);
    protobuf_list(data);
}

/// A protobuf list that decomposes (src/cache/protobuf_list.rs) rebuilds to a body that
/// decomposes to the same items and version, and rebuilding that is a fixed point.
fn protobuf_list(data: &[u8]) {
    let wire = cache::Wire::Protobuf;
    let Some((head, items)) = wire.decompose(protobuf::MEDIA_TYPE, data) else {
        return;
    };
    let rebuilt = cache::Wire::rebuild(&head, &items).expect("a decomposed list rebuilds");
    let (again, again_items) =
        wire.decompose(protobuf::MEDIA_TYPE, &rebuilt).expect("a rebuilt list decomposes");
    assert_eq!(again_items, items, "a rebuilt list holds other items");
    assert_eq!(again.resource_version, head.resource_version);
    let fixed = cache::Wire::rebuild(&again, &again_items).expect("it rebuilds again");
    assert_eq!(fixed, rebuilt, "rebuilding is not a fixed point");
}

/// The fields of `bytes` until the first error, rebuilt (see `protobuf`).
fn message(bytes: &[u8], depth: usize) {
    let fields: Vec<_> = Reader::new(bytes).collect();
    let good: Vec<_> = fields.iter().map_while(|f| f.as_ref().ok().copied()).collect();
    assert!(fields.len() <= good.len() + 1, "the reader went on after an error");
    let mut writer = Writer::new();
    for (number, value) in &good {
        writer.value(*number, *value);
        if let (protobuf::Value::Bytes(inner), true) = (value, depth > 0) {
            message(inner, depth - 1);
        }
    }
    let reread: Vec<_> = Reader::new(writer.as_bytes()).collect();
    let expected: Vec<_> = good.iter().copied().map(Ok).collect();
    assert_eq!(reread, expected, "rebuilt fields read back differently");
    assert!(writer.as_bytes().len() <= bytes.len(), "rebuilt message longer than the input");
}

fn watch_frames(data: &[u8]) {
    let split = usize::from(data.first().copied().unwrap_or(1)) % 13 + 1;
    let whole = run_framer(data, data.len().max(1));
    let pieces = run_framer(data, split);
    assert_eq!(whole, pieces, "split {split} changed what was sent");
    let (frames, raw, _) = &whole;
    let sent: Vec<u8> = [frames.concat(), raw.clone()].concat();
    assert!(data.starts_with(&sent), "the framer sent bytes it was not given");
}

/// What a framer sent: whole frames, then (once a frame is, or announces itself, too large
/// to hold) the raw bytes passed through; and whether it can still end cleanly.
type Framed = (Vec<Vec<u8>>, Vec<u8>, bool);

/// Feeds `data` in reads of `split` bytes. While the framer can end cleanly, every chunk it
/// sends must be whole frames.
fn run_framer(data: &[u8], split: usize) -> Framed {
    let mut framer = EventFramer::new(EventFraming::LengthPrefixed);
    let (mut frames, mut raw) = (Vec::new(), Vec::new());
    for piece in data.chunks(split) {
        let sent = framer.push(piece);
        let mut chunk = &sent[..];
        // Whole frames first; past the switch to passing through, the rest is raw.
        while !chunk.is_empty() && raw.is_empty() {
            let length = chunk.get(..4).map(|p| u32::from_be_bytes([p[0], p[1], p[2], p[3]]));
            match length.map(|length| 4 + length as usize) {
                Some(end) if end <= chunk.len() => {
                    frames.push(chunk[..end].to_vec());
                    chunk = &chunk[end..];
                }
                _ => break,
            }
        }
        if !chunk.is_empty() {
            assert!(!framer.can_end_cleanly(), "a chunk sent cuts a frame");
            raw.extend_from_slice(chunk);
        }
    }
    (frames, raw, framer.can_end_cleanly())
}

// ---------------------------------------------------------------------------------------
// TokenRequest bodies and answers (src/token_request.rs).
// ---------------------------------------------------------------------------------------

use lite_apiserver::token_request::{BoundRef, IssuedToken, TokenRequestKey, offline_answer};

const TOKEN_CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    Some("application/vnd.kubernetes.protobuf"),
    Some("application/json; charset=utf-8"),
    None,
];

/// The keys an offline answer is asked for: the pod `web-1` the seeds are bound to, with
/// and without audiences, and another pod.
fn token_keys() -> Vec<TokenRequestKey> {
    let bound = |name: &str| BoundRef {
        kind: "Pod".into(),
        api_version: "v1".into(),
        name: name.into(),
        uid: "7c1a2c1e-0000-4000-8000-000000000001".into(),
    };
    let key = |audiences: &[&str], pod: Option<&str>| TokenRequestKey {
        namespace: "default".into(),
        service_account: "web".into(),
        audiences: audiences.iter().map(|a| a.to_string()).collect(),
        expiration_seconds: 3600,
        bound: pod.map(bound),
    };
    vec![
        key(&[], Some("web-1")),
        key(&["vault"], Some("web-1")),
        key(&[], Some("db-0")),
        key(&[], None),
    ]
}

/// TokenRequest bodies, the first byte picking the content type. Properties: no panic; a
/// request key's canonical text is JSON; an offline answer is only given for a key the
/// cached body's spec answers (same bound pod, same audiences when the key names some),
/// carries the cached token unchanged, and is itself an answer the same key accepts.
pub fn token_request(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = TOKEN_CONTENT_TYPES[usize::from(pick) % TOKEN_CONTENT_TYPES.len()];
    let asked = TokenRequestKey::from_request("default", "web", body, content_type);
    if let Ok(key) = &asked {
        serde_json::from_str::<serde_json::Value>(&key.canonical()).expect("canonical is JSON");
    }
    let issued = IssuedToken::from_answer(body, content_type);
    let now = JWT_NOW + i64::from(pick >> 2) * 600;
    for key in token_keys() {
        let Ok(answer) = offline_answer(body, content_type, &key, now, 60) else { continue };
        let issued = issued.as_ref().expect("an offline answer from a body that is no answer");
        let again = IssuedToken::from_answer(&answer, content_type).expect("the answer parses");
        assert_eq!(again.token, issued.token, "the offline answer changed the token");
        assert_eq!(again.jwt_exp, issued.jwt_exp);
        if let Ok(spec) = &asked {
            let bound = |b: &Option<BoundRef>| b.as_ref().map(|b| (b.kind.clone(), b.name.clone()));
            assert_eq!(bound(&spec.bound), bound(&key.bound), "answered for another pod");
            assert!(key.audiences.is_empty() || key.audiences == spec.audiences);
        }
        let twice = offline_answer(&answer, content_type, &key, now, 60);
        assert!(twice.is_ok(), "the offline answer is not one itself: {twice:?}");
    }
}

// ---------------------------------------------------------------------------------------
// The issuer's discovery document and JWKS (src/issuer_keys.rs).
// ---------------------------------------------------------------------------------------

use lite_apiserver::issuer_keys::IssuerKeys;

/// Discovery and JWKS documents, split at the first NUL (discovery before), and the whole
/// input as a stored copy. Properties: no panic; keys that were read survive `to_stored` and
/// `from_stored` with the same issuer and key ids, and storing again is a fixed point; a
/// token signed with the test key is judged against the keys read without panicking, and
/// it is only proven when they hold the test key.
pub fn issuer_keys(data: &[u8]) {
    let at = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (discovery, jwks) = (&data[..at], data.get(at + 1..).unwrap_or_default());
    for keys in [IssuerKeys::from_documents(discovery, jwks), IssuerKeys::from_stored(data)] {
        let Ok(keys) = keys else { continue };
        let stored = keys.to_stored();
        let back = IssuerKeys::from_stored(&stored).expect("stored keys read back");
        assert_eq!(back.issuer(), keys.issuer());
        assert_eq!(back.keys().kids().collect::<Vec<_>>(), keys.keys().kids().collect::<Vec<_>>());
        assert_eq!(back.keys().len(), keys.keys().len());
        assert_eq!(back.to_stored(), stored, "storing is not a fixed point");
        with_signers(|signers| {
            let claims = serde_json::json!({
                "iss": keys.issuer(), "aud": [keys.issuer()], "exp": JWT_NOW + 600,
                "sub": "system:serviceaccount:default:web"});
            let token = signers.sign_rs256(br#"{"alg":"RS256"}"#, claims.to_string().as_bytes());
            let verdict = jwt::verify(&token, keys.keys(), &Policy::new(keys.issuer()), JWT_NOW);
            if proves(&verdict) {
                assert!(holds_rsa_key(&stored, signers), "proven by keys without the test key");
            }
        });
    }
}

/// Whether the stored JWKS has an RSA key with the test key's modulus.
fn holds_rsa_key(stored: &[u8], signers: &Signers) -> bool {
    let value: Json = serde_json::from_slice(stored).expect("stored JSON");
    let ours = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(signers.rsa.public()).n;
    let trim = |n: &[u8]| n.iter().skip_while(|&&b| b == 0).copied().collect::<Vec<u8>>();
    let keys = value["jwks"]["keys"].as_array().cloned().unwrap_or_default();
    keys.iter()
        .filter_map(|key| key["n"].as_str())
        .any(|n| jwt::decode_base64url(n).is_ok_and(|n| trim(&n) == trim(&ours)))
}

// ---------------------------------------------------------------------------------------
// The `kubernetes` Service rewriter (src/in_cluster.rs).
// ---------------------------------------------------------------------------------------

use lite_apiserver::in_cluster::InClusterAddress;
use serde_json::Value as Json;

/// Documents and watch events for kubelet. Properties: no panic; a rewritten document is
/// JSON, differs from the input only in the `spec` of objects that are `default/kubernetes`
/// Services, and those point at the local address; a document left alone holds no such
/// Service; watch events come out one line per line in, lines that are not such events
/// byte for byte.
pub fn in_cluster(data: &[u8]) {
    let local = InClusterAddress { addr: "169.254.0.10:51003".parse().expect("address") };
    let input: Option<Json> = serde_json::from_slice(data).ok().map(|v| normalized(&v));
    match (local.rewrite_document(data), &input) {
        (Some(out), Some(before)) => {
            let after: Json = serde_json::from_slice(&out).expect("a rewritten document is JSON");
            same_but_the_service(before, &after);
        }
        (Some(_), None) => panic!("rewrote a document that is not JSON"),
        (None, Some(before)) => {
            let candidates = match before.get("items").and_then(Json::as_array) {
                Some(items) => items.iter().collect(),
                None => vec![before],
            };
            assert!(!candidates.into_iter().any(is_the_service), "left the Service alone");
        }
        (None, None) => {}
    }
    let out = local.rewrite_events(data);
    let lines_in: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
    let lines_out: Vec<&[u8]> = out.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines_in.len(), lines_out.len(), "watch events added or lost");
    for (before, after) in lines_in.iter().zip(&lines_out) {
        if before == after {
            continue;
        }
        let before: Json = serde_json::from_slice(before).expect("only JSON events are rewritten");
        let before = normalized(&before);
        let after: Json = serde_json::from_slice(after).expect("a rewritten event is JSON");
        assert!(is_the_service(&before["object"]), "rewrote an event without the Service");
        same_but_the_service(&before["object"], &after["object"]);
    }
}

/// `value` as it reads back once written (serde_json's default float parsing is not exact,
/// so numbers are compared after one round).
fn normalized(value: &Json) -> Json {
    serde_json::from_str(&value.to_string()).expect("serde_json reads what it writes")
}

/// A `default/kubernetes` Service (or an object without a kind) with a spec to patch.
fn is_the_service(object: &Json) -> bool {
    object["kind"].as_str().is_none_or(|kind| kind == "Service")
        && object["metadata"]["name"] == "kubernetes"
        && object["metadata"]["namespace"] == "default"
        && object.get("spec").is_some_and(Json::is_object)
}

/// `after` is `before` with only the Service's clusterIP(s) and first port changed.
fn same_but_the_service(before: &Json, after: &Json) {
    match (before.get("items").and_then(Json::as_array), after.get("items")) {
        (Some(items), Some(Json::Array(out))) => {
            assert_eq!(items.len(), out.len(), "items added or lost");
            for (b, a) in items.iter().zip(out) {
                same_but_the_service(b, a);
            }
            let strip = |v: &Json| {
                let mut v = v.clone();
                v["items"] = Json::Null;
                v
            };
            assert_eq!(strip(before), strip(after), "the list around the items changed");
        }
        _ if is_the_service(before) => {
            assert_eq!(after["spec"]["clusterIP"], "169.254.0.10");
            assert_eq!(after["spec"]["clusterIPs"], serde_json::json!(["169.254.0.10"]));
            let mut expected = before.clone();
            expected["spec"]["clusterIP"] = after["spec"]["clusterIP"].clone();
            expected["spec"]["clusterIPs"] = after["spec"]["clusterIPs"].clone();
            let ports = expected["spec"].get_mut("ports").and_then(|p| p.get_mut(0));
            if let Some(port) = ports.and_then(Json::as_object_mut) {
                port.insert("port".into(), serde_json::json!(51003));
            }
            assert_eq!(&expected, after, "more than the Service's address changed");
        }
        _ => assert_eq!(before, after, "an object that is not the Service changed"),
    }
}

// ---------------------------------------------------------------------------------------
// gzip from the cloud (src/gzip.rs).
// ---------------------------------------------------------------------------------------

use lite_apiserver::gzip::{self, GzipDecoder, GzipError};

/// What a decoder made of a stream: the bytes its sink got and how it ended.
type Inflated = (Vec<u8>, Result<(), GzipError>);

/// gzip streams, the first byte picking the read split and the output limit. Properties: no
/// panic; the sink never gets more than the limit (a bomb is `TooLarge`, not memory); the
/// outcome does not depend on the read split (after an error, what came out before it is a
/// prefix of the other's); and the input itself, compressed, decodes back to itself, or is
/// `TooLarge` under a smaller limit.
pub fn gzip(data: &[u8]) {
    let Some((&pick, stream)) = data.split_first() else { return };
    let limit = [64 << 10, 1 << 20, 1000, 1][usize::from(pick >> 6)];
    let split = usize::from(pick & 0x3f) + 1;
    let whole = inflate(stream, stream.len().max(1), limit);
    let pieces = inflate(stream, split, limit);
    match (&whole.1, &pieces.1) {
        (Ok(()), Ok(())) => assert_eq!(whole.0, pieces.0, "split {split} changed the output"),
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "split {split} changed the error");
            let (short, long) = if whole.0.len() <= pieces.0.len() {
                (&whole.0, &pieces.0)
            } else {
                (&pieces.0, &whole.0)
            };
            assert!(long.starts_with(short), "split {split} changed the output before {a:?}");
        }
        (a, b) => panic!("split {split} changed the outcome: {a:?} vs {b:?}"),
    }
    let packed = gzip::compress(stream);
    let (out, result) = inflate(&packed, split, limit);
    if stream.len() <= limit {
        assert_eq!(result, Ok(()), "our own gzip does not decode");
        assert_eq!(out, stream, "our own gzip decodes to other bytes");
    } else {
        assert_eq!(result, Err(GzipError::TooLarge));
    }
    let _ = gzip::accepts_gzip(Some(&String::from_utf8_lossy(stream)));
}

/// Feeds `stream` in reads of `split` bytes to a decoder limited to `limit`, then finishes.
fn inflate(stream: &[u8], split: usize, limit: usize) -> Inflated {
    let mut decoder = GzipDecoder::new(limit);
    let mut out = Vec::new();
    let mut result = Ok(());
    for piece in stream.chunks(split) {
        result = decoder.feed(piece, &mut |bytes| out.extend_from_slice(bytes));
        assert!(out.len() <= limit, "{} bytes out past a limit of {limit}", out.len());
        if result.is_err() {
            break;
        }
    }
    assert_eq!(decoder.produced(), out.len(), "produced() disagrees with the sink");
    (out, result.and_then(|()| decoder.finish()))
}
