//! Hardening tests (issue 7): the real lite-apiserver binary in front of the fake
//! kube-apiserver, attacked with malformed HTTP, non-TLS bytes, smuggling attempts, stalled
//! and vanishing peers, connection floods and a misbehaving upstream. After every abuse the
//! proxy must still answer a good request, and its open file descriptors and connection
//! gauges (read from `/metrics` on the diagnostics port) must return to their baseline.
//!
//! Issue 17 adds hostile bearer tokens from pods and a hostile cloud: a gzip bomb and a
//! protobuf watch frame that never ends (the fake's `gzip-bomb` and `endless-frame` faults).
//!
//! Tests of the client timeouts run the proxy with them set to a couple of seconds
//! (`--tls-handshake-timeout`, `--read-header-timeout`, `--idle-timeout`, `--stall-timeout`),
//! so they wait out the real code path without waiting out the defaults.

mod common;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::Conn;
use common::wire;
use common::*;
use lite_apiserver::token_request::IssuedToken;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;

const PODS: &str = "/api/v1/namespaces/default/pods";
/// How long a single raw read or a clean-up may take before the test fails.
const IO_DEADLINE: Duration = Duration::from_secs(10);
/// How long the proxy gets to release connections and descriptors after an abuse.
const SETTLE: Duration = Duration::from_secs(15);
/// The client timeout under test, in seconds, and how long to wait for it to act: the
/// timeout plus generous slack for a loaded machine.
const SHORT_TIMEOUT: u64 = 2;
const CUTOFF: Duration = Duration::from_secs(SHORT_TIMEOUT + 8);

// ---------------------------------------------------------------------------------------
// The leak check of an edge: its gauges and descriptors back to their baseline.
// ---------------------------------------------------------------------------------------

/// What "nothing leaked" means for one proxy: with no client connected, its descriptors are
/// this constant plus one per open (busy or pooled) upstream connection.
struct Baseline {
    fds_without_upstreams: i64,
}

/// The proxy's gauges and fd count at one moment.
#[derive(Debug)]
struct Snapshot {
    clients: u64,
    upstreams: u64,
    /// The prober's (and key fetcher's) connections to the cloud.
    helpers: u64,
    watches: u64,
    fds: i64,
}

impl Snapshot {
    /// Descriptors besides the connections to the cloud, which come and go by design.
    fn fds_without_upstreams(&self) -> i64 {
        self.fds - (self.upstreams + self.helpers) as i64
    }
}

/// The leak check, and the connections the abuse goes out on, as methods of the edge.
trait Hardening {
    /// A TLS connection to the proxy presenting `kubelet.crt`.
    fn raw(&self) -> Conn;
    /// The proxy's gauges and open descriptors now.
    fn snapshot(&mut self) -> Snapshot;
    /// One good GET through the proxy, on a fresh connection that is closed afterwards.
    fn good_request(&mut self);
    /// Snapshot once a good request has run and every client connection is gone.
    fn baseline(&mut self) -> Baseline;
    /// The proxy is alive, answers a good request, and holds no client connection, watch or
    /// descriptor beyond the baseline (pooled upstream connections are allowed).
    fn assert_recovered(&mut self, baseline: &Baseline, after: &str);
}

impl Hardening for Edge {
    fn raw(&self) -> Conn {
        self.conn(Some("kubelet")).expect("TLS connection to the proxy")
    }

    fn snapshot(&mut self) -> Snapshot {
        let metrics = self.metrics();
        let gauge = |name: &str| {
            metric_value(&metrics, name).unwrap_or_else(|| panic!("no {name}:\n{metrics}"))
        };
        let pid = self.lite.proc().pid();
        Snapshot {
            clients: gauge("lite_apiserver_open_client_connections"),
            upstreams: gauge("lite_apiserver_open_upstream_connections"),
            helpers: gauge("lite_apiserver_open_helper_connections"),
            watches: gauge("lite_apiserver_open_watches"),
            fds: open_fds(pid),
        }
    }

    fn good_request(&mut self) {
        self.lite.assert_alive();
        let response = self.kubelet().get(PODS);
        assert_eq!(response.status, 200, "good request after abuse: {}", response.text());
    }

    fn baseline(&mut self) -> Baseline {
        self.good_request();
        let settled = wait_for(SETTLE, || {
            let first = self.snapshot();
            let second = self.snapshot();
            let quiet = first.clients == 0
                && first.fds_without_upstreams() == second.fds_without_upstreams();
            quiet.then_some(first)
        })
        .expect("the proxy settles after one good request");
        Baseline { fds_without_upstreams: settled.fds_without_upstreams() }
    }

    fn assert_recovered(&mut self, baseline: &Baseline, after: &str) {
        self.good_request();
        let mut last = None;
        let settled = wait_for(SETTLE, || {
            let now = self.snapshot();
            let clean = now.clients == 0
                && now.watches == 0
                && now.fds_without_upstreams() == baseline.fds_without_upstreams;
            last = Some(now);
            clean.then_some(())
        });
        assert!(
            settled.is_some(),
            "after {after}: leaked — last {last:?}, expected 0 clients, 0 watches and {} fds + upstreams",
            baseline.fds_without_upstreams
        );
    }
}

fn open_fds(pid: u32) -> i64 {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {dir}: {e}")).count() as i64
}

// ---------------------------------------------------------------------------------------
// A raw TLS connection: exact bytes out, responses and EOF observed.
// ---------------------------------------------------------------------------------------

/// The first TLS flight of a real client (its ClientHello record).
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = ServerName::try_from("localhost").expect("server name");
    let mut tls = ClientConnection::new(common::client::tls_config(pki, None), name)
        .expect("client connection");
    let mut hello = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut hello).expect("ClientHello");
    }
    hello
}

/// Writes `bytes` on a plain TCP connection to `port`, optionally half-closes, and reports
/// whether the peer hung up within `timeout`, with whatever it sent back.
fn plain_tcp_abuse(
    port: u16,
    bytes: &[u8],
    half_close: bool,
    timeout: Duration,
) -> (bool, Vec<u8>) {
    let mut sock = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    sock.write_all(bytes).expect("write");
    if half_close {
        sock.shutdown(Shutdown::Write).expect("half-close");
    }
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return (false, received);
        }
        sock.set_read_timeout(Some(remaining)).expect("timeout");
        match sock.read(&mut chunk) {
            Ok(0) => return (true, received),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return (false, received);
            }
            Err(_) => return (true, received),
        }
    }
}

/// `len` bytes from a fixed-seed xorshift: the same garbage every run.
fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Sends `request` on a fresh connection and expects a `code` Status written by the proxy
/// itself (the fake stamps `X-Fake-User` on its answers), then the connection closing.
fn expect_local_rejection(edge: &Edge, request: &[u8], code: u16) {
    let shown = String::from_utf8_lossy(&request[..request.len().min(120)]).into_owned();
    let mut conn = edge.raw();
    conn.send(request).unwrap_or_else(|e| panic!("send {shown:?}: {e}"));
    let response = conn.response("GET").unwrap_or_else(|e| panic!("no answer to {shown:?}: {e}"));
    assert_status_body(&response, code);
    assert!(
        response.header("x-fake-user").is_none(),
        "{shown:?} reached the fake: {:?}",
        response.headers
    );
    assert!(conn.closed_within(IO_DEADLINE), "connection left open after rejecting {shown:?}");
}

// ---------------------------------------------------------------------------------------
// Protocol abuse.
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_request_heads_get_a_400_status_and_a_close() {
    let mut edge = Edge::start("malformed", &[], &[]);
    let baseline = edge.baseline();
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"GET /api HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /api HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /a\x00pi HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api HTTP/1.1\r\nX-Nul: a\x00b\r\n\r\n",
        b"GET /api HTTP/1.1\r\nX-Ctl: a\x01b\r\n\r\n",
        b"GET /api HTTP/1.1\r\nBad Name: v\r\n\r\n",
        b"GET /api HTTP/1.1\r\nX\x7fDel: v\r\n\r\n",
        b"GET /api HTTP/1.1\r\n: no name\r\n\r\n",
        b"GET /api HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n",
        b"GET /api HTTP/1.1\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"G\xc3\x89T /api HTTP/1.1\r\n\r\n",
        b"\x00\x00\x00\x00\r\n\r\n",
    ];
    for case in cases {
        expect_local_rejection(&edge, case, 400);
    }
    edge.assert_recovered(&baseline, "malformed heads");
}

#[test]
fn an_oversized_head_gets_431_and_one_within_limits_is_proxied() {
    let mut edge = Edge::start("bighead", &[], &[]);
    let baseline = edge.baseline();
    let mut big = b"GET /debug/echo HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(70 * 1024, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    expect_local_rejection(&edge, &big, 431);

    // Many 1 KB headers adding up past the limit, each in its own write.
    let mut conn = edge.raw();
    for i in 0..100 {
        let line = format!("X-Filler-{i}: {}\r\n", "b".repeat(1000));
        let bytes =
            if i == 0 { format!("GET /debug/echo HTTP/1.1\r\nHost: x\r\n{line}") } else { line };
        // The proxy answers once the head passes the limit, then reads and drops the rest
        // (lingering close): sending never fails.
        conn.send(bytes.as_bytes()).unwrap_or_else(|e| panic!("header {i} after the answer: {e}"));
    }
    let response = conn.response("GET").expect("an answer to a head growing past 64 KiB");
    assert_status_body(&response, 431);

    // A client still sending a megabyte when the answer comes gets it too, rather than a reset
    // that would destroy it in flight.
    let mut conn = edge.raw();
    let mut huge = b"GET /debug/echo HTTP/1.1\r\nHost: x\r\nX-Huge: ".to_vec();
    huge.resize(1 << 20, b'h');
    conn.send(&huge).expect("the proxy reads the rest of a rejected head instead of resetting");
    let response = conn.response("GET").expect("the 431 survives the client still sending");
    assert_status_body(&response, 431);
    assert!(conn.closed_within(IO_DEADLINE), "left open after lingering");

    // 40 KiB of headers is within the limit: forwarded and echoed intact.
    let value = "c".repeat(40 * 1024);
    let echo = edge
        .client(Some("kubelet"))
        .request("GET", "/debug/echo", &[("X-Large", &value)], b"")
        .expect_status(200)
        .json();
    assert_eq!(echo_header(&echo, "x-large"), vec![value]);
    edge.assert_recovered(&baseline, "oversized heads");
}

#[test]
fn too_many_headers_get_a_4xx_status() {
    let mut edge = Edge::start("manyheaders", &[], &[]);
    let baseline = edge.baseline();
    let mut request = b"GET /debug/echo HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..300 {
        request.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let mut conn = edge.raw();
    conn.send(&request).expect("send");
    let response = conn.response("GET").expect("an answer");
    assert!(matches!(response.status, 400 | 431), "300 headers answered {}", response.status);
    assert_status_body(&response, response.status);
    assert!(conn.closed_within(IO_DEADLINE));
    edge.assert_recovered(&baseline, "too many headers");
}

#[test]
fn ambiguous_body_framing_is_refused_before_reaching_the_cloud() {
    let mut edge = Edge::start("smuggling", &[], &[]);
    let baseline = edge.baseline();
    let cases: &[&[u8]] = &[
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x5\r\n\r\nhello",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        b"POST /debug/echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        expect_local_rejection(&edge, case, 400);
    }
    // Repeated identical lengths are not ambiguous.
    let mut conn = edge.raw();
    conn.send(b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello").expect("send");
    let echo = conn.response("POST").expect("answer").expect_status(200).json();
    assert_eq!(echo["body"], "hello");
    drop(conn);
    edge.assert_recovered(&baseline, "smuggling attempts");
}

#[test]
fn a_connection_header_cannot_strip_the_body_framing() {
    let mut edge = Edge::start("connframing", &[], &[]);
    let baseline = edge.baseline();
    // Were Content-Length dropped as "named by Connection", the cloud would read the body as
    // the start of a second request on a connection the proxy pools and shares.
    let smuggled = "GET /debug/echo?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let request = format!(
        "POST /debug/echo HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut conn = edge.raw();
    conn.send(request.as_bytes()).expect("send");
    let response = conn.response("POST").expect("an answer");
    if response.status == 200 {
        let echo = response.json();
        assert_eq!(
            echo["body_len"],
            smuggled.len(),
            "the body did not reach the cloud as a body: {echo}"
        );
    } else {
        assert_status_body(&response, 400);
    }
    drop(conn);
    let next = edge.client(Some("kubelet")).get("/debug/echo?after=1").expect_status(200).json();
    assert_eq!(
        next["query"], "after=1",
        "a pooled upstream connection answered a smuggled request"
    );
    edge.assert_recovered(&baseline, "Connection: Content-Length");
}

#[test]
fn bad_chunked_request_bodies_get_a_400_status() {
    let mut edge = Edge::start("badchunks", &[], &[]);
    let baseline = edge.baseline();
    let head = b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
    let huge_trailer = format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(70 * 1024));
    let bodies: Vec<Vec<u8>> = vec![
        b"zz\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"5\r\nhelloXX0\r\n\r\n".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"11111111111111111\r\n".to_vec(),
        b"-5\r\nhello\r\n0\r\n\r\n".to_vec(),
        b"5\rhello\r\n0\r\n\r\n".to_vec(),
        b"0\r\n\r\x00".to_vec(),
        long_extension.into_bytes(),
        huge_trailer.into_bytes(),
    ];
    for body in &bodies {
        let mut request = head.to_vec();
        request.extend_from_slice(body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let mut conn = edge.raw();
        let _ = conn.send(&request); // the proxy may hang up while a long body is being sent
        match conn.response("POST") {
            Ok(response) => {
                assert_status_body(&response, 400);
                assert!(conn.closed_within(IO_DEADLINE), "open after bad chunked body {shown:?}");
            }
            Err(e) => panic!("bad chunked body {shown:?}: no 400 Status ({e})"),
        }
    }
    edge.assert_recovered(&baseline, "bad chunked bodies");
}

#[test]
fn valid_chunked_request_bodies_with_extensions_and_trailers_are_forwarded() {
    let mut edge = Edge::start("goodchunks", &[], &[]);
    let baseline = edge.baseline();
    let mut conn = edge.raw();
    conn.send(b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nhel\r\n2\r\nlo\r\n0\r\nX-Trailer: t\r\n\r\n")
        .expect("send");
    let echo = conn.response("POST").expect("answer").expect_status(200).json();
    assert_eq!(echo["body"], "hello");
    drop(conn);
    edge.assert_recovered(&baseline, "chunked body with extensions and trailers");
}

#[test]
fn a_body_shorter_than_announced_then_close_frees_everything() {
    let mut edge = Edge::start("shortbody", &[], &[]);
    let baseline = edge.baseline();
    for request in [
        &b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789"[..],
        b"POST /debug/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc",
        b"PUT /api/v1/namespaces/default/pods/p HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"kind\"",
    ] {
        let mut conn = edge.raw();
        conn.send(request).expect("send");
        std::thread::sleep(Duration::from_millis(200)); // let the head reach the cloud
        drop(conn);
    }
    edge.assert_recovered(&baseline, "short bodies");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut edge = Edge::start("pipeline", &[], &[]);
    let baseline = edge.baseline();
    let mut conn = edge.raw();
    conn.send(
        b"GET /debug/echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /debug/echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /debug/blob?bytes=100000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /debug/echo?n=4 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /debug/echo?n=5 HTTP/1.1\r\nHost: x\r\n\r\nNOT HTTP\r\n\r\n",
    )
    .expect("send pipeline");
    let first = conn.response("GET").expect("1st").expect_status(200).json();
    assert_eq!(first["query"], "n=1");
    let second = conn.response("POST").expect("2nd").expect_status(200).json();
    assert_eq!((second["query"].as_str(), second["body"].as_str()), (Some("n=2"), Some("hello")));
    let blob = conn.response("GET").expect("3rd").expect_status(200);
    assert_eq!(blob.body.len(), 100_000);
    for n in [4, 5] {
        let echo = conn
            .response("GET")
            .unwrap_or_else(|e| panic!("response {n}: {e}"))
            .expect_status(200)
            .json();
        assert_eq!(echo["query"], format!("n={n}"));
    }
    let refusal = conn.response("GET").expect("an answer to the garbage at the end");
    assert_status_body(&refusal, 400);
    assert!(conn.closed_within(IO_DEADLINE));
    edge.assert_recovered(&baseline, "pipelining");
}

#[test]
fn http_1_0_closes_by_default_and_gets_chunked_answers_dechunked() {
    let mut edge = Edge::start("http10", &[], &[]);
    let baseline = edge.baseline();

    let mut conn = edge.raw();
    conn.send(b"GET /debug/echo HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
    let response = conn.response("GET").expect("answer").expect_status(200);
    assert!(response.headers.has_token("connection", "close"), "{:?}", response.headers);
    assert!(conn.closed_within(IO_DEADLINE), "HTTP/1.0 without keep-alive must be closed");

    let mut conn = edge.raw();
    conn.send(b"GET /debug/echo?n=1 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .expect("send");
    let response = conn.response("GET").expect("answer").expect_status(200);
    assert!(response.headers.has_token("connection", "keep-alive"), "{:?}", response.headers);
    conn.send(b"GET /debug/echo?n=2 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .expect("send 2nd");
    assert_eq!(conn.response("GET").expect("2nd answer").expect_status(200).json()["query"], "n=2");
    drop(conn);

    let direct =
        edge.direct(Some("kubelet")).get("/debug/blob?bytes=300000&chunked=1").expect_status(200);
    let mut conn = edge.raw();
    conn.send(b"GET /debug/blob?bytes=300000&chunked=1 HTTP/1.0\r\nHost: x\r\n\r\n").expect("send");
    let response = conn.response("GET").expect("answer").expect_status(200);
    assert!(
        response.header("transfer-encoding").is_none(),
        "chunked sent to HTTP/1.0: {:?}",
        response.headers
    );
    assert_eq!(
        sha256_hex(&response.body),
        sha256_hex(&direct.body),
        "de-chunked body differs ({} bytes)",
        response.body.len()
    );
    edge.assert_recovered(&baseline, "HTTP/1.0");
}

#[test]
fn absolute_form_authority_form_and_asterisk_targets_get_400() {
    let mut edge = Edge::start("targets", &[], &[]);
    let baseline = edge.baseline();
    for case in [
        &b"GET https://localhost/api HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        b"GET http://evil.example/api HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n",
        b"GET api/v1/pods HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        expect_local_rejection(&edge, case, 400);
    }
    edge.assert_recovered(&baseline, "odd request targets");
}

#[test]
fn traversal_and_percent_encoding_pass_through_verbatim() {
    let mut edge = Edge::start("traversal", &[], &[]);
    let baseline = edge.baseline();
    let mut client = edge.client(Some("kubelet"));
    // The query reaches the cloud byte for byte.
    let query = "p=../../etc/passwd&q=%2e%2e%2F%2e%2e&r=%00&s=a+b";
    let echo = client.get(&format!("/debug/echo?{query}")).expect_status(200).json();
    assert_eq!(echo["query"], query);
    // Paths are not normalized or decoded: had the proxy collapsed `..` (or decoded and then
    // collapsed `%2e%2e`), these would reach /debug/echo and answer 200.
    for path in [
        "/debug/x/../echo",
        "/debug/x/%2e%2e/echo",
        "/debug/x/%2E%2E/echo",
        "/debug/./echo",
        "/debug//echo",
    ] {
        let response = client.get(path);
        assert_ne!(
            response.status,
            200,
            "{path} was normalized to /debug/echo: {}",
            response.text()
        );
        assert!(
            response.header("x-fake-user").is_some(),
            "{path} was answered by the proxy, not the cloud: {}",
            response.text()
        );
    }
    drop(client);
    edge.assert_recovered(&baseline, "traversal paths");
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_closed() {
    let mut edge =
        Edge::start("nontls", &[], &[&format!("--tls-handshake-timeout={SHORT_TIMEOUT}")]);
    let baseline = edge.baseline();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "plain HTTP",
            b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        ),
        ("random bytes", garbage(4096, 7)),
        ("zeros", vec![0; 1024]),
        ("TLS record of impossible length", b"\x16\x03\x01\xff\xff".to_vec()),
        ("TLS record with junk inside", [&b"\x16\x03\x01\x00\x20"[..], &garbage(32, 9)].concat()),
        ("SSLv2-style hello", b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10".to_vec()),
    ];
    for (what, bytes) in &cases {
        let (closed, reply) = plain_tcp_abuse(edge.lite.port, bytes, false, CUTOFF);
        assert!(closed, "{what}: connection left open");
        assert!(
            !String::from_utf8_lossy(&reply).contains("HTTP/"),
            "{what}: answered in plain HTTP"
        );
    }
    edge.assert_recovered(&baseline, "non-TLS bytes");
}

#[test]
fn truncated_tls_handshakes_are_closed() {
    let mut edge =
        Edge::start("truncatedtls", &[], &[&format!("--tls-handshake-timeout={SHORT_TIMEOUT}")]);
    let baseline = edge.baseline();
    let hello = client_hello(&edge.env.pki);
    assert!(hello.len() > 10, "ClientHello is {} bytes", hello.len());
    // Half a ClientHello, then the client hangs up its sending side.
    let (closed, _) = plain_tcp_abuse(edge.lite.port, &hello[..hello.len() / 2], true, IO_DEADLINE);
    assert!(closed, "half a ClientHello + FIN: left open");
    // Half a ClientHello, then silence: the handshake timeout ends it.
    let (closed, _) = plain_tcp_abuse(edge.lite.port, &hello[..hello.len() / 2], false, CUTOFF);
    assert!(closed, "half a ClientHello + silence: left open past the handshake timeout");
    // A whole ClientHello and nothing more.
    let (closed, _) = plain_tcp_abuse(edge.lite.port, &hello, false, CUTOFF);
    assert!(closed, "ClientHello then silence: left open past the handshake timeout");
    // Connect and say nothing at all.
    let (closed, _) = plain_tcp_abuse(edge.lite.port, b"", false, CUTOFF);
    assert!(closed, "silent TCP connection: left open past the handshake timeout");
    edge.assert_recovered(&baseline, "truncated handshakes");
}

// ---------------------------------------------------------------------------------------
// Exhaustion.
// ---------------------------------------------------------------------------------------

#[test]
fn many_stalled_partial_heads_do_not_stop_good_requests() {
    let mut edge = Edge::start("stalled", &[], &[]);
    let baseline = edge.baseline();
    let mut stalled: Vec<Conn> = (0..40)
        .map(|i| {
            let mut conn = edge.raw();
            conn.send(format!("GET {PODS}?n={i} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
                .expect("partial head");
            conn
        })
        .collect();
    for _ in 0..3 {
        edge.good_request();
    }
    // The good requests' own connections are closed by now or soon after.
    let counted = wait_for(SETTLE, || (edge.snapshot().clients == 40).then_some(()));
    assert!(counted.is_some(), "stalled connections are counted: {:?}", edge.snapshot());
    stalled.clear();
    edge.assert_recovered(&baseline, "40 stalled partial heads");
}

#[test]
fn slowloris_head_is_cut_off_by_the_head_read_timeout() {
    let mut edge =
        Edge::start("slowloris", &[], &[&format!("--read-header-timeout={SHORT_TIMEOUT}")]);
    let baseline = edge.baseline();
    let mut conn = edge.raw();
    conn.send(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\n").as_bytes()).expect("partial head");
    let started = Instant::now();
    let mut closed = false;
    // A byte every half second: each is progress, none completes the head.
    while started.elapsed() < CUTOFF {
        if conn.send(b"X").is_err() || conn.closed_within(Duration::from_millis(500)) {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "a head dripping one byte every 2 s was still open after {:?}",
        started.elapsed()
    );
    eprintln!("slowloris connection closed after {:?}", started.elapsed());
    edge.assert_recovered(&baseline, "slowloris");
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let mut edge = Edge::start("idle", &[], &[&format!("--idle-timeout={SHORT_TIMEOUT}")]);
    let baseline = edge.baseline();
    let mut conn = edge.raw();
    conn.send(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).expect("send");
    conn.response("GET").expect("answer").expect_status(200);
    let started = Instant::now();
    assert!(conn.closed_within(CUTOFF), "idle connection open after {:?}", started.elapsed());
    eprintln!("idle keep-alive connection closed after {:?}", started.elapsed());
    edge.assert_recovered(&baseline, "idle keep-alive");
}

#[test]
fn connections_beyond_max_connections_are_refused_and_the_first_ones_keep_working() {
    const LIMIT: usize = 3;
    /// Connections past the limit that are still answered (reactor.rs `OVER_LIMIT_ANSWERED`).
    const ANSWERED_PAST_LIMIT: usize = 64;
    let mut edge = Edge::start("maxconn", &[], &[&format!("--max-connections={LIMIT}")]);
    let baseline = edge.baseline();
    let mut held: Vec<Conn> = (0..LIMIT).map(|_| edge.raw()).collect();
    let rejected_before = edge.metric("lite_apiserver_rejected_connections_total");
    // The next one is told why: a 503 Status naming the flag, then the close.
    let mut extra = edge.raw();
    extra
        .send(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("send past the limit");
    let answer = extra.response("GET").expect("an answer past the limit");
    assert_status_body(&answer, 503);
    assert!(
        answer.text().contains("--max-connections"),
        "the 503 does not say why: {}",
        answer.text()
    );
    assert!(extra.closed_within(IO_DEADLINE), "the connection past the limit stayed open");
    assert!(edge.metric("lite_apiserver_rejected_connections_total") > rejected_before);
    // Past the answered ones, a flood is only closed: no handshake, no answer.
    let settled = wait_for(IO_DEADLINE, || (edge.snapshot().clients == LIMIT as u64).then_some(()));
    assert!(settled.is_some(), "the answered connection was not released: {:?}", edge.snapshot());
    let answered: Vec<Conn> = (0..ANSWERED_PAST_LIMIT).map(|_| edge.raw()).collect();
    let refused = match edge.conn(Some("kubelet")) {
        Err(_) => true,
        Ok(mut flood) => {
            flood.send(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).is_err()
                || flood.response("GET").is_err()
        }
    };
    assert!(
        refused,
        "connection {} of a {LIMIT}-connection limit was answered",
        LIMIT + ANSWERED_PAST_LIMIT + 1
    );
    drop(answered);
    for (i, conn) in held.iter_mut().enumerate() {
        conn.send(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .expect("send on a held connection");
        let response = conn.response("GET").unwrap_or_else(|e| panic!("held connection {i}: {e}"));
        assert_eq!(response.status, 200, "held connection {i}");
    }
    // A freed slot is usable again.
    held.pop();
    let reopened = wait_for(IO_DEADLINE, || {
        let mut conn = edge.conn(Some("kubelet")).ok()?;
        conn.send(format!("GET {PODS} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).ok()?;
        conn.response("GET").ok().filter(|r| r.status == 200)
    });
    assert!(reopened.is_some(), "no connection accepted after one of {LIMIT} closed");
    held.clear();
    edge.assert_recovered(&baseline, "--max-connections flood");
}

/// Opens a watch through the proxy, waits until it is proxied, then drops the client without
/// a word and checks the proxy lets go of the client and the upstream connection.
fn vanishing_watch_client(label: &str, query: &str) {
    let mut edge = Edge::start(label, &["--bookmark-interval-ms", "500"], &[]);
    let baseline = edge.baseline();
    let upstreams_before = edge.snapshot().upstreams;
    let mut conn = edge.raw();
    conn.send(
        format!("GET {PODS}?watch=true&timeoutSeconds=600{query} HTTP/1.1\r\nHost: x\r\n\r\n")
            .as_bytes(),
    )
    .expect("send watch");
    let deadline = Instant::now() + IO_DEADLINE;
    while wire::parse_head(&conn.buf).expect("response head").is_none() {
        assert!(conn.fill(deadline).expect("watch response head") > 0, "watch closed");
    }
    let open = edge.snapshot();
    assert_eq!((open.clients, open.watches), (1, 1), "one client, one proxied watch");
    drop(conn);
    let mut last = None;
    let released = wait_for(SETTLE, || {
        let now = edge.snapshot();
        let done = now.clients == 0 && now.upstreams <= upstreams_before;
        last = Some(now);
        done.then_some(())
    });
    assert!(
        released.is_some(),
        "a vanished watch client is still held: {last:?} (upstreams before the watch: {upstreams_before})"
    );
    edge.assert_recovered(&baseline, "a vanished watch client");
}

#[test]
fn a_watch_client_that_vanishes_while_events_flow_releases_the_upstream() {
    vanishing_watch_client("vanish-busy", "&allowWatchBookmarks=true");
}

#[test]
fn a_watch_client_that_vanishes_on_a_quiet_watch_releases_the_upstream() {
    vanishing_watch_client("vanish-quiet", "");
}

#[test]
fn an_upstream_hanging_mid_body_ends_the_client_connection_and_caches_nothing() {
    let mut edge = Edge::start("hangbody", &[], &[&format!("--stall-timeout={SHORT_TIMEOUT}")]);
    let baseline = edge.baseline();
    // The baseline's good GET is stored by the cache thread soon after its answer: count
    // from there, so that store is not mistaken for one of the hung body.
    let stored_before = wait_for(IO_DEADLINE, || {
        let stored = edge.metric("lite_apiserver_cache_stored_total");
        (stored >= 1).then_some(stored)
    })
    .expect("the baseline GET is stored");
    let mut conn = edge.raw();
    conn.send(b"GET /debug/hang-body HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let started = Instant::now();
    // The fake stalls for 60 s: only the proxy's stall timeout can close this in time.
    assert!(
        conn.closed_within(CUTOFF),
        "client still open {:?} into a hung body",
        started.elapsed()
    );
    eprintln!("hung body: client closed after {:?}", started.elapsed());
    let text = String::from_utf8_lossy(&conn.buf).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"),
        "unexpected bytes: {text:?}"
    );
    assert_eq!(
        edge.metric("lite_apiserver_cache_stored_total"),
        stored_before,
        "a truncated body was cached"
    );
    edge.assert_recovered(&baseline, "an upstream hanging mid-body");
}

#[test]
fn an_upstream_answering_garbage_gets_a_502_status() {
    let mut edge = Edge::start("garbage", &[], &[]);
    let baseline = edge.baseline();
    let mut client = edge.client(Some("kubelet"));
    assert_status_body(&client.get("/debug/garbage"), 502);
    let posted =
        client.request("POST", "/debug/garbage", &[("Content-Type", "application/json")], b"{}");
    assert_status_body(&posted, 502);
    drop(client);
    edge.assert_recovered(&baseline, "garbage from the upstream");
}

// ---------------------------------------------------------------------------------------
// Security of what is kept and logged.
// ---------------------------------------------------------------------------------------

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn cache_files_and_directory_are_private() {
    let env_dir = TempDir::new("modes");
    let fresh = env_dir.join("var/lib/lite-apiserver/cache");
    let mut edge = Edge::start("modes", &[], &[&format!("--file-cache-path={}", fresh.display())]);
    edge.good_request();
    edge.wait_stored(1);
    assert_eq!(mode(&fresh), 0o700, "cache directory {}", fresh.display());
    for file in ["cache.db", "cache.db-wal", "cache.db-shm"] {
        let path = fresh.join(file);
        if path.exists() || file == "cache.db" {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    // A directory that already exists (here 0755 from the test harness) keeps its mode, but
    // the files in it are still private.
    let mut edge = Edge::start("modes-existing", &[], &[]);
    edge.good_request();
    edge.wait_stored(1);
    let dir = edge.lite.cache_dir().to_path_buf();
    eprintln!("pre-existing cache directory mode: {:o}", mode(&dir));
    assert_eq!(mode(&dir.join("cache.db")), 0o600);
}

#[test]
fn bearer_tokens_are_never_logged_or_stored() {
    const TOKEN: &str = "hardening-SECRET-token-4f1c9e";
    let token_arg = format!("{TOKEN}=alice");
    let mut edge = Edge::start("tokens", &["--token", &token_arg], &["--log-level=debug"]);
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("Authorization", bearer.as_str())];
    let mut client = edge.client(None);
    let listed = client.request("GET", PODS, &auth, b"").expect_status(200);
    assert_eq!(listed.header("x-fake-user"), Some("alice"), "the token reached the cloud");
    client.request("GET", "/api/v1/namespaces/default/configmaps", &auth, b"").expect_status(200);
    client.request("GET", "/api/v1/nodes/absent", &auth, b"");
    drop(client);
    // A watch, a malformed request and a smuggling attempt, all carrying the token.
    let mut conn = edge.conn(None).expect("connect");
    conn.send(format!("GET {PODS}?watch=true&timeoutSeconds=2 HTTP/1.1\r\nHost: x\r\nAuthorization: {bearer}\r\n\r\n").as_bytes())
        .expect("watch");
    conn.response("GET").expect("watch ends after timeoutSeconds");
    let mut conn = edge.conn(None).expect("connect");
    conn.send(
        format!("GET /api HTTP/1.1\r\nAuthorization: {bearer}\r\nX-Bad\x01: v\r\n\r\n").as_bytes(),
    )
    .expect("send");
    assert_status_body(&conn.response("GET").expect("answer"), 400);
    let mut conn = edge.conn(None).expect("connect");
    conn.send(format!("POST /debug/echo HTTP/1.1\r\nAuthorization: {bearer}\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes())
        .expect("send");
    assert_status_body(&conn.response("POST").expect("answer"), 400);
    edge.wait_stored(2);
    // Offline: the cached list is found under the token's hash.
    edge.cut_cloud();
    let offline = wait_for(Duration::from_secs(20), || {
        let response = edge.client(None).try_request("GET", PODS, &auth, b"").ok()?;
        (response.status == 200 && response.header("x-fake-user").is_none()).then_some(response)
    });
    assert!(offline.is_some(), "the token's cached list was not served offline");

    let (status, debug_cache) = edge.diag("/debug/cache");
    assert_eq!(status, 200, "/debug/cache: {debug_cache}");
    let metrics = edge.metrics();
    edge.lite.sigterm();
    edge.lite.proc().wait_output(Duration::from_secs(15)).expect("lite-apiserver exits on SIGTERM");
    let stderr = edge.lite.proc().output();
    assert!(stderr.contains("DEBUG"), "debug logging was not on:\n{stderr}");
    for (place, text) in
        [("the log", &stderr), ("/debug/cache", &debug_cache), ("/metrics", &metrics)]
    {
        assert!(!text.contains(TOKEN), "the bearer token appears in {place}:\n{text}");
    }
    let mut files = 0;
    for entry in std::fs::read_dir(edge.lite.cache_dir()).expect("cache dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        assert!(
            !contains(&bytes, TOKEN.as_bytes()),
            "the bearer token is stored in {}",
            path.display()
        );
        files += 1;
    }
    assert!(files > 0, "no cache files to inspect");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

// ---------------------------------------------------------------------------------------
// Hostile bearer tokens (issue 17): parsed and verified per request from any pod.
// ---------------------------------------------------------------------------------------

/// How many hostile tokens the proxy is sent, and how many of them while the cloud is up.
const HOSTILE_TOKENS: usize = 10_000;
const HOSTILE_ONLINE: usize = 500;
/// What the proxy may grow by over the run (a cache thread's queue, allocator slack): far
/// below what keeping anything per token would take.
const RSS_SLACK: u64 = 24 << 20;

/// The `n`th hostile token: garbage, bad base64, `alg: none`, traversal and huge `kid`s,
/// deeply nested JSON, over-long tokens, signatures by a key the cloud does not have and,
/// rarely, one so big the head passes 64 KiB. Every one is a valid header value.
fn hostile_token(n: usize, rng: &mut checks::Prng) -> String {
    let b64 = |text: &str| checks::base64url(text.as_bytes());
    let payload = b64(&serde_json::json!({
            "iss": checks::JWT_ISSUER, "aud": [checks::JWT_ISSUER], "exp": 4_102_444_800_i64,
            "sub": "system:serviceaccount:kube-system:admin"})
    .to_string());
    let printable = |len: usize, rng: &mut checks::Prng| -> String {
        (0..len).map(|_| char::from(b'!' + rng.below(94) as u8)).collect()
    };
    let kid = |kid: &str| b64(&format!(r#"{{"alg":"RS256","kid":{}}}"#, serde_json::json!(kid)));
    match n % 12 {
        _ if n % 1000 == 999 => format!("{}.{payload}.{}", b64("{}"), "A".repeat(70 << 10)),
        0 => printable(1 + rng.below(200), rng),
        1 => format!("{}.{}.{}", printable(20, rng), printable(40, rng), printable(30, rng)),
        2 => format!("{}.{payload}.", b64(r#"{"alg":"none"}"#)),
        3 => format!("{}.{payload}.", b64(r#"{"alg":"NONE","typ":"JWT"}"#)),
        4 => format!("{}.{payload}.c2ln", kid("../../etc/passwd")),
        5 => format!("{}.{payload}.c2ln", kid(&"k".repeat(10 << 10))),
        6 => format!("{}.{payload}.c2ln", kid("rsa\u{0}; DROP TABLE cache;--")),
        7 => {
            let nested = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
            format!("{}.{}.c2ln", b64(&format!(r#"{{"alg":"RS256","x":{nested}}}"#)), b64(&nested))
        }
        8 => format!("{}=.{payload}==.c2ln+/", b64(r#"{"alg":"RS256"}"#)),
        9 => format!("{}.{payload}.{}", b64(r#"{"alg":"RS256"}"#), "A".repeat(17 << 10)),
        10 => {
            let claims =
                format!(r#"{{"sub":"system:serviceaccount:default:{n}","exp":4102444800}}"#);
            checks::with_signers(|s| s.sign_rs256(br#"{"alg":"RS256"}"#, claims.as_bytes()))
        }
        _ => format!("{}..{}", b64(r#"{"alg":"ES256","kid":"x"}"#), printable(86, rng)),
    }
}

/// Sends one GET with `Authorization: Bearer <token>`; the status, or None when the proxy
/// closed without an answer.
fn bearer_get(client: &mut Client, path: &str, token: &str) -> Option<Response> {
    let bearer = format!("Bearer {token}");
    client.try_request("GET", path, &[("Authorization", &bearer)], b"").ok()
}

#[test]
fn hostile_bearer_tokens_keep_the_proxy_serving_and_read_no_one_elses_cache() {
    const MARKER: &str = "kubelet-only-marker-pod";
    let mut edge = Edge::start("hostile-tokens", &[], &[]);
    edge.create_pod_upstream(MARKER);
    let pod = format!("{PODS}/{MARKER}");
    for path in [PODS, pod.as_str()] {
        let cached = edge.kubelet().get(path);
        assert_eq!(cached.status, 200, "kubelet's {path}: {}", cached.text());
    }
    edge.wait_stored(2);
    let baseline = edge.baseline();
    let mut rng = checks::Prng::new(17);
    let mut client = edge.client(None);
    let mut huge = 0;
    let mut statuses = std::collections::BTreeMap::<(bool, u16), usize>::new();
    let mut check = |n: usize, client: &mut Client, online: bool| {
        let token = hostile_token(n, &mut rng);
        let path = if n.is_multiple_of(2) { PODS } else { pod.as_str() };
        let response = bearer_get(client, path, &token);
        let status = response.as_ref().map(|r| r.status);
        *statuses.entry((online, status.unwrap_or(0))).or_default() += 1;
        if token.len() > 64 << 10 {
            assert_eq!(status, Some(431), "a {}-byte head", token.len());
            huge += 1;
        } else if let Some(response) = response {
            let kind = n % 12;
            let text = response.text();
            let leaked = ["\"kind\":\"Pod", "\"uid\""].iter().any(|s| text.contains(s));
            assert!(!leaked, "token {n} (kind {kind}) read kubelet's cache: {text}");
            assert_ne!(response.status, 200, "token {n} (kind {kind}, online {online}) got a 200");
        } else {
            panic!("token {n} (kind {}): no answer", n % 12);
        }
    };
    for n in 0..HOSTILE_ONLINE {
        check(n, &mut client, true);
    }
    let rss_before = edge.lite.proc().rss_bytes();
    edge.cut_cloud();
    for n in HOSTILE_ONLINE..HOSTILE_TOKENS {
        check(n, &mut client, false);
    }
    assert!(huge >= HOSTILE_TOKENS / 1000, "only {huge} oversized heads were sent");
    let rss_after = edge.lite.proc().rss_bytes();
    eprintln!(
        "hostile tokens: (online, status) counts {statuses:?}; RSS {rss_before} -> {rss_after}"
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "RSS grew from {rss_before} to {rss_after} bytes over {HOSTILE_TOKENS} hostile tokens"
    );
    let offline = edge.kubelet().get(&pod);
    assert_eq!(offline.status, 200, "kubelet's own cache offline: {}", offline.text());
    assert!(offline.text().contains("\"uid\""), "the leak check would not see the pod");
    drop(client);
    edge.cloud_back();
    edge.assert_recovered(&baseline, "hostile bearer tokens");
}

// ---------------------------------------------------------------------------------------
// Parser properties (the cargo-fuzz targets' checks) on seeded random inputs.
// ---------------------------------------------------------------------------------------

#[path = "../fuzz/checks.rs"]
mod checks;

/// The files of `fuzz/<dir>/<target>/`, sorted (hidden files skipped).
fn fuzz_inputs(dir: &str, target: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&path)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|f| !f.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')));
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display())))
        .collect()
}

/// The quoted entries of `fuzz/dict/<target>.dict` (libFuzzer format), unescaped.
fn fuzz_tokens(target: &str) -> Vec<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/dict/{target}.dict"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut tokens: Vec<Vec<u8>> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.strip_suffix('"').map(unescape))
        .collect();
    tokens.push(b"\r\n".to_vec());
    tokens
}

fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x'))
            .then(|| std::str::from_utf8(bytes.get(i + 2..i + 4)?).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i], bytes.get(i + 1)) {
            (Some(byte), _, _) => {
                out.push(byte);
                i += 4;
            }
            (None, b'\\', Some(&next)) => {
                out.push(next);
                i += 2;
            }
            (None, byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Runs `check` on the target's regression inputs, its seeds, and `iterations` mutations of
/// them from a fixed-seed generator; returns how many inputs ran.
fn stress(target: &str, check: fn(&[u8]), iterations: usize) -> usize {
    let regressions = fuzz_inputs("regressions", target);
    let seeds = fuzz_inputs("seeds", target);
    assert!(!seeds.is_empty(), "no seeds in fuzz/seeds/{target}");
    let tokens = fuzz_tokens(target);
    let token_refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
    for input in regressions.iter().chain(&seeds) {
        check(input);
    }
    let mut rng = checks::Prng::new(0x5eed_0000 + target.len() as u64);
    let mut pool = seeds.clone();
    for _ in 0..iterations {
        let parent = pool[rng.below(pool.len())].clone();
        let child = rng.mutate(&parent, &token_refs);
        check(&child);
        if pool.len() < 256 && rng.below(4) == 0 {
            pool.push(child); // keep some children so mutations stack up
        }
    }
    regressions.len() + seeds.len() + iterations
}

/// Every regression input and seed of the fuzz targets, plus a few thousand seeded mutations:
/// cheap enough for CI.
#[test]
fn fuzz_regressions_and_seeded_stress() {
    stress("request_head", checks::request_head, 20_000);
    stress("chunked_body", checks::chunked_body, 20_000);
    stress("flags", checks::flags, 5_000);
    stress("watch_stream", checks::watch_stream, 200);
    stress("jwt", checks::jwt, 3_000);
    stress("protobuf", checks::protobuf, 20_000);
    stress("token_request", checks::token_request, 10_000);
    stress("issuer_keys", checks::issuer_keys, 2_000);
    stress("in_cluster", checks::in_cluster, 10_000);
    stress("gzip", checks::gzip, 3_000);
}

/// The same with a hundred times more inputs (minutes), for machines where cargo-fuzz does
/// not run. `STRESS_SCALE` multiplies the counts further.
#[test]
#[ignore = "long: millions of seeded inputs"]
fn seeded_stress_long() {
    let scale: usize = std::env::var("STRESS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut total = 0;
    total += stress("request_head", checks::request_head, 2_000_000 * scale);
    total += stress("chunked_body", checks::chunked_body, 2_000_000 * scale);
    total += stress("flags", checks::flags, 500_000 * scale);
    total += stress("watch_stream", checks::watch_stream, 20_000 * scale);
    total += stress("jwt", checks::jwt, 300_000 * scale);
    total += stress("protobuf", checks::protobuf, 2_000_000 * scale);
    total += stress("token_request", checks::token_request, 1_000_000 * scale);
    total += stress("issuer_keys", checks::issuer_keys, 200_000 * scale);
    total += stress("in_cluster", checks::in_cluster, 1_000_000 * scale);
    total += stress("gzip", checks::gzip, 300_000 * scale);
    eprintln!("seeded stress: {total} inputs, no property broken");
}

// ---------------------------------------------------------------------------------------
// Seeds for the fuzz targets of the service-account and protobuf parsers, from real data:
// tokens signed with the test keys, protobuf built with the generated Kubernetes types.
// `cargo test --test hardening -- --ignored write_fuzz_seeds` rewrites fuzz/seeds/.
// ---------------------------------------------------------------------------------------

mod seeds {
    use super::checks::{self, JWT_ISSUER, JWT_NOW};
    use super::common::protobuf::envelope;
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime as kruntime;
    use prost::Message;
    use serde_json::{Value, json};

    pub type Seeds = Vec<(&'static str, Vec<u8>)>;
    const POD_UID: &str = "7c1a2c1e-0000-4000-8000-000000000001";

    fn claims(exp: i64, namespace: &str, name: &str) -> Value {
        json!({
            "iss": JWT_ISSUER, "aud": [JWT_ISSUER], "exp": exp, "iat": exp - 3600,
            "nbf": exp - 3600, "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name},
                              "pod": {"name": "web-1", "uid": POD_UID}},
        })
    }

    /// A token signed RS256 by the test key for `default/web`, valid at `JWT_NOW`.
    pub fn good_token() -> String {
        let claims = claims(JWT_NOW + 3600, "default", "web").to_string();
        checks::with_signers(|s| s.sign_rs256(br#"{"alg":"RS256","kid":"rsa"}"#, claims.as_bytes()))
    }

    fn mode(byte: u8, rest: &[u8]) -> Vec<u8> {
        [&[byte], rest].concat()
    }

    pub fn jwt() -> Seeds {
        let good = claims(JWT_NOW + 3600, "default", "web").to_string();
        let expired = claims(JWT_NOW - 7200, "kube-system", "coredns").to_string();
        let (rs, es) = checks::with_signers(|s| {
            (
                s.sign_rs256(br#"{"alg":"RS256","kid":"rsa"}"#, good.as_bytes()),
                s.sign_es256(br#"{"alg":"ES256","kid":"ec","typ":"JWT"}"#, good.as_bytes()),
            )
        });
        let none = format!(
            "{}.{}.",
            checks::base64url(br#"{"alg":"none"}"#),
            checks::base64url(good.as_bytes())
        );
        let header = |h: &str| format!("{h}\n{good}").into_bytes();
        vec![
            ("rs256", mode(0, rs.as_bytes())),
            ("es256", mode(0, es.as_bytes())),
            ("alg_none", mode(0, none.as_bytes())),
            ("signed_claims", mode(1, good.as_bytes())),
            ("signed_expired", mode(1, expired.as_bytes())),
            ("signed_header", mode(2, &header(r#"{"alg":"RS256","kid":"rsa"}"#))),
            ("kid_traversal", mode(2, &header(r#"{"alg":"RS256","kid":"../../etc/passwd"}"#))),
            ("no_kid", mode(2, &header(r#"{"alg":"RS256"}"#))),
            ("alg_hs256", mode(2, &header(r#"{"alg":"HS256","kid":"rsa"}"#))),
            ("crit", mode(2, &header(r#"{"alg":"RS256","kid":"rsa","crit":["exp"]}"#))),
        ]
    }

    fn object_meta(namespace: &str, name: &str, rv: &str) -> Option<meta::ObjectMeta> {
        Some(meta::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            resource_version: Some(rv.into()),
            uid: Some("7c1a2c1e-0000-4000-8000-000000000009".into()),
            labels: [("app".to_string(), name.to_string())].into(),
            ..Default::default()
        })
    }

    fn pod(name: &str, rv: &str) -> core::Pod {
        core::Pod {
            metadata: object_meta("default", name, rv),
            spec: Some(core::PodSpec {
                node_name: Some("edge-1".into()),
                containers: vec![core::Container {
                    name: Some("web".into()),
                    image: Some("nginx:1.27".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn service() -> core::Service {
        core::Service {
            metadata: object_meta("default", "kubernetes", "7"),
            spec: Some(core::ServiceSpec {
                cluster_ip: Some("10.96.0.1".into()),
                cluster_ips: vec!["10.96.0.1".into()],
                ports: vec![core::ServicePort {
                    name: Some("https".into()),
                    port: Some(443),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A protobuf watch stream: 4-byte big-endian lengths, each frame a `WatchEvent` whose
    /// object is an enveloped Pod.
    fn watch_stream() -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, rv) in [("ADDED", "11"), ("MODIFIED", "12"), ("DELETED", "13")] {
            let event = meta::WatchEvent {
                r#type: Some(kind.into()),
                object: Some(kruntime::RawExtension {
                    raw: Some(envelope("v1", "Pod", pod("web-1", rv).encode_to_vec())),
                }),
            };
            let frame = event.encode_to_vec();
            out.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    fn token_request_message(token: Option<&str>) -> authn::TokenRequest {
        authn::TokenRequest {
            metadata: Some(meta::ObjectMeta::default()),
            spec: Some(authn::TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                bound_object_ref: Some(authn::BoundObjectReference {
                    kind: Some("Pod".into()),
                    api_version: Some("v1".into()),
                    name: Some("web-1".into()),
                    u_id: Some(POD_UID.into()),
                }),
            }),
            status: Some(authn::TokenRequestStatus {
                token: token.map(str::to_string),
                expiration_timestamp: token
                    .map(|_| meta::Time { seconds: Some(JWT_NOW + 3600), nanos: Some(0) }),
            }),
        }
    }

    fn token_request_protobuf(token: Option<&str>) -> Vec<u8> {
        envelope(
            "authentication.k8s.io/v1",
            "TokenRequest",
            token_request_message(token).encode_to_vec(),
        )
    }

    pub fn protobuf() -> Seeds {
        let list = core::PodList {
            metadata: Some(meta::ListMeta {
                resource_version: Some("10".into()),
                ..Default::default()
            }),
            items: vec![pod("web-0", "5"), pod("web-1", "9")],
        };
        vec![
            ("pod", envelope("v1", "Pod", pod("web-0", "5").encode_to_vec())),
            ("pod_list", envelope("v1", "PodList", list.encode_to_vec())),
            ("service", envelope("v1", "Service", service().encode_to_vec())),
            ("watch_stream", watch_stream()),
            ("token_request", token_request_protobuf(Some(&good_token()))),
        ]
    }

    fn token_request_json(token: Option<&str>, audiences: &[&str]) -> Vec<u8> {
        let mut request = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1", "metadata": {},
            "spec": {"audiences": audiences, "expirationSeconds": 3600,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1",
                                        "uid": POD_UID}},
            "status": {"token": "", "expirationTimestamp": null},
        });
        if let Some(token) = token {
            request["status"] =
                json!({"token": token, "expirationTimestamp": "2023-11-14T23:13:20Z"});
        }
        request.to_string().into_bytes()
    }

    /// First byte 0: JSON, 1: protobuf (see `checks::token_request`); 4 moves the clock on.
    pub fn token_request() -> Seeds {
        let token = good_token();
        vec![
            ("json_request", mode(0, &token_request_json(None, &[]))),
            ("json_answer", mode(0, &token_request_json(Some(&token), &[]))),
            ("json_answer_later", mode(4 * 40, &token_request_json(Some(&token), &[]))),
            ("json_answer_vault", mode(0, &token_request_json(Some(&token), &["vault"]))),
            ("proto_request", mode(1, &token_request_protobuf(None))),
            ("proto_answer", mode(1, &token_request_protobuf(Some(&token)))),
            ("proto_answer_later", mode(4 * 40 + 1, &token_request_protobuf(Some(&token)))),
        ]
    }

    pub fn issuer_keys() -> Seeds {
        let discovery = json!({
            "issuer": JWT_ISSUER, "jwks_uri": format!("{JWT_ISSUER}/openid/v1/jwks"),
            "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        let jwks = checks::with_signers(|s| checks::jwks(&s.rsa, &s.ec));
        let stored = json!({"version": 1, "discovery": discovery, "jwks": jwks});
        vec![
            (
                "documents",
                [discovery.to_string().as_bytes(), b"\0", jwks.to_string().as_bytes()].concat(),
            ),
            ("stored", stored.to_string().into_bytes()),
        ]
    }

    pub fn in_cluster() -> Seeds {
        let service = |namespace: &str, name: &str| {
            json!({
            "kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"], "type": "ClusterIP",
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                                "targetPort": 6443}]}})
        };
        let items = [service("default", "kubernetes"), service("kube-system", "kube-dns")];
        let list = json!({"kind": "ServiceList", "apiVersion": "v1",
                          "metadata": {"resourceVersion": "9"}, "items": items});
        let events = [
            ("ADDED", service("default", "kubernetes")),
            ("MODIFIED", service("default", "web")),
            ("BOOKMARK", json!({"kind": "Service", "metadata": {"resourceVersion": "12"}})),
        ]
        .map(|(kind, object)| format!("{}\n", json!({"type": kind, "object": object})))
        .concat();
        vec![
            ("service", service("default", "kubernetes").to_string().into_bytes()),
            ("other_service", service("default", "web").to_string().into_bytes()),
            ("list", list.to_string().into_bytes()),
            ("events", events.into_bytes()),
        ]
    }

    /// First byte: limit (top two bits: 64 KiB, 1 MiB, 1000, 1) and read split (the rest).
    pub fn gzip() -> Seeds {
        use lite_apiserver::gzip::compress;
        let list = in_cluster().into_iter().map(|(_, seed)| seed).collect::<Vec<_>>().concat();
        let mut named = compress(&list);
        named[3] |= 0x08 | 0x10; // FNAME and FCOMMENT, each NUL-terminated after the header
        named.splice(10..10, b"list.json\0served by the cloud\0".iter().copied());
        let members = [compress(b"first member\n"), compress(b"second member\n")].concat();
        let mut truncated = compress(&list);
        truncated.truncate(truncated.len() / 2);
        vec![
            ("list", mode(6, &compress(&list))),
            ("named_header", mode(0x40 | 17, &named)),
            ("two_members", mode(3, &members)),
            ("bomb", mode(0, &compress(&vec![0u8; 4 << 20]))),
            ("bomb_small_limit", mode(0x80 | 9, &compress(&vec![b'a'; 100_000]))),
            ("truncated", mode(1, &truncated)),
        ]
    }

    pub fn all() -> Vec<(&'static str, Seeds)> {
        vec![
            ("jwt", jwt()),
            ("protobuf", protobuf()),
            ("token_request", token_request()),
            ("issuer_keys", issuer_keys()),
            ("in_cluster", in_cluster()),
            ("gzip", gzip()),
        ]
    }
}

/// The seeds reach the checks behind the signature and the offline answer: without that
/// the properties on signed tokens and answers would never run.
#[test]
fn fuzz_seeds_reach_the_signed_paths() {
    use lite_apiserver::jwt::{self, Policy, Verdict};
    let token = seeds::good_token();
    let verdict = checks::with_signers(|s| {
        jwt::verify(&token, &s.keys, &Policy::new(checks::JWT_ISSUER), checks::JWT_NOW)
    });
    assert!(matches!(verdict, Verdict::ServiceAccount { .. }), "{verdict:?}");
    for (name, seed) in seeds::token_request() {
        let answered = seed[1..].windows(token.len()).any(|w| w == token.as_bytes());
        if answered {
            let content_type = ["application/json", "application/vnd.kubernetes.protobuf"]
                [usize::from(seed[0] % 2)];
            let issued = IssuedToken::from_answer(&seed[1..], Some(content_type));
            assert!(issued.is_ok(), "{name}: {issued:?}");
        }
    }
}

/// Writes the generated seeds to `fuzz/seeds/<target>/` (run by hand when they change).
#[test]
#[ignore = "writes fuzz/seeds/"]
fn write_fuzz_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (target, seeds) in seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("seed directory");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("seed file");
        }
    }
}

// ---------------------------------------------------------------------------------------
// A hostile cloud (issue 17): a gzip bomb and a watch frame that never ends, from the
// fake's `gzip-bomb` and `endless-frame` fault modes (examples/fake_apiserver/faults.rs).
// ---------------------------------------------------------------------------------------

const ACCEPT_GZIP: (&str, &str) = ("Accept-Encoding", "gzip");
const ACCEPT_PROTOBUF: (&str, &str) =
    ("Accept", "application/vnd.kubernetes.protobuf,application/json");
/// The opening of the list the fake's bomb inflates to.
const BOMB_OPEN: &[u8] = br#"{"kind":"PodList","apiVersion":"v1""#;
/// What the bomb's plain body is read to by a client that did not accept gzip: past the
/// 64 MiB at which the proxy gives up its cache copy (`MAX_CACHED_BODY`).
const BOMB_READ: usize = 80 << 20;
/// What the endless frame is read to: past the 8 MiB a watch event may be held whole
/// (`MAX_PARTIAL_EVENT`), after which the proxy passes the bytes on as they come.
const ENDLESS_READ: usize = 12 << 20;
/// How long a hostile answer is read before the test gives up on it (a hang fails).
const HOSTILE_DEADLINE: Duration = Duration::from_secs(25);
/// What the proxy's peak RSS may pass its RSS before a bomb by: the one cache copy that
/// may grow to 64 MiB (`MAX_CACHED_BODY`) before it is given up, and the slack of the
/// hostile-token test.
const BOMB_RSS_SLACK: u64 = (64 << 20) + RSS_SLACK;
/// The same for an endless watch frame: the partial event held up to 8 MiB
/// (`MAX_PARTIAL_EVENT`) and its copies as it is let go (taken, chunk-encoded, queued), and
/// the same slack.
const ENDLESS_RSS_SLACK: u64 = 4 * (8 << 20) + RSS_SLACK;

/// A `/proc/<pid>/status` field in bytes (`VmRSS`, or `VmHWM`, the peak of VmRSS).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let kib = status.lines().find_map(|line| {
        line.strip_prefix(field)?
            .strip_prefix(':')?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
    });
    kib.unwrap_or_else(|| panic!("no {field} in {path}")) * 1024
}

fn set_fault(edge: &Edge, mode: &str) {
    let path = format!("/debug/fault?mode={mode}");
    edge.cloud_admin().request("POST", &path, &[], b"").expect_status(200);
}

/// Reads a streamed body until `limit` bytes, its end or `HOSTILE_DEADLINE`, keeping only
/// its first KiB; between reads, `meanwhile` runs (other clients' requests). Returns the
/// bytes read, the first KiB and whether the body ended.
fn drain(
    stream: &mut WatchStream,
    limit: usize,
    mut meanwhile: impl FnMut(usize),
) -> (usize, Vec<u8>, bool) {
    let deadline = Instant::now() + HOSTILE_DEADLINE;
    let (mut read, mut first) = (0, Vec::new());
    while read < limit && !stream.is_closed() && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(piece) = stream.next_message(left, |b| (!b.is_empty()).then_some(b.len())) {
            let keep = piece.len().min(1024_usize.saturating_sub(first.len()));
            first.extend_from_slice(&piece[..keep]);
            read += piece.len();
            meanwhile(read);
        }
    }
    (read, first, stream.is_closed())
}

/// `path` as the cache answers it once the proxy finds the cloud cut (which the caller did).
fn cached_answer(edge: &Edge, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let offline = wait_for(SETTLE, || {
        let response = edge.kubelet().try_request("GET", path, headers, b"").ok()?;
        (response.status == 200 && response.header("x-lite-apiserver-cache") == Some("hit"))
            .then_some(response)
    });
    offline
        .unwrap_or_else(|| panic!("{path} {headers:?}: not answered from the cache offline"))
        .body
}

/// With the cloud cut, `path` is answered from the cache with exactly `expected`.
fn assert_served_offline(edge: &Edge, path: &str, headers: &[(&str, &str)], expected: &[u8]) {
    let offline = cached_answer(edge, path, headers);
    let shown = String::from_utf8_lossy(&offline);
    assert!(offline == expected, "{path} {headers:?}: the cached answer changed: {shown}");
}

/// The answer the cache gives for `path` with the cloud cut, then the cloud back and the
/// proxy proxying again: the reference the same answer after an abuse must match.
fn offline_reference(edge: &mut Edge, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    edge.cut_cloud();
    let offline = cached_answer(edge, path, headers);
    edge.cloud_back();
    let up = wait_for(SETTLE, || (edge.diag("/readyz").0 == 200).then_some(()));
    assert!(up.is_some(), "the proxy never found the cloud back: {:?}", edge.diag("/readyz"));
    offline
}

#[test]
fn a_gzip_bomb_from_the_cloud_is_never_cached_and_costs_bounded_memory() {
    let mut edge = Edge::start("gzip-bomb", &[], &[]);
    let baseline = edge.baseline();
    edge.wait_stored(1);
    let cached = offline_reference(&mut edge, PODS, &[]);
    let stored_before = edge.metric("lite_apiserver_cache_stored_total");
    let pid = edge.lite.proc().pid();
    let rss_before = status_bytes(pid, "VmRSS");
    set_fault(&edge, "gzip-bomb");

    // A client that accepts gzip gets the cloud's bytes as they came: about a MiB, whole.
    let zipped = edge.kubelet().request("GET", PODS, &[ACCEPT_GZIP], b"").expect_status(200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"), "{:?}", zipped.headers);
    assert!(zipped.body.len() < 4 << 20, "{} compressed bytes", zipped.body.len());
    let mut opening = vec![0; BOMB_OPEN.len()];
    flate2::read::GzDecoder::new(zipped.body.as_slice()).read_exact(&mut opening).unwrap();
    assert_eq!(opening, BOMB_OPEN, "the cloud's bomb, relayed untouched");
    let (rss_relayed, peak_relayed) = (status_bytes(pid, "VmRSS"), status_bytes(pid, "VmHWM"));

    // A client that does not gets it inflated as it reads, never faster; it hangs up.
    let mut plain_client = edge.kubelet();
    let mut plain = plain_client.try_watch(PODS, &[]).expect("the bomb's head");
    assert_eq!(plain.head.headers.get("content-encoding"), None, "{:?}", plain.head.headers);
    let (read, first, ended) = drain(&mut plain, BOMB_READ, |_| {});
    assert!(first.starts_with(BOMB_OPEN), "not the bomb: {}", String::from_utf8_lossy(&first));
    assert!(read >= BOMB_READ && !ended, "{read} plain bytes, then the answer ended");
    drop(plain);
    let rss_after = status_bytes(pid, "VmRSS");
    let peak = status_bytes(pid, "VmHWM");
    eprintln!(
        "gzip bomb: {} compressed bytes relayed; {read} plain bytes read; VmRSS {rss_before} \
         before, {rss_relayed} after the relayed bomb (VmHWM {peak_relayed}), {rss_after} \
         after the inflated one (VmHWM {peak})",
        zipped.body.len()
    );
    assert!(
        peak < rss_before + BOMB_RSS_SLACK,
        "VmHWM {peak} bytes: grew by more than {BOMB_RSS_SLACK} from {rss_before}"
    );
    assert_eq!(
        edge.metric("lite_apiserver_cache_stored_total"),
        stored_before,
        "something of the bomb was stored"
    );

    set_fault(&edge, "none");
    edge.cut_cloud();
    assert_served_offline(&edge, PODS, &[], &cached);
    edge.cloud_back();
    edge.assert_recovered(&baseline, "a gzip bomb from the cloud");
}

/// One watch through the proxy while the fake sends an endless frame: read to
/// `ENDLESS_READ` or its end while another kubelet connection's reads are answered, then
/// the watcher hangs up and the fake's writer must see it go (its `round`th time). Returns
/// the bytes the watch got and the other reads served meanwhile.
fn endless_watch(edge: &mut Edge, round: usize) -> (usize, usize) {
    let mut watcher = edge.kubelet();
    let watch_path = format!("{PODS}?watch=true&timeoutSeconds=600");
    let mut watch = watcher.try_watch(&watch_path, &[ACCEPT_PROTOBUF]).expect("the watch's head");
    let mut other = edge.kubelet();
    let (mut served, mut next) = (0, 0);
    let (read, first, ended) = drain(&mut watch, ENDLESS_READ, |read| {
        if read >= next {
            next += 1 << 20;
            other.get("/api/v1/namespaces/default/configmaps").expect_status(200);
            served += 1;
        }
    });
    other.get("/api/v1/namespaces/default/configmaps").expect_status(200);
    assert!(read > 0 || ended, "the watch got neither bytes nor an end");
    if read > 0 {
        assert_eq!(&first[..4], &[0xff, 0xff, 0xff, 0xf0], "not the endless frame: {first:?}");
    }
    drop(watch);
    let gone = wait_for(SETTLE, || {
        let log = edge.fake.stderr();
        (log.matches("endless-frame: the watcher went away").count() > round).then_some(())
    });
    assert!(
        gone.is_some(),
        "the cloud's endless stream is still written to:\n{}",
        edge.fake.stderr()
    );
    (read, served)
}

#[test]
fn an_endless_watch_frame_from_the_cloud_keeps_the_proxy_serving_and_the_cache_intact() {
    let mut edge = Edge::start("endless-frame", &[], &[]);
    let baseline = edge.baseline();
    edge.kubelet().request("GET", PODS, &[ACCEPT_PROTOBUF], b"").expect_status(200);
    edge.wait_stored(2);
    let cached_json = offline_reference(&mut edge, PODS, &[]);
    let cached_protobuf = offline_reference(&mut edge, PODS, &[ACCEPT_PROTOBUF]);
    let pid = edge.lite.proc().pid();
    let rss_before = status_bytes(pid, "VmRSS");
    set_fault(&edge, "endless-frame");
    let mut peaks = Vec::new();
    for round in 0..2 {
        let (read, served) = endless_watch(&mut edge, round);
        let (rss, peak) = (status_bytes(pid, "VmRSS"), status_bytes(pid, "VmHWM"));
        eprintln!(
            "endless frame {round}: {read} bytes read, {served} other reads served meanwhile; \
             VmRSS {rss_before} before, {rss} after; VmHWM {peak}"
        );
        peaks.push(peak);
    }
    assert!(
        peaks[0] < rss_before + ENDLESS_RSS_SLACK,
        "VmHWM {} bytes: grew by more than {ENDLESS_RSS_SLACK} from {rss_before}",
        peaks[0]
    );
    assert!(peaks[1] < peaks[0] + (8 << 20), "a second endless stream cost more: {peaks:?}");

    set_fault(&edge, "none");
    edge.cut_cloud();
    assert_served_offline(&edge, PODS, &[], &cached_json);
    assert_served_offline(&edge, PODS, &[ACCEPT_PROTOBUF], &cached_protobuf);
    edge.cloud_back();
    edge.assert_recovered(&baseline, "an endless watch frame from the cloud");
}
