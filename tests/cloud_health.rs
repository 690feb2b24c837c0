//! Integration tests of knowing when the cloud is really gone (issue 12): the real
//! lite-apiserver in front of the fake kube-apiserver, through a TCP relay standing in for
//! the link, with the fake's outage modes (`/debug/fault`) and the relay's faults. The relay
//! itself is tested first, since the other tests trust it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

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
