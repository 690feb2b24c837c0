//! Integration tests of knowing when the cloud is really gone (issue 12): the real
//! lite-apiserver in front of the fake kube-apiserver, through a TCP relay standing in for
//! the link, with the fake's outage modes (`/debug/fault`) and the relay's faults. The relay
//! itself is tested first, since the other tests trust it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread;
use std::time::{Duration, Instant};

use common::client::StreamEnd;
use common::*;

const POD: &str = "/api/v1/namespaces/default/pods/web-1";
const PODS: &str = "/api/v1/namespaces/default/pods";
const CACHE_HEADER: &str = "x-lite-apiserver-cache";
/// Generous bound for anything asynchronous (the prober needs a few probes to decide).
const SETTLE: Duration = Duration::from_secs(20);
/// How long the flapping link lasts, and how often it cuts every open connection.
const FLAP_TIME: Duration = Duration::from_secs(20);
const CUT_EVERY: Duration = Duration::from_secs(1);

/// The fake, a relay in front of it, and lite-apiserver (diagnostics on) pointed at the
/// relay. Fields drop in order: the proxy, the relay, the fake, the PKI directory.
struct Link {
    lite: Lite,
    diagnostics: Diagnostics,
    relay: Relay,
    fake: FakeApiserver,
    env: TestEnv,
}

impl Link {
    fn start(label: &str, lite_args: &[&str]) -> Link {
        Link::start_with(label, &[], lite_args)
    }

    fn start_with(label: &str, fake_args: &[&str], lite_args: &[&str]) -> Link {
        let env = TestEnv::new(label);
        let fake = env.fake(fake_args);
        let relay = Relay::start(fake.port);
        let (lite, diagnostics) = Diagnostics::lite(&env, relay.port, lite_args);
        let link = Link { lite, diagnostics, relay, fake, env };
        link.wait_cloud_up(true);
        link
    }

    fn kubelet(&self) -> Client {
        self.env.client(self.lite.port, Some("kubelet"))
    }

    /// A kubelet client of the fake itself, bypassing the proxy and the relay.
    fn direct(&self) -> Client {
        self.env.client(self.fake.port, Some("kubelet"))
    }

    /// An admin client of the fake (the cloud changing on its own).
    fn admin(&self) -> Client {
        self.env.client(self.fake.port, Some("admin"))
    }

    /// Creates pod `name` at the fake, bypassing the proxy.
    fn create_pod(&self, name: &str) {
        let body = serde_json::to_vec(&pod(name)).expect("pod JSON");
        let headers = [("Content-Type", "application/json")];
        self.admin().request("POST", PODS, &headers, &body).expect_status(201);
    }

    /// Sets the fake's outage mode.
    fn fault(&self, mode: &str) {
        let mut admin = self.admin();
        let resp = admin.request("POST", &format!("/debug/fault?mode={mode}"), &[], b"");
        assert_eq!(resp.status, 200, "set fault {mode}: {}", resp.text());
        assert_eq!(resp.json()["mode"], mode, "{}", resp.text());
    }

    fn cloud_up(&self) -> bool {
        self.diagnostics.metric("lite_apiserver_cloud_up") == 1
    }

    fn wait_cloud_up(&self, up: bool) {
        let reached = wait_for(SETTLE, || (self.cloud_up() == up).then_some(()));
        assert!(reached.is_some(), "the cloud never became up={up}: {:?}", self.readyz());
    }

    /// `lite_apiserver_cloud_transitions_total`: up→down and down→up changes so far.
    fn transitions(&self) -> u64 {
        self.diagnostics.metric("lite_apiserver_cloud_transitions_total")
    }

    fn readyz(&self) -> (u16, String) {
        self.diagnostics.get("/readyz")
    }

    /// Reads `path` once online and waits until the cache has stored it.
    fn cache(&self, path: &str) -> Response {
        let stored_before = self.diagnostics.metric("lite_apiserver_cache_stored_total");
        let online = self.kubelet().get(path).expect_status(200);
        assert!(online.header(CACHE_HEADER).is_none(), "not from the cloud: {:?}", online.headers);
        let stored = wait_for(SETTLE, || {
            let stored = self.diagnostics.metric("lite_apiserver_cache_stored_total");
            (stored > stored_before).then_some(())
        });
        assert!(stored.is_some(), "the cache never stored {path}");
        online
    }
}

fn assert_cache_hit(resp: &Response, online: &Response, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.text());
    assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "{what}: {:?}", resp.headers);
    assert!(resp.body == online.body, "{what}: the cached body differs: {}", resp.text());
}

// ---------------------------------------------------------------------------------------
// The relay.
// ---------------------------------------------------------------------------------------

/// An echo server on loopback (a thread per connection, for the rest of the test binary).
fn echo_server() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind echo server");
    let port = listener.local_addr().expect("echo addr").port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || {
                let Ok(mut reader) = conn.try_clone() else { return };
                let _ = std::io::copy(&mut reader, &mut &conn);
            });
        }
    });
    port
}

fn connect(relay: &Relay, timeout: Duration) -> TcpStream {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, relay.port)).expect("connect relay");
    stream.set_read_timeout(Some(timeout)).expect("read timeout");
    stream
}

/// Sends `payload` through the relay to the echo server; what came back, or the error kind.
fn echo(stream: &mut TcpStream, payload: &[u8]) -> Result<Vec<u8>, ErrorKind> {
    stream.write_all(payload).map_err(|e| e.kind())?;
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).map_err(|e| e.kind())?;
    Ok(back)
}

#[test]
fn relay_passes_black_holes_refuses_and_cuts() {
    let relay = Relay::start(echo_server());
    let quick = Duration::from_millis(300);
    let mut open = connect(&relay, SETTLE);
    assert_eq!(echo(&mut open, b"ping"), Ok(b"ping".to_vec()));

    relay.set_mode(RelayMode::BlackHole);
    let mut swallowed = connect(&relay, quick);
    assert_eq!(echo(&mut swallowed, b"ping"), Err(ErrorKind::WouldBlock), "new connection");
    open.set_read_timeout(Some(quick)).expect("read timeout");
    assert_eq!(echo(&mut open, b"ping"), Err(ErrorKind::WouldBlock), "open connection");

    relay.set_mode(RelayMode::Pass);
    let mut fresh = connect(&relay, SETTLE);
    assert_eq!(echo(&mut fresh, b"ping"), Ok(b"ping".to_vec()));
    relay.cut_all();
    let mut byte = [0u8; 1];
    assert_eq!(fresh.read(&mut byte).map_err(|e| e.kind()).err(), Some(ErrorKind::ConnectionReset));
    assert!(relay.stats().cut >= 3, "{:?}", relay.stats());

    relay.set_mode(RelayMode::Refuse);
    let refused = wait_for(SETTLE, || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, relay.port)).err().map(|e| e.kind())
    });
    assert_eq!(refused, Some(ErrorKind::ConnectionRefused));
    relay.set_mode(RelayMode::Pass);
    let mut back = wait_for(SETTLE, || TcpStream::connect((Ipv4Addr::LOCALHOST, relay.port)).ok())
        .expect("the relay listens again");
    back.set_read_timeout(Some(SETTLE)).expect("read timeout");
    assert_eq!(echo(&mut back, b"ping"), Ok(b"ping".to_vec()));
}

#[test]
fn relay_resets_the_given_fraction_of_connections() {
    let relay = Relay::start(echo_server());
    relay.set_mode(RelayMode::ResetFraction(0.3));
    // More bytes than any "reset after some bytes" budget, so every planned reset shows.
    let payload = vec![b'x'; 16 * 1024];
    let failed = (0..100).filter(|_| echo(&mut connect(&relay, SETTLE), &payload).is_err()).count();
    assert_eq!(relay.stats().reset, failed, "each planned reset shows, nothing else fails");
    assert!((15..=45).contains(&failed), "{failed} of 100 connections reset");
    relay.set_mode(RelayMode::ResetFraction(0.0));
    assert!((0..20).all(|_| echo(&mut connect(&relay, SETTLE), &payload).is_ok()));
}

// ---------------------------------------------------------------------------------------
// The fake's outage modes, seen directly.
// ---------------------------------------------------------------------------------------

#[test]
fn fake_fault_modes_answer_like_the_outages_they_stand_for() {
    let env = TestEnv::new("fault-modes");
    let fake = env.fake(&[]);
    let mut admin = env.client(fake.port, Some("admin"));
    let set = |admin: &mut Client, mode: &str| {
        admin.request("POST", &format!("/debug/fault?mode={mode}"), &[], b"").expect_status(200)
    };
    assert_eq!(admin.get("/debug/fault").json()["mode"], "none");

    set(&mut admin, "etcd-down");
    let readyz = admin.get("/readyz");
    assert_eq!(readyz.status, 500);
    assert!(readyz.text().contains("[-]etcd failed"), "{}", readyz.text());
    assert_status_body(&admin.get(POD), 503);
    assert_eq!(admin.get(POD).json()["reason"], "ServiceUnavailable");
    assert_eq!(admin.get("/debug/fault").json()["mode"], "etcd-down", "debug is never faulty");

    set(&mut admin, "lb-dead");
    for path in ["/readyz", POD] {
        let resp = admin.get(path);
        assert_eq!(resp.status, 503, "{path}");
        assert!(resp.text().contains("No server is available"), "{path}: {}", resp.text());
    }

    set(&mut admin, "throttle");
    assert_eq!(admin.get("/readyz").status, 200, "health probes are not throttled");
    let throttled = admin.get(POD);
    assert_status_body(&throttled, 429);
    assert_eq!(throttled.json()["reason"], "TooManyRequests");
    assert_eq!(throttled.header("retry-after"), Some("1"));

    let unknown = admin.request("POST", "/debug/fault?mode=on-fire", &[], b"");
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    set(&mut admin, "none");
    assert_eq!(admin.get(POD).status, 200);
}

// ---------------------------------------------------------------------------------------
// Through lite-apiserver.
// ---------------------------------------------------------------------------------------

/// A load balancer in front of an apiserver that lost etcd: `/readyz` answers `500` and
/// every request `503`. The prober declares the cloud down, and `/readyz` of lite-apiserver
/// names the cloud's `500` and the failing check; reads come from the cache.
#[test]
fn readyz_500_takes_the_node_offline_and_is_named() {
    let link = Link::start("etcd-down-probe", &[]);
    let online = link.cache(POD);
    assert_eq!(link.transitions(), 0, "the first verdict of a fresh process is no transition");
    link.fault("etcd-down");
    link.wait_cloud_up(false);
    let (status, body) = link.readyz();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("500") && body.contains("etcd"), "/readyz: {body}");
    let mut kubelet = link.kubelet();
    for round in 0..3 {
        assert_cache_hit(&kubelet.get(POD), &online, &format!("offline read #{round}"));
    }
    link.fault("none");
    link.wait_cloud_up(true);
    let fresh = link.kubelet().get(POD);
    assert!(fresh.header(CACHE_HEADER).is_none(), "back online: {:?}", fresh.headers);
    assert_eq!(link.transitions(), 2, "one offline/online round trip");
}

/// The same outage from a client's view: from the first request that meets it, the node
/// answers that read from the cache (stale-if-error on the cloud's `503`, before the
/// prober has made up its mind).
#[test]
fn reads_meeting_a_dead_apiserver_behind_an_lb_come_from_the_cache() {
    let link = Link::start("etcd-down-reads", &[]);
    let online = link.cache(POD);
    link.fault("etcd-down");
    let mut kubelet = link.kubelet();
    for round in 0..6 {
        assert_cache_hit(&kubelet.get(POD), &online, &format!("read #{round}"));
    }
    let reason = wait_for(SETTLE, || {
        let (status, body) = link.readyz();
        (status == 503).then_some(body)
    });
    let reason = reason.expect("the prober never declared the cloud down");
    assert!(reason.contains("500"), "/readyz: {reason}");
    let stale =
        link.diagnostics.metric(r#"lite_apiserver_stale_answers_total{reason="cloud_error"}"#);
    assert!(stale > 0, "answers standing in for the cloud's 503 are not counted");
}

/// Samples `lite_apiserver_cloud_up` while `work` runs; the number of offline→online
/// transitions seen. (A transitions counter in `/metrics` would be exact; a flip takes at
/// least two probes a second apart, so sampling every 100 ms misses none.)
fn count_returns(link: &Link, mut work: impl FnMut() -> bool) -> usize {
    let mut returns = 0;
    let mut was_up = link.cloud_up();
    let mut last_sample = Instant::now();
    while work() {
        if last_sample.elapsed() >= Duration::from_millis(100) {
            let up = link.cloud_up();
            returns += usize::from(up && !was_up);
            was_up = up;
            last_sample = Instant::now();
        }
    }
    returns
}

/// A lossy link: every open connection is cut every second, and 30% of new connections
/// are reset (at once or after some bytes). Every read of a cached object is answered (by
/// the cloud or the cache), and the node goes offline and back at most once.
#[test]
fn flapping_link_loses_no_read_and_flips_at_most_once() {
    let link = Link::start("flapping", &[]);
    let online = link.cache(POD);
    link.relay.set_mode(RelayMode::ResetFraction(0.3));
    let mut kubelet = link.kubelet().timeout(SETTLE);
    let (mut reads, mut lost) = (0, Vec::new());
    let until = Instant::now() + FLAP_TIME;
    let mut last_cut = Instant::now();
    let returns = count_returns(&link, || {
        if last_cut.elapsed() >= CUT_EVERY {
            link.relay.cut_all();
            last_cut = Instant::now();
        }
        match kubelet.try_get(POD) {
            Ok(resp) if resp.status == 200 && resp.body == online.body => {}
            Ok(resp) => lost.push(format!("#{reads}: {} {}", resp.status, resp.text())),
            Err(e) => lost.push(format!("#{reads}: {e}")),
        }
        reads += 1;
        thread::sleep(Duration::from_millis(50));
        Instant::now() < until
    });
    let stats = link.relay.stats();
    assert!(stats.reset > 0 && stats.cut > 0, "the link never failed: {stats:?}");
    assert!(
        lost.is_empty(),
        "{} of {reads} reads lost ({stats:?}):\n{}",
        lost.len(),
        lost.join("\n")
    );
    assert!(returns <= 1, "the node came back online {returns} times in {FLAP_TIME:?}");
}

/// API priority and fairness: a `429` reaches the client unchanged, with its `Retry-After`,
/// even for an object the cache holds (the client must back off, not get stale data).
#[test]
fn throttled_reads_reach_the_client_unchanged() {
    let link = Link::start("throttle", &[]);
    link.cache(POD);
    link.fault("throttle");
    let direct = link.direct().get(POD);
    let resp = link.kubelet().get(POD);
    assert_status_body(&resp, 429);
    assert_eq!(resp.header("retry-after"), Some("1"), "{:?}", resp.headers);
    assert!(resp.header(CACHE_HEADER).is_none(), "{:?}", resp.headers);
    assert_eq!(resp.json(), direct.json(), "the Status changed on the way");
    assert!(link.cloud_up(), "a throttled apiserver is up");
}

/// A write answered `503` by the cloud reaches the client unchanged: writes never come from
/// the cache.
#[test]
fn a_503_answer_to_a_write_reaches_the_client_unchanged() {
    let link = Link::start("write-503", &[]);
    link.fault("etcd-down");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "new-pod", "namespace": "default"},
    });
    let body = serde_json::to_vec(&pod).expect("pod JSON");
    let headers = [("Content-Type", "application/json")];
    let resp = link.kubelet().request("POST", PODS, &headers, &body);
    assert_status_body(&resp, 503);
    assert_eq!(resp.json()["reason"], "ServiceUnavailable", "{}", resp.text());
    assert!(resp.header(CACHE_HEADER).is_none(), "{:?}", resp.headers);
}

// ---------------------------------------------------------------------------------------
// Watches across an outage.
// ---------------------------------------------------------------------------------------

/// The fake sends BOOKMARKs often, so a relayed watch has bytes moving when it is cut.
const FAST_BOOKMARKS: &[&str] = &["--bookmark-interval-ms", "200"];

/// A watch of the pods from `version`, with BOOKMARKs.
fn watch_path(version: &str) -> String {
    format!("{PODS}?watch=true&resourceVersion={version}&allowWatchBookmarks=true")
}

/// Reads `watch` to its end and asserts it ended with the terminating chunk, every event
/// whole (a half event would not parse as JSON); the events read.
fn read_to_clean_end(watch: &mut WatchStream, what: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + SETTLE;
    let mut events = Vec::new();
    while let Some(event) = watch.next_event(deadline.saturating_duration_since(Instant::now())) {
        assert!(
            event["type"].is_string() && event["object"]["metadata"].is_object(),
            "{what}: not a whole watch event: {event}"
        );
        events.push(event);
    }
    assert_eq!(watch.end(), Some(&StreamEnd::Clean), "{what}: how the stream ended");
    events
}

/// Watches the pods through the proxy from the cached list's version and sees two pods
/// made at the fake arrive; the client, its watch, and the version of the last ADDED.
fn relayed_watch(link: &Link) -> (Client, WatchStream, String) {
    let list = link.cache(PODS).json();
    let mut kubelet = link.kubelet();
    let mut watch = kubelet.watch(&watch_path(&resource_version(&list)));
    assert!(watch.head.headers.get(CACHE_HEADER).is_none(), "{:?}", watch.head.headers);
    let mut last_seen = String::new();
    for name in ["seen-online-1", "seen-online-2"] {
        link.create_pod(name);
        last_seen = resource_version(&watch.expect_change(SETTLE, "ADDED", name)["object"]);
    }
    (kubelet, watch, last_seen)
}

/// The client re-watches from `last_seen` on the connection its ended watch leaves, as
/// client-go does: the node being offline, the proxy holds it from the cache, replaying
/// nothing the client has seen, until its `timeoutSeconds` ends it cleanly.
fn rewatch_offline(mut kubelet: Client, ended: WatchStream, last_seen: &str) {
    assert!(kubelet.take_back(ended), "the cleanly ended watch left no usable connection");
    let path = format!("{}&timeoutSeconds=3", watch_path(last_seen));
    let mut resumed = kubelet.try_watch(&path, &[]).expect("re-watch on the same connection");
    assert_eq!(kubelet.connections_opened(), 1, "the re-watch needed a new connection");
    assert_eq!(resumed.head.headers.get(CACHE_HEADER), Some("hit"), "{:?}", resumed.head.headers);
    let replayed = read_to_clean_end(&mut resumed, "the offline re-watch");
    let changes: Vec<_> = replayed.iter().filter(|e| e["type"] != "BOOKMARK").collect();
    assert!(changes.is_empty(), "the re-watch replayed events already seen: {changes:?}");
}

/// The link is cut mid-stream (every connection reset, new ones refused): the client gets
/// the events it was sent whole, then the terminating chunk — not an abrupt close that
/// some informers treat as fatal — and its re-watch is held from the cache.
#[test]
fn a_watch_cut_mid_stream_ends_cleanly_and_resumes_from_the_cache() {
    let link = Link::start_with("watch-cut", FAST_BOOKMARKS, &[]);
    let (kubelet, mut watch, last_seen) = relayed_watch(&link);
    link.relay.set_mode(RelayMode::Refuse);
    link.relay.cut_all();
    read_to_clean_end(&mut watch, "the watch cut mid-stream");
    link.wait_cloud_up(false);
    rewatch_offline(kubelet, watch, &last_seen);
}

/// The prober declares the cloud down (`/readyz` answers `500`) while the fake still feeds
/// the relayed watch: the proxy ends that watch itself, cleanly, and the re-watch is held
/// from the cache.
#[test]
fn a_watch_ended_by_the_prober_ends_cleanly_and_resumes_from_the_cache() {
    let link = Link::start_with("watch-prober", FAST_BOOKMARKS, &[]);
    let (kubelet, mut watch, last_seen) = relayed_watch(&link);
    link.fault("etcd-down");
    link.wait_cloud_up(false);
    read_to_clean_end(&mut watch, "the watch of a cloud declared down");
    rewatch_offline(kubelet, watch, &last_seen);
}

// ---------------------------------------------------------------------------------------
// Reads without waiting on a dead link.
// ---------------------------------------------------------------------------------------

/// Long enough that a read waiting for the connect would be obvious.
const LONG_CONNECT_TIMEOUT: &str = "--timeout=10";
/// A client deadline well inside it.
const PROMPT: Duration = Duration::from_secs(5);

/// A node rebooted on a cut link (connects hang): the fresh process does not know the
/// cloud's state yet, and its first reads of cached objects come from the cache instead of
/// waiting `--timeout` for the connect.
#[test]
fn a_proxy_restarted_on_a_cut_link_answers_from_the_cache_without_waiting() {
    let mut link = Link::start("restart-cut", &[LONG_CONNECT_TIMEOUT]);
    let online = link.cache(POD);
    link.relay.set_mode(RelayMode::BlackHole);
    link.lite.restart();
    link.diagnostics.wait_up(&link.lite);
    let mut kubelet = link.kubelet().timeout(PROMPT);
    for round in 0..3 {
        let resp = kubelet.try_get(POD).unwrap_or_else(|e| panic!("read #{round}: {e}"));
        assert_cache_hit(&resp, &online, &format!("read #{round} after the restart"));
    }
}

/// The cloud accepts the request on a pooled connection and never answers (the relay
/// swallows open connections too): with `--cloud-response-timeout=1` the read of a cached
/// object is answered from the cache, long before the stall timeout.
#[test]
fn a_read_without_an_answer_head_in_time_comes_from_the_cache() {
    let link = Link::start("head-timeout", &["--cloud-response-timeout=1"]);
    let online = link.cache(POD);
    link.relay.set_mode(RelayMode::BlackHole);
    let resp = link.kubelet().timeout(PROMPT).try_get(POD).expect("read on a silent link");
    assert_cache_hit(&resp, &online, "read the cloud never answered");
    let stale =
        link.diagnostics.metric(r#"lite_apiserver_stale_answers_total{reason="no_answer"}"#);
    assert!(stale > 0, "the answer is not counted as stale for no answer");
}

// ---------------------------------------------------------------------------------------
// Coming back without a herd.
// ---------------------------------------------------------------------------------------

/// Offline watches held when the cloud returns.
const HELD_WATCHES: usize = 50;
const SPREAD_SECONDS: &str = "--reconnect-spread=5";

/// Where the clients of held watches report, one channel per step so the steps of fast
/// and slow clients do not mix.
#[derive(Clone)]
struct Reports {
    holding: Sender<()>,
    ended: Sender<(Instant, Option<StreamEnd>)>,
    /// The re-watch's cache header (none: from the cloud) and the connections its client
    /// has opened (one: the re-watch went on the held watch's connection).
    rewatched: Sender<(Option<String>, usize)>,
    converged: Sender<bool>,
}

/// The receiving ends of [`Reports`].
struct Inbox {
    holding: Receiver<()>,
    ended: Receiver<(Instant, Option<StreamEnd>)>,
    rewatched: Receiver<(Option<String>, usize)>,
    converged: Receiver<bool>,
}

fn reports() -> (Reports, Inbox) {
    let (holding, holding_rx) = channel();
    let (ended, ended_rx) = channel();
    let (rewatched, rewatched_rx) = channel();
    let (converged, converged_rx) = channel();
    let inbox = Inbox {
        holding: holding_rx,
        ended: ended_rx,
        rewatched: rewatched_rx,
        converged: converged_rx,
    };
    (Reports { holding, ended, rewatched, converged }, inbox)
}

/// One client: an offline watch from `version`, held until the cloud's return ends it; then
/// a re-watch on the same connection, which must see pod `newcomer` made after the return.
fn held_watch_client(mut kubelet: Client, version: String, newcomer: &str, reports: Reports) {
    let path = watch_path(&version);
    let mut held = kubelet.watch(&format!("{path}&timeoutSeconds=600"));
    assert_eq!(held.head.headers.get(CACHE_HEADER), Some("hit"), "not an offline watch");
    let _ = reports.holding.send(());
    let ended = held.wait_closed(Duration::from_secs(120));
    let _ = reports.ended.send((Instant::now(), held.end().cloned()));
    if !ended || !kubelet.take_back(held) {
        return;
    }
    let mut online = kubelet.watch(&path);
    let cache = online.head.headers.get(CACHE_HEADER).map(str::to_string);
    let _ = reports.rewatched.send((cache, kubelet.connections_opened()));
    let deadline = Instant::now() + SETTLE * 2;
    let converged = loop {
        match online.next_event(deadline.saturating_duration_since(Instant::now())) {
            Some(event) if event["type"] == "ADDED" && event_name(&event) == newcomer => {
                break true;
            }
            Some(_) => {}
            None => break false,
        }
    };
    let _ = reports.converged.send(converged);
}

/// The next `count` reports of one step, each within `timeout`; panics on a missing one.
fn collect<T>(reports: &Receiver<T>, count: usize, timeout: Duration, step: &str) -> Vec<T> {
    (0..count)
        .map(|i| {
            reports.recv_timeout(timeout).unwrap_or_else(|e| panic!("{step}: report {i}: {e}"))
        })
        .collect()
}

/// How many of `times` fall in each whole second after the first.
fn per_second(times: &[Instant]) -> Vec<usize> {
    let first = times.iter().min().copied().expect("some times");
    let mut buckets = Vec::new();
    for t in times {
        let second = t.duration_since(first).as_secs() as usize;
        buckets.resize(buckets.len().max(second + 1), 0);
        buckets[second] += 1;
    }
    buckets
}

/// The cloud returns while many watches are held from the cache: they end cleanly, spread
/// over `--reconnect-spread`, and every client's re-watch reaches the cloud and sees what
/// changed there after the return.
#[test]
fn held_watches_end_spread_over_the_reconnect_window_and_converge() {
    let link = Link::start("reconnect-spread", &[SPREAD_SECONDS]);
    let version = resource_version(&link.cache(PODS).json());
    // The link goes: open connections (the prober's kept one too) cut, new ones refused.
    link.relay.set_mode(RelayMode::Refuse);
    link.relay.cut_all();
    link.wait_cloud_up(false);
    let newcomer = "born-after-the-return";
    let (reports, inbox) = reports();
    let clients: Vec<_> = (0..HELD_WATCHES)
        .map(|_| {
            let (kubelet, version, reports) = (link.kubelet(), version.clone(), reports.clone());
            thread::spawn(move || held_watch_client(kubelet, version, newcomer, reports))
        })
        .collect();
    collect(&inbox.holding, HELD_WATCHES, SETTLE, "holding offline");

    link.relay.set_mode(RelayMode::Pass);
    let ends = collect(&inbox.ended, HELD_WATCHES, SETTLE * 3, "ended");
    let times: Vec<Instant> = ends
        .into_iter()
        .map(|(at, end)| match end {
            Some(StreamEnd::Clean) => at,
            end => panic!("a held watch did not end cleanly: {end:?}"),
        })
        .collect();
    let first = *times.iter().min().expect("ends");
    let span = times.iter().max().expect("ends").duration_since(first);
    let buckets = per_second(&times);
    assert!(span >= Duration::from_secs(3), "the ends span only {span:?}: {buckets:?}");
    let crowded = buckets.iter().max().copied().unwrap_or(0);
    assert!(crowded <= HELD_WATCHES / 2, "{crowded} ends in one second: {buckets:?}");

    for (cache, connections) in collect(&inbox.rewatched, HELD_WATCHES, SETTLE, "re-watched") {
        assert_eq!(cache, None, "a re-watch after the return came from the cache");
        assert_eq!(connections, 1, "a re-watch needed a new connection");
    }
    link.create_pod(newcomer);
    let converged = collect(&inbox.converged, HELD_WATCHES, SETTLE * 3, "converged");
    let converged = converged.into_iter().filter(|saw| *saw).count();
    assert_eq!(converged, HELD_WATCHES, "clients that saw {newcomer} after the return");
    for client in clients {
        client.join().expect("a client thread panicked");
    }
}

// ---------------------------------------------------------------------------------------
// The prober's kept-alive connection.
// ---------------------------------------------------------------------------------------

/// Steady probes measured after the first one.
const MEASURED_PROBES: u64 = 5;
/// Longer than a probe interval while up (5 s, +20% jitter).
const NEXT_PROBE: Duration = Duration::from_secs(10);
const RECEIVED: &str = r#"lite_apiserver_upstream_bytes_total{direction="received"}"#;
const SENT: &str = r#"lite_apiserver_upstream_bytes_total{direction="sent"}"#;

/// Bytes on the cloud link so far, both ways, as (received, sent).
fn link_bytes(link: &Link) -> (u64, u64) {
    let text = link.diagnostics.metrics();
    let value = |series| metric_value(&text, series).expect("upstream bytes in /metrics");
    (value(RECEIVED), value(SENT))
}

/// Waits for the next exchange on the cloud link (with no client traffic, a probe): the
/// link's byte counts once they have grown past `after`.
fn next_probe(link: &Link, after: (u64, u64)) -> (u64, u64) {
    let grown = wait_for(NEXT_PROBE, || {
        let bytes = link_bytes(link);
        (bytes.0 > after.0).then_some(bytes)
    });
    grown.unwrap_or_else(|| panic!("no probe within {NEXT_PROBE:?}: {:?}", link.readyz()))
}

/// With no client traffic the probes share one kept-alive connection: after the first
/// probe, the following ones open no connection, and each costs one small request and
/// answer instead of a TCP and TLS handshake.
#[test]
fn steady_probes_share_one_kept_alive_connection() {
    let link = Link::start("probe-keep-alive", &[]);
    let first = next_probe(&link, link_bytes(&link));
    let accepted = link.relay.stats().accepted;
    let mut last = first;
    for _ in 0..MEASURED_PROBES {
        last = next_probe(&link, last);
    }
    let opened = link.relay.stats().accepted - accepted;
    let bytes = (last.0 + last.1) - (first.0 + first.1);
    let per_probe = bytes / MEASURED_PROBES;
    eprintln!("{MEASURED_PROBES} steady probes: {bytes} bytes, {per_probe} bytes a probe");
    assert_eq!(opened, 0, "connections opened by {MEASURED_PROBES} steady probes");
    assert_eq!(link.relay.open_connections(), 1, "the prober's kept connection");
    assert!(link.cloud_up());
}

/// Each time the link cuts every connection, the next probe meets its kept connection
/// reset and retries at once on a new one: with `--cloud-down-after=1`, a stale
/// connection counted as a failed probe would take the node offline.
#[test]
fn a_cut_kept_connection_is_retried_on_a_new_one_without_a_flip() {
    let link = Link::start("probe-cut", &["--cloud-down-after=1"]);
    let mut last = next_probe(&link, link_bytes(&link));
    for cut in 0..3 {
        let accepted = link.relay.stats().accepted;
        link.relay.cut_all();
        last = next_probe(&link, last);
        assert!(link.relay.stats().accepted > accepted, "cut #{cut}: no new connection");
        assert!(link.cloud_up(), "cut #{cut}: {:?}", link.readyz());
        assert_eq!(link.transitions(), 0, "cut #{cut}: the cloud state changed");
    }
    // A flip the last probe caused has reached the reactor by the next probe.
    next_probe(&link, last);
    assert_eq!(link.transitions(), 0, "the cloud state changed");
}

/// A probe answered `500` closes the kept connection, so the next probe connects afresh
/// (behind a load balancer, perhaps to another apiserver): while down, each probe opens a
/// connection of its own.
#[test]
fn a_not_ready_answer_closes_the_kept_connection() {
    let link = Link::start("probe-not-ready", &[]);
    link.fault("etcd-down");
    link.wait_cloud_up(false);
    let mut last = next_probe(&link, link_bytes(&link));
    let accepted = link.relay.stats().accepted;
    for _ in 0..2 {
        last = next_probe(&link, last);
    }
    let opened = link.relay.stats().accepted - accepted;
    assert!(opened >= 2, "2 probes answered 500 opened {opened} connections");
}
