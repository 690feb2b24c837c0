//! In-process tests of the connection layer: `ClientConn` steps, `Exchange::pump` and
//! `Tunnel::step` over real loopback TLS (testing.rs), one turn at a time, with a scripted
//! client and a scripted cloud apiserver. What the reactor would do with an outcome
//! (requests.rs) the test does by hand, so each property is seen at the layer that owns
//! it: backpressure, the retry of a stale pooled connection, the `101` upgrade, the
//! lingering close, every deadline, and how a relayed stream ends when the cloud cuts it.
//! No assertion depends on time passing: tests loop until a condition (testing::until).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::cache::{self, Classified};
use crate::client::{ClientConn, HeadRead, Phase, Step};
use crate::config::{self, Command, Config};
use crate::http1::{self, RequestHead};
use crate::metrics::{Metrics, OpenWatch};
use crate::proxy::{CopyBudget, Exchange, PumpOutcome, Tee};
use crate::status::LocalResponse;
use crate::testing::{self, CLIENT_CN, FakeCloud, Peer, until};
use crate::tunnel::{Tunnel, TunnelStep};
use crate::upstream::UpstreamConn;

/// The exchange reads from the cloud only while the client's queue is below this
/// (proxy.rs, DESIGN.md "Backpressure").
const QUEUE_HIGH_WATER: usize = 16 * 1024;
/// The reactor's scratch buffer: the most one read adds to a queue.
const SCRATCH: usize = 16 * 1024;
/// The terminating chunk of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

const GET_PODS: &str = "GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: edge\r\n\r\n";
const WATCH_PODS: &str =
    "GET /api/v1/namespaces/default/pods?watch=true HTTP/1.1\r\nHost: edge\r\n\r\n";
const CHUNKED_JSON_200: &str =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

/// A client connection through its handshake, the scripted client and cloud at the other
/// ends, and what the reactor would lend an exchange (copy budget, scratch buffer).
struct Rig {
    client: ClientConn,
    user: Peer,
    cloud: Peer,
    fake: FakeCloud,
    metrics: Arc<Metrics>,
    budget: CopyBudget,
    scratch: Vec<u8>,
}

impl Rig {
    /// The rig, and an upstream connection to `cloud` whose TCP and TLS are not up yet.
    fn new() -> (Rig, UpstreamConn) {
        let (mut client, mut user) = testing::accept_client();
        testing::handshake(&mut client, &mut user);
        let fake = FakeCloud::new();
        let (upstream, cloud) = fake.connect();
        let rig = Rig {
            client,
            user,
            cloud,
            fake,
            metrics: Arc::new(Metrics::default()),
            budget: CopyBudget::default(),
            scratch: vec![0; SCRATCH],
        };
        (rig, upstream)
    }

    /// The scripted client sends `request`; the connection reads its head and an exchange
    /// is made for it on `upstream`, as the reactor would.
    fn exchange(&mut self, request: &str, upstream: UpstreamConn) -> Exchange {
        self.user.send(request.as_bytes());
        let mut head = None;
        until("a request head", || {
            self.user.turn();
            self.client.transport.mark_ready(true, false);
            match self.client.step_read_head(&mut self.scratch) {
                HeadRead::Request(read) => head = Some(read),
                HeadRead::Step(Step::Close) => panic!("the client connection closed"),
                HeadRead::Malformed(e) => panic!("malformed head: {e}"),
                HeadRead::Step(_) => {}
            }
            head.is_some()
        });
        exchange_for(head.unwrap(), upstream, &self.metrics)
    }

    /// One turn of the world: the scripted peers, then the exchange.
    fn turn(&mut self, exchange: &mut Exchange) -> PumpOutcome {
        self.user.turn();
        self.cloud.turn();
        self.client.transport.mark_ready(true, true);
        exchange.upstream.transport.mark_ready(true, true);
        let mut tee = Tee { cache: None, budget: &mut self.budget };
        exchange.pump(&mut self.client, &mut tee, &mut self.scratch)
    }

    /// Turns while the exchange goes on (failing the test if it ends) until `done`.
    fn turn_until(&mut self, what: &str, exchange: &mut Exchange, done: impl Fn(&Rig) -> bool) {
        until(what, || {
            let outcome = self.turn(exchange);
            assert!(is_ongoing(&outcome), "{what}: the exchange ended: {}", describe(&outcome));
            done(self)
        });
    }

    /// Turns until the exchange comes to an outcome other than progress or waiting.
    fn outcome(&mut self, exchange: &mut Exchange) -> PumpOutcome {
        let mut outcome = None;
        until("the exchange to end", || {
            let turned = self.turn(exchange);
            if !is_ongoing(&turned) {
                outcome = Some(turned);
            }
            outcome.is_some()
        });
        outcome.unwrap()
    }

    /// Turns until the fake cloud holds a whole request head; returns it.
    fn cloud_reads_head(&mut self, exchange: &mut Exchange) -> String {
        self.turn_until("the cloud to get the request", exchange, |rig| {
            head_end(&rig.cloud.received).is_some()
        });
        String::from_utf8_lossy(&self.cloud.received).into_owned()
    }

    /// After the exchange: moves the client connection's last bytes to the scripted
    /// client until `done`.
    fn deliver(&mut self, what: &str, done: impl Fn(&[u8]) -> bool) {
        until(what, || {
            self.client.transport.mark_ready(false, true);
            self.client.flush().unwrap();
            self.user.turn();
            done(&self.user.received)
        });
    }

    /// The response the scripted client got: its head, and the body after it.
    fn user_response(&self) -> (String, &[u8]) {
        let end = head_end(&self.user.received).expect("a response head");
        let head = String::from_utf8_lossy(&self.user.received[..end]).into_owned();
        (head, &self.user.received[end..])
    }
}

/// An exchange for `head` as requests.rs makes one: the route the cache gives it, the
/// head as it goes upstream, and an open-watch count for a long-running request.
fn exchange_for(head: RequestHead, upstream: UpstreamConn, metrics: &Arc<Metrics>) -> Exchange {
    let route = cache::classify("cn:admin", &head.method, &head.target, head.header_str("accept"));
    let long_running = matches!(route, Classified::Watch(_)) || head.is_upgrade();
    let upstream_head = head.to_upstream_bytes("localhost", &[]);
    let framing = head.framing().unwrap();
    let counted = long_running.then(|| OpenWatch::new(metrics));
    Exchange::new(head, route, (Box::new(upstream), 1), upstream_head, framing, 1, counted)
}

fn parse_head(text: &str) -> RequestHead {
    match http1::parse_request(text.as_bytes()) {
        Ok(Some((head, _))) => head,
        _ => panic!("test head does not parse: {text:?}"),
    }
}

fn is_ongoing(outcome: &PumpOutcome) -> bool {
    matches!(outcome, PumpOutcome::Progress | PumpOutcome::Wait)
}

fn describe(outcome: &PumpOutcome) -> String {
    match outcome {
        PumpOutcome::Progress => "Progress".into(),
        PumpOutcome::Wait => "Wait".into(),
        PumpOutcome::Finished { upstream_reusable, client_keep_alive } => {
            format!("Finished {{ upstream: {upstream_reusable}, keep-alive: {client_keep_alive} }}")
        }
        PumpOutcome::UpstreamFailed(failure) => format!("UpstreamFailed({failure:?})"),
        PumpOutcome::CloudError { response, .. } => format!("CloudError({})", response.status),
        PumpOutcome::Upgraded => "Upgraded".into(),
        PumpOutcome::Abort(reason) => format!("Abort({reason})"),
        PumpOutcome::BadRequestBody(reason) => format!("BadRequestBody({reason})"),
    }
}

/// Where the body begins: just past the blank line that ends a head.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

fn chunk(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// A chunked body, decoded independently of body.rs: the payloads, and whether the
/// terminating chunk ended it with nothing after.
fn dechunk(mut body: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut payloads = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size_text = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text, 16).unwrap();
        let rest = &body[line_end + 2..];
        if size == 0 {
            return (payloads, rest == b"\r\n");
        }
        if rest.len() < size + 2 {
            break;
        }
        payloads.push(rest[..size].to_vec());
        body = &rest[size + 2..];
    }
    (payloads, false)
}

fn default_config() -> Config {
    let args = [
        "--ca-file=/ca",
        "--tls-cert-file=/crt",
        "--tls-private-key-file=/key",
        "--kube-apiserver-url=localhost",
    ];
    match config::parse(args.map(String::from)) {
        Ok(Command::Run(config)) => *config,
        other => panic!("the defaults do not parse: {other:?}"),
    }
}

#[test]
fn a_client_that_does_not_read_stops_the_reads_from_the_cloud_at_the_high_water_mark() {
    const BODY: usize = 4 << 20;
    let body: Vec<u8> = (0..BODY).map(|i| (i % 251) as u8).collect();
    let (mut rig, upstream) = Rig::new();
    let mut exchange = rig.exchange(GET_PODS, upstream);
    rig.cloud_reads_head(&mut exchange);
    rig.user.reading = false;
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    );
    rig.cloud.send(head.as_bytes());
    rig.cloud.send(&body);

    until("the cloud to be held back by a full client queue", || {
        let outcome = rig.turn(&mut exchange);
        assert!(is_ongoing(&outcome), "ended early: {}", describe(&outcome));
        let queued = rig.client.out.len();
        assert!(queued < QUEUE_HIGH_WATER + SCRATCH, "{queued} bytes queued for the client");
        matches!(outcome, PumpOutcome::Wait) && queued >= QUEUE_HIGH_WATER && rig.cloud.blocked
    });
    // Everything between the two sockets (kernel buffers of 64 KiB, rustls buffers of
    // 64 KiB, the queue) holds well under 1 MiB: the rest must still be at the cloud.
    let taken = BODY - rig.cloud.unsent();
    assert!(taken < 1 << 20, "{taken} bytes left the cloud for a client that reads nothing");

    rig.user.reading = true;
    match rig.outcome(&mut exchange) {
        PumpOutcome::Finished { upstream_reusable: true, client_keep_alive: true } => {}
        other => panic!("expected a reusable finish, got {}", describe(&other)),
    }
    let whole = head.len() + BODY;
    rig.deliver("the whole body to reach the client", |got| got.len() >= whole);
    let (head, received) = rig.user_response();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(received == body.as_slice(), "the body arrived altered ({} bytes)", received.len());
}

#[test]
fn a_stale_pooled_connection_fails_retryably_and_the_retry_on_a_fresh_one_succeeds() {
    let (mut rig, mut stale) = Rig::new();
    testing::establish(&mut stale, &mut rig.cloud);
    // The cloud closed the idle connection after the pool last looked at it.
    rig.cloud.close();
    stale.reused = true;
    let mut exchange = rig.exchange(GET_PODS, stale);
    match rig.outcome(&mut exchange) {
        PumpOutcome::UpstreamFailed(_) => {}
        other => panic!("expected UpstreamFailed, got {}", describe(&other)),
    }
    assert!(exchange.can_retry(), "a bodiless request on a reused connection is retried");

    let (fresh, cloud) = rig.fake.connect();
    rig.cloud = cloud;
    drop(exchange.retry_on(Box::new(fresh), 2));
    assert!(!exchange.can_retry(), "only one retry");
    let request = rig.cloud_reads_head(&mut exchange);
    assert!(request.starts_with("GET /api/v1/namespaces/default/pods HTTP/1.1\r\n"), "{request}");
    let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    rig.cloud.send(answer.as_bytes());
    match rig.outcome(&mut exchange) {
        PumpOutcome::Finished { upstream_reusable: true, client_keep_alive: true } => {}
        other => panic!("expected a reusable finish, got {}", describe(&other)),
    }
    rig.deliver("the answer to reach the client", |got| got.ends_with(b"{}"));
    let (head, body) = rig.user_response();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"{}", "one answer, once");
}

#[test]
fn a_fresh_connection_closed_before_the_head_is_not_retried() {
    let (mut rig, mut upstream) = Rig::new();
    testing::establish(&mut upstream, &mut rig.cloud);
    rig.cloud.close();
    let mut exchange = rig.exchange(GET_PODS, upstream);
    match rig.outcome(&mut exchange) {
        PumpOutcome::UpstreamFailed(_) => {}
        other => panic!("expected UpstreamFailed, got {}", describe(&other)),
    }
    assert!(!exchange.can_retry(), "a new connection's failure is the cloud's, not the pool's");
}

#[test]
fn a_101_is_forwarded_and_the_tunnel_copies_both_ways() {
    let (mut rig, upstream) = Rig::new();
    let exec = "POST /api/v1/namespaces/default/pods/p/exec?command=sh&stdin=true HTTP/1.1\r\n\
                Host: edge\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n";
    let mut exchange = rig.exchange(exec, upstream);
    let request = rig.cloud_reads_head(&mut exchange).to_ascii_lowercase();
    assert!(request.contains("\r\nupgrade: spdy/3.1\r\n"), "{request}");
    assert!(request.contains("\r\nconnection: upgrade\r\n"), "{request}");
    let switching = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1";
    rig.cloud.send(format!("{switching}\r\n\r\nhello").as_bytes());
    match rig.outcome(&mut exchange) {
        PumpOutcome::Upgraded => {}
        other => panic!("expected Upgraded, got {}", describe(&other)),
    }
    let counted = exchange.take_watch_count().expect("an exec is long-running");
    let Exchange { upstream, upstream_slot, .. } = exchange;
    let mut tunnel = Tunnel::new(counted, upstream, upstream_slot);
    assert_eq!(rig.metrics.open_watches.load(Ordering::Relaxed), 1, "the tunnel is counted");

    let mut step = |rig: &mut Rig| {
        rig.user.turn();
        rig.cloud.turn();
        rig.client.transport.mark_ready(true, true);
        tunnel.upstream.transport.mark_ready(true, true);
        tunnel.step(&mut rig.client, &mut rig.scratch)
    };
    let mut tunnel_until = |rig: &mut Rig, what: &str, done: &dyn Fn(&Rig) -> bool| {
        until(what, || match step(rig) {
            TunnelStep::Step(Step::Close) | TunnelStep::CloudClosed => panic!("{what}: closed"),
            TunnelStep::Step(_) => done(rig),
        });
    };
    tunnel_until(&mut rig, "the 101 and the bytes after it", &|rig| {
        rig.user.received.ends_with(b"\r\n\r\nhello")
    });
    let (head, _) = rig.user_response();
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    rig.user.send(b"stdin bytes");
    tunnel_until(&mut rig, "client to cloud", &|rig| rig.cloud.received.ends_with(b"stdin bytes"));
    rig.cloud.send(b"stdout bytes");
    tunnel_until(&mut rig, "cloud to client", &|rig| rig.user.received.ends_with(b"stdout bytes"));

    rig.cloud.close();
    let mut ended = false;
    until("the cloud's close to end the tunnel", || {
        ended = matches!(step(&mut rig), TunnelStep::CloudClosed);
        ended
    });
    drop(tunnel);
    assert_eq!(rig.metrics.open_watches.load(Ordering::Relaxed), 0, "uncounted once gone");
}

#[test]
fn a_closing_connection_sends_its_answer_shuts_its_side_and_drains_the_client_until_eof() {
    let (mut client, mut user) = testing::accept_client();
    testing::handshake(&mut client, &mut user);
    assert_eq!(client.peer_cn(), Some(CLIENT_CN));
    let answer = LocalResponse::status(503, "ServiceUnavailable", "going away").closing();
    client.answer(&answer, false);
    assert!(matches!(client.phase, Phase::Closing));
    let mut scratch = vec![0; SCRATCH];

    until("closing to hand over to lingering", || {
        user.turn();
        client.transport.mark_ready(true, true);
        assert_ne!(client.step_closing(), Step::Close, "closing gave up");
        matches!(client.phase, Phase::Lingering { .. })
    });
    let mut linger = |client: &mut ClientConn, user: &mut Peer| {
        user.turn();
        client.transport.mark_ready(true, true);
        client.step_lingering(&mut scratch)
    };
    until("our side shut and the client at EOF", || {
        assert_ne!(linger(&mut client, &mut user), Step::Close, "lingering ended early");
        matches!(client.phase, Phase::Lingering { write_shut: true }) && user.eof
    });
    let end = head_end(&user.received).expect("the answer's head");
    let head = String::from_utf8_lossy(&user.received[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    assert!(user.received.ends_with(&answer.body), "the whole answer arrives before EOF");

    // A client that has not read the answer yet keeps sending (pipelined requests, a body):
    // far more than the socket buffers hold, so it all goes only if lingering reads it.
    let pipelined = GET_PODS.repeat(4096);
    user.send(pipelined.as_bytes());
    let mut read_some = false;
    until("everything the client sends to be taken", || {
        let step = linger(&mut client, &mut user);
        assert_ne!(step, Step::Close, "lingering ended while the client was still sending");
        read_some |= step == Step::Again;
        user.unsent() == 0 && !user.blocked
    });
    assert!(read_some);
    user.close();
    until("the client's EOF to end lingering", || linger(&mut client, &mut user) == Step::Close);
    assert_eq!(user.broken, None, "the connection was not reset");
}

/// `deadline` lies between what `at` gave before and after the step that set its clock.
fn assert_between(deadline: Option<Instant>, before: Instant, after: Instant, what: &str) {
    let deadline = deadline.unwrap_or_else(|| panic!("{what}: no deadline"));
    assert!(before <= deadline && deadline <= after, "{what}: {deadline:?} not in its window");
}

#[test]
fn each_client_phase_has_its_deadline() {
    let config = default_config();
    let timeouts = config.client_timeouts;
    let bracket = |step: &mut dyn FnMut(), timeout: Duration| {
        let before = Instant::now() + timeout;
        step();
        (before, Instant::now() + timeout)
    };

    let mut pair = None;
    let (before, after) =
        bracket(&mut || pair = Some(testing::accept_client()), timeouts.handshake);
    let (mut client, mut user) = pair.unwrap();
    assert_between(client.deadline(&config), before, after, "handshake");

    let (before, after) =
        bracket(&mut || testing::handshake(&mut client, &mut user), timeouts.idle);
    assert_between(client.deadline(&config), before, after, "idle, waiting for a head");

    // The head's clock starts at its first byte, not at the phase.
    user.send(b"GET /api/v1/pods HTTP/1.1\r\n");
    let mut scratch = vec![0; SCRATCH];
    let reading = Instant::now();
    until("the first bytes of a head", || {
        user.turn();
        client.transport.mark_ready(true, false);
        assert!(matches!(client.step_read_head(&mut scratch), HeadRead::Step(_)));
        matches!(client.phase, Phase::ReadHead { started: Some(_) })
    });
    let Phase::ReadHead { started: Some(started) } = client.phase else { unreachable!() };
    assert!(reading <= started);
    assert_eq!(client.deadline(&config), Some(started + timeouts.read_header), "head started");

    let closing = Duration::from_secs(5);
    let (before, after) = bracket(&mut || client.set_phase(Phase::Closing), closing);
    assert_between(client.deadline(&config), before, after, "closing");
    let lingering = Duration::from_secs(2);
    let to_linger = &mut || client.set_phase(Phase::Lingering { write_shut: false });
    let (before, after) = bracket(to_linger, lingering);
    assert_between(client.deadline(&config), before, after, "lingering");
}

#[test]
fn each_exchange_has_its_deadline() {
    let config = default_config();
    let stall = config.client_timeouts.stall;
    assert!(config.cloud_response_timeout < stall && config.timeout < stall, "distinct defaults");
    let metrics = Arc::new(Metrics::default());
    let fake = FakeCloud::new();
    let established = || {
        let (mut upstream, mut cloud) = fake.connect();
        testing::establish(&mut upstream, &mut cloud);
        (upstream, cloud)
    };

    let (connecting, _cloud) = fake.connect();
    let exchange = exchange_for(parse_head(GET_PODS), connecting, &metrics);
    assert_eq!(exchange.deadline(&config), Some(exchange.started + config.timeout), "connecting");

    let (upstream, _cloud) = established();
    let watch = exchange_for(parse_head(WATCH_PODS), upstream, &metrics);
    assert!(watch.is_long_running());
    assert_eq!(watch.deadline(&config), None, "a long-running request has none");

    let (upstream, _cloud) = established();
    let read = exchange_for(parse_head(GET_PODS), upstream, &metrics);
    let awaiting = Some(read.started + config.cloud_response_timeout);
    assert_eq!(read.deadline(&config), awaiting, "a cacheable read awaiting its head");

    let (upstream, _cloud) = established();
    let post = "POST /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: edge\r\n\r\n";
    let write = exchange_for(parse_head(post), upstream, &metrics);
    let stalled = Some(write.last_activity + stall);
    assert_eq!(write.deadline(&config), stalled, "a write stalls");

    // A client connection in an exchange has the exchange's deadline.
    let (mut client, _user) = testing::accept_client();
    client.set_phase(Phase::Exchange(Box::new(write)));
    assert_eq!(client.deadline(&config), stalled, "the client phase asks its exchange");
}

#[test]
fn a_read_whose_answer_has_begun_has_the_stall_deadline() {
    let config = default_config();
    let (mut rig, upstream) = Rig::new();
    let mut exchange = rig.exchange(GET_PODS, upstream);
    rig.cloud_reads_head(&mut exchange);
    let awaiting = Some(exchange.started + config.cloud_response_timeout);
    assert_eq!(exchange.deadline(&config), awaiting);
    rig.cloud.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
    rig.turn_until("the answer to begin", &mut exchange, |rig| {
        rig.user.received.ends_with(b"12345")
    });
    let stalled = Some(exchange.last_activity + config.client_timeouts.stall);
    assert_eq!(exchange.deadline(&config), stalled);
}

#[test]
fn a_relayed_watch_cut_mid_event_ends_after_its_last_whole_event() {
    let (mut rig, upstream) = Rig::new();
    let mut exchange = rig.exchange(WATCH_PODS, upstream);
    rig.cloud_reads_head(&mut exchange);
    let first: &[u8] = b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n";
    let second: &[u8] = b"{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n";
    let mut payload = first.to_vec();
    payload.extend_from_slice(&second[..20]);
    rig.cloud.send(CHUNKED_JSON_200.as_bytes());
    rig.cloud.send(&chunk(&payload));
    rig.turn_until("the first event to reach the client", &mut exchange, |rig| {
        rig.user.received.ends_with(b"}}}\n\r\n")
    });
    rig.cloud.close();
    match rig.outcome(&mut exchange) {
        PumpOutcome::Finished { upstream_reusable: false, client_keep_alive: true } => {}
        other => panic!("expected a clean end keeping the client, got {}", describe(&other)),
    }
    rig.deliver("the terminating chunk", |got| got.ends_with(LAST_CHUNK));
    let (head, body) = rig.user_response();
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let (payloads, terminated) = dechunk(body);
    assert!(terminated, "the stream ends with the terminating chunk and nothing after");
    assert_eq!(payloads.concat(), first, "only whole events reach the client");
}

#[test]
fn a_list_cut_mid_body_is_aborted_without_a_terminating_chunk() {
    let (mut rig, upstream) = Rig::new();
    let mut exchange = rig.exchange(GET_PODS, upstream);
    rig.cloud_reads_head(&mut exchange);
    let partial: &[u8] = b"{\"kind\":\"PodList\",\"items\":[{\"metadata\":";
    rig.cloud.send(CHUNKED_JSON_200.as_bytes());
    rig.cloud.send(&chunk(partial));
    let sent = chunk(partial);
    rig.turn_until("the partial list to reach the client", &mut exchange, |rig| {
        rig.user.received.ends_with(&sent)
    });
    rig.cloud.close();
    match rig.outcome(&mut exchange) {
        PumpOutcome::Abort(_) => {}
        other => panic!("expected Abort, got {}", describe(&other)),
    }
    // Whatever the connection still holds goes out: none of it may end the body.
    until("the client connection to flush", || {
        rig.client.transport.mark_ready(false, true);
        rig.client.flush().unwrap();
        rig.user.turn();
        rig.client.out.is_empty() && rig.client.transport.is_flushed()
    });
    let (_, body) = rig.user_response();
    let (payloads, terminated) = dechunk(body);
    assert!(!terminated, "a cut list must not look complete");
    assert_eq!(payloads.concat(), partial);
}

/// Reads heads until one is whole, feeding the client what the user sent.
fn next_head(client: &mut ClientConn, user: &mut testing::Peer) -> Result<RequestHead, String> {
    let mut scratch = vec![0; SCRATCH];
    let mut found = None;
    until("a whole head or an error", || {
        user.turn();
        client.transport.mark_ready(true, false);
        match client.step_read_head(&mut scratch) {
            HeadRead::Request(head) => found = Some(Ok(head)),
            HeadRead::Malformed(e) => found = Some(Err(e.to_string())),
            HeadRead::Step(_) => {}
        }
        found.is_some()
    });
    found.unwrap_or_else(|| Err("none".into()))
}

/// A head that arrives a byte per TLS record is parsed only when lines end (not from its start
/// for every byte), and still completes at its last byte; a pipelined head behind it is
/// found in what is left; a head without a newline past the size limit is refused.
#[test]
fn heads_arriving_a_byte_at_a_time_complete_and_pipelined_heads_follow() {
    let (mut client, mut user) = testing::accept_client();
    testing::handshake(&mut client, &mut user);
    let first = b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut scratch = vec![0; SCRATCH];
    for byte in &first[..first.len() - 1] {
        user.send(std::slice::from_ref(byte));
        user.turn();
        client.transport.mark_ready(true, false);
        let read = client.step_read_head(&mut scratch);
        assert!(matches!(read, HeadRead::Step(_)), "no head before its last byte");
    }
    user.send(b"\nGET /api/v1/nodes HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        next_head(&mut client, &mut user).map(|head| head.target),
        Ok("/api/v1/pods".into())
    );
    client.await_next_request();
    assert_eq!(
        next_head(&mut client, &mut user).map(|head| head.target),
        Ok("/api/v1/nodes".into())
    );

    client.await_next_request();
    user.send(b"GET /api/v1/pods HTTP/1.1\r\nX-Long: ");
    user.send(&vec![b'a'; crate::http1::MAX_HEAD_BYTES]);
    let refused = next_head(&mut client, &mut user).map(|head| head.target);
    assert_eq!(refused, Err(crate::http1::HttpError::HeadTooLarge.to_string()));
}
