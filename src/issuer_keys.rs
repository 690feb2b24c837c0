//! The cloud issuer's service-account keys: built from its discovery document and key set
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`), stored as one JSON value so
//! they survive a reboot, and a fetcher thread that refreshes them periodically and on
//! request (a token named an unknown `kid`), at most once a minute on request, so a forged
//! `kid` cannot turn every request into a fetch.
//!
//! Reading those documents needs RBAC for the identity that fetches them: kube-apiserver's
//! `system:service-account-issuer-discovery` ClusterRole.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::jwt::{Discovery, DocumentError, KeySet};

pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// Where kube-apiserver serves its keys, whatever `jwks_uri` the discovery names.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// Documents larger than this are not an issuer's (a JWKS holds a few keys): the
/// `max_body` to give the transport.
pub const MAX_DOCUMENT_LEN: usize = 1024 * 1024;
const STORED_VERSION: u64 = 1;

/// Why documents (fetched or stored) gave no keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysError {
    TooLarge,
    NotJson,
    Document(DocumentError),
    /// Stored by another version of this format.
    StoredVersion,
}

impl fmt::Display for KeysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeysError::TooLarge => write!(f, "document larger than {MAX_DOCUMENT_LEN} bytes"),
            KeysError::NotJson => f.write_str("document is not JSON"),
            KeysError::Document(DocumentError::NoIssuer) => f.write_str("discovery has no issuer"),
            KeysError::Document(DocumentError::NoKeysArray) => f.write_str("JWKS has no keys"),
            KeysError::StoredVersion => f.write_str("stored keys of an unknown format"),
        }
    }
}

/// The issuer and its keys, with the documents they came from (for `to_stored`).
pub struct IssuerKeys {
    discovery: Discovery,
    keys: KeySet,
    /// `{"version":1,"discovery":{..},"jwks":{..}}`.
    stored: Value,
}

impl fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.discovery.issuer)
            .field("keys", &self.keys)
            .finish()
    }
}

impl IssuerKeys {
    /// From the bodies of the discovery document and the JWKS.
    pub fn from_documents(discovery: &[u8], jwks: &[u8]) -> Result<IssuerKeys, KeysError> {
        if discovery.len() > MAX_DOCUMENT_LEN || jwks.len() > MAX_DOCUMENT_LEN {
            return Err(KeysError::TooLarge);
        }
        IssuerKeys::from_values(parse_json(discovery)?, parse_json(jwks)?)
    }

    /// From what `to_stored` gave.
    pub fn from_stored(bytes: &[u8]) -> Result<IssuerKeys, KeysError> {
        let mut stored = parse_json(bytes)?;
        if stored.get("version").and_then(Value::as_u64) != Some(STORED_VERSION) {
            return Err(KeysError::StoredVersion);
        }
        let mut take = |name: &str| stored.get_mut(name).map(Value::take).unwrap_or_default();
        let discovery = take("discovery");
        IssuerKeys::from_values(discovery, take("jwks"))
    }

    fn from_values(discovery: Value, jwks: Value) -> Result<IssuerKeys, KeysError> {
        let parsed = Discovery::from_value(&discovery).map_err(KeysError::Document)?;
        let keys = KeySet::from_value(&jwks).map_err(KeysError::Document)?;
        let stored = json!({"version": STORED_VERSION, "discovery": discovery, "jwks": jwks});
        Ok(IssuerKeys { discovery: parsed, keys, stored })
    }

    /// Both documents in one JSON value, for the cache database.
    pub fn to_stored(&self) -> Vec<u8> {
        self.stored.to_string().into_bytes()
    }

    pub fn issuer(&self) -> &str {
        &self.discovery.issuer
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, KeysError> {
    serde_json::from_slice(bytes).map_err(|_| KeysError::NotJson)
}

/// When the fetcher fetches.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Between fetches that succeeded.
    pub period: Duration,
    /// After a fetch that failed.
    pub retry: Duration,
    /// The least time from one fetch to one made on request.
    pub min_refetch: Duration,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            period: Duration::from_secs(600),
            retry: Duration::from_secs(60),
            min_refetch: Duration::from_secs(60),
        }
    }
}

/// Why a fetch gave no keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The request failed (the transport's own error, for the log).
    Transport {
        path: &'static str,
        error: String,
    },
    /// The cloud answered, but not 200 (403: the fetching identity lacks the RBAC).
    Status {
        path: &'static str,
        status: u16,
    },
    Keys(KeysError),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Transport { path, error } => write!(f, "GET {path} failed: {error}"),
            FetchError::Status { path, status } => write!(f, "GET {path} answered {status}"),
            FetchError::Keys(error) => write!(f, "{error}"),
        }
    }
}

/// Handle to the fetcher thread; dropping it ends the thread.
pub struct KeyFetcher {
    requests: SyncSender<()>,
}

impl KeyFetcher {
    /// Asks for a fetch soon (e.g. a token named an unknown `kid`). It happens at once if
    /// the last fetch is `min_refetch` old, else then; requests meanwhile merge into it.
    pub fn refresh(&self) {
        // Full means a request is already pending: this one is merged into it.
        let _ = self.requests.try_send(());
    }
}

/// Starts the fetcher: it fetches at once, then on `schedule` and on request, sends keys
/// that differ from the last it sent to `reports` (and writes them to `store`, where a
/// restart finds them), and calls `wake` after each.
/// `fetch(path)` is one GET to the cloud apiserver, answering status and body.
pub fn spawn<F, E>(
    fetch: F,
    schedule: Schedule,
    store: Option<PathBuf>,
    reports: Sender<IssuerKeys>,
    wake: impl Fn() + Send + 'static,
) -> io::Result<KeyFetcher>
where
    F: FnMut(&str) -> Result<(u16, Vec<u8>), E> + Send + 'static,
    E: fmt::Display,
{
    let (requests, requested) = mpsc::sync_channel(1);
    thread::Builder::new()
        .name("issuer-keys".into())
        .spawn(move || run(fetch, schedule, store, requested, reports, wake))?;
    Ok(KeyFetcher { requests })
}

fn run<F, E>(
    mut fetch: F,
    schedule: Schedule,
    store: Option<PathBuf>,
    requested: Receiver<()>,
    reports: Sender<IssuerKeys>,
    wake: impl Fn(),
) where
    F: FnMut(&str) -> Result<(u16, Vec<u8>), E>,
    E: fmt::Display,
{
    let mut limiter = RefetchLimiter::new(schedule.min_refetch);
    let mut last_sent: Option<Value> = None;
    let mut failing = false;
    let mut due = Instant::now();
    loop {
        let now = Instant::now();
        if now >= due {
            limiter.fetched(now);
            match fetch_keys(&mut fetch) {
                Ok(keys) => {
                    failing = false;
                    due = now + schedule.period;
                    if last_sent.as_ref() != Some(&keys.stored) {
                        log::info!("service-account keys of {}: {:?}", keys.issuer(), keys.keys);
                        last_sent = Some(keys.stored.clone());
                        if let Some(path) = &store
                            && let Err(e) = store_keys(path, &keys)
                        {
                            log::warn!(
                                "cannot keep service-account keys in {}: {e}",
                                path.display()
                            );
                        }
                        if reports.send(keys).is_err() {
                            return; // the reactor is gone
                        }
                        wake();
                    }
                }
                Err(error) => {
                    // Offline is normal on an edge node: say it once per outage.
                    if failing {
                        log::debug!("service-account keys not fetched: {error}");
                    } else {
                        log::warn!("service-account keys not fetched: {error}");
                    }
                    failing = true;
                    due = now + schedule.retry;
                }
            }
            continue;
        }
        match requested.recv_timeout(due - now) {
            Ok(()) => due = due.min(limiter.earliest(now)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Writes the keys to a temporary file then renames it over `path` (mode 0600): a power
/// cut leaves the old keys or the new ones, never half of either.
fn store_keys(path: &Path, keys: &IssuerKeys) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file =
        OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
    file.write_all(&keys.to_stored())?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

/// The keys a previous run kept in `path`, if any are there and readable.
pub fn load_stored(path: &Path) -> Option<IssuerKeys> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("cannot read stored service-account keys {}: {e}", path.display());
            return None;
        }
    };
    match IssuerKeys::from_stored(&bytes) {
        Ok(keys) => Some(keys),
        Err(e) => {
            log::warn!("ignoring stored service-account keys {}: {e}", path.display());
            None
        }
    }
}

fn fetch_keys<E: fmt::Display>(
    fetch: &mut impl FnMut(&str) -> Result<(u16, Vec<u8>), E>,
) -> Result<IssuerKeys, FetchError> {
    let discovery = fetch_document(fetch, DISCOVERY_PATH)?;
    let jwks = fetch_document(fetch, JWKS_PATH)?;
    IssuerKeys::from_documents(&discovery, &jwks).map_err(FetchError::Keys)
}

fn fetch_document<E: fmt::Display>(
    fetch: &mut impl FnMut(&str) -> Result<(u16, Vec<u8>), E>,
    path: &'static str,
) -> Result<Vec<u8>, FetchError> {
    match fetch(path) {
        Ok((200, body)) => Ok(body),
        Ok((status, _)) => Err(FetchError::Status { path, status }),
        Err(error) => Err(FetchError::Transport { path, error: error.to_string() }),
    }
}

/// Spaces fetches made on request: each comes at least `min_gap` after the previous one.
struct RefetchLimiter {
    min_gap: Duration,
    last: Option<Instant>,
}

impl RefetchLimiter {
    fn new(min_gap: Duration) -> RefetchLimiter {
        RefetchLimiter { min_gap, last: None }
    }

    fn fetched(&mut self, at: Instant) {
        self.last = Some(at);
    }

    /// The earliest a fetch asked for at `now` may happen.
    fn earliest(&self, now: Instant) -> Instant {
        self.last.map_or(now, |last| (last + self.min_gap).max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const WAIT: Duration = Duration::from_secs(30);

    fn discovery() -> Vec<u8> {
        json!({"issuer": ISSUER, "jwks_uri": format!("{ISSUER}/openid/v1/jwks")})
            .to_string()
            .into_bytes()
    }

    /// A JWKS with one P-256 key (a fixed point on the curve: the generator) named `kid`.
    fn jwks(kid: &str) -> Vec<u8> {
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
            "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU",
        }]})
        .to_string()
        .into_bytes()
    }

    fn kids(keys: &IssuerKeys) -> Vec<String> {
        keys.keys().kids().map(str::to_string).collect()
    }

    #[test]
    fn keys_come_from_the_documents_and_survive_storage() {
        let keys = IssuerKeys::from_documents(&discovery(), &jwks("k1")).unwrap();
        assert_eq!(keys.issuer(), ISSUER);
        assert_eq!(
            keys.discovery().jwks_uri.as_deref(),
            Some(&*format!("{ISSUER}/openid/v1/jwks"))
        );
        assert_eq!(kids(&keys), ["k1"]);
        let restored = IssuerKeys::from_stored(&keys.to_stored()).unwrap();
        assert_eq!(restored.issuer(), ISSUER);
        assert_eq!(kids(&restored), ["k1"]);
        assert_eq!(restored.to_stored(), keys.to_stored());
    }

    #[test]
    fn bad_documents_and_stored_bytes_are_refused() {
        let no_issuer = br#"{"jwks_uri":"x"}"#;
        let error = IssuerKeys::from_documents(no_issuer, &jwks("k1")).err();
        assert_eq!(error, Some(KeysError::Document(DocumentError::NoIssuer)));
        let error = IssuerKeys::from_documents(&discovery(), br#"{"keys":1}"#).err();
        assert_eq!(error, Some(KeysError::Document(DocumentError::NoKeysArray)));
        let error = IssuerKeys::from_documents(b"<html>", &jwks("k1")).err();
        assert_eq!(error, Some(KeysError::NotJson));
        let huge = vec![b' '; MAX_DOCUMENT_LEN + 1];
        assert_eq!(
            IssuerKeys::from_documents(&discovery(), &huge).err(),
            Some(KeysError::TooLarge)
        );
        assert_eq!(IssuerKeys::from_stored(b"").err(), Some(KeysError::NotJson));
        let other_version = br#"{"version":2,"discovery":{},"jwks":{}}"#;
        assert_eq!(IssuerKeys::from_stored(other_version).err(), Some(KeysError::StoredVersion));
        let missing = br#"{"version":1}"#;
        let error = IssuerKeys::from_stored(missing).err();
        assert_eq!(error, Some(KeysError::Document(DocumentError::NoIssuer)));
    }

    #[test]
    fn requested_fetches_come_at_least_the_gap_after_the_last() {
        let start = Instant::now();
        let mut limiter = RefetchLimiter::new(Duration::from_secs(60));
        assert_eq!(limiter.earliest(start), start, "nothing fetched yet");
        limiter.fetched(start);
        let soon = start + Duration::from_secs(10);
        assert_eq!(limiter.earliest(soon), start + Duration::from_secs(60));
        let later = start + Duration::from_secs(61);
        assert_eq!(limiter.earliest(later), later);
    }

    /// What the fake cloud answers for the JWKS; each GET is reported on `seen`.
    struct Cloud {
        jwks: Mutex<(u16, Vec<u8>)>,
    }

    fn start(
        cloud: &Arc<Cloud>,
    ) -> (KeyFetcher, Receiver<IssuerKeys>, Receiver<u16>, Arc<AtomicUsize>) {
        let (seen_tx, seen) = mpsc::channel();
        let served = cloud.clone();
        let fetch = move |path: &str| -> Result<(u16, Vec<u8>), String> {
            let answer = match path {
                DISCOVERY_PATH => (200, discovery()),
                JWKS_PATH => served.jwks.lock().unwrap().clone(),
                _ => return Err(format!("unexpected {path}")),
            };
            if path == JWKS_PATH {
                let _ = seen_tx.send(answer.0);
            }
            Ok(answer)
        };
        let wakes = Arc::new(AtomicUsize::new(0));
        let counted = wakes.clone();
        let wake = move || {
            counted.fetch_add(1, Ordering::SeqCst);
        };
        let hour = Duration::from_secs(3600);
        let schedule = Schedule { period: hour, retry: hour, min_refetch: Duration::ZERO };
        let (reports_tx, reports) = mpsc::channel();
        let fetcher = spawn(fetch, schedule, None, reports_tx, wake).unwrap();
        (fetcher, reports, seen, wakes)
    }

    #[test]
    fn the_fetcher_reports_new_keys_and_not_the_same_twice() {
        let cloud = Arc::new(Cloud { jwks: Mutex::new((200, jwks("k1"))) });
        let (fetcher, reports, seen, wakes) = start(&cloud);
        assert_eq!(seen.recv_timeout(WAIT), Ok(200));
        assert_eq!(kids(&reports.recv_timeout(WAIT).unwrap()), ["k1"]);
        fetcher.refresh();
        assert_eq!(seen.recv_timeout(WAIT), Ok(200), "fetched again, unchanged");
        *cloud.jwks.lock().unwrap() = (200, jwks("k2"));
        fetcher.refresh();
        assert_eq!(seen.recv_timeout(WAIT), Ok(200));
        assert_eq!(kids(&reports.recv_timeout(WAIT).unwrap()), ["k2"]);
        drop(fetcher);
        // The thread ends with its handle; nothing else was reported.
        assert!(reports.recv().is_err());
        assert_eq!(wakes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_fetch_reports_nothing_and_a_refresh_retries() {
        let cloud = Arc::new(Cloud { jwks: Mutex::new((403, b"forbidden".to_vec())) });
        let (fetcher, reports, seen, wakes) = start(&cloud);
        assert_eq!(seen.recv_timeout(WAIT), Ok(403));
        *cloud.jwks.lock().unwrap() = (200, jwks("k1"));
        fetcher.refresh();
        assert_eq!(seen.recv_timeout(WAIT), Ok(200));
        assert_eq!(kids(&reports.recv_timeout(WAIT).unwrap()), ["k1"]);
        drop(fetcher);
        assert!(reports.recv().is_err());
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn fetch_errors_name_the_path() {
        let mut refused = |_: &str| Err::<(u16, Vec<u8>), _>("connection refused");
        let error = fetch_keys(&mut refused).err().unwrap();
        let expected =
            FetchError::Transport { path: DISCOVERY_PATH, error: "connection refused".into() };
        assert_eq!(error, expected);
        assert_eq!(error.to_string(), format!("GET {DISCOVERY_PATH} failed: connection refused"));
        let mut forbidden = |path: &str| {
            Ok::<_, String>(if path == JWKS_PATH { (403, vec![]) } else { (200, discovery()) })
        };
        let error = fetch_keys(&mut forbidden).err().unwrap();
        assert_eq!(error, FetchError::Status { path: JWKS_PATH, status: 403 });
    }
}
