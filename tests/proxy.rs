//! Integration tests of the transparent proxy (issue 2): the real lite-apiserver binary in
//! front of the fake kube-apiserver, on real sockets. Each test owns its PKI, temp dirs and
//! processes, so they run in parallel. `selftest_*` check the harness against the fake alone.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const PODS: &str = "/api/v1/namespaces/default/pods";
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

fn fake_user(resp: &Response) -> &str {
    resp.header("x-fake-user").unwrap_or_else(|| panic!("no X-Fake-User in {:?}", resp.headers))
}

fn json_body(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialize JSON")
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

// ---------------------------------------------------------------------------------------
// Harness self-tests: the client, watch reader and processes against the fake directly.
// ---------------------------------------------------------------------------------------

#[test]
fn selftest_chunk_decoder_handles_any_split() {
    let encoded = wire::encode_chunked(b"hello, chunked world", 3);
    let mut decoder = wire::ChunkDecoder::default();
    let mut out = Vec::new();
    for byte in &encoded {
        assert_eq!(decoder.feed(std::slice::from_ref(byte), &mut out).unwrap(), 1);
    }
    assert!(decoder.is_done());
    assert_eq!(out, b"hello, chunked world");
}

#[test]
fn selftest_fake_identity_keepalive_and_bodies() {
    let env = TestEnv::new("selftest-fake");
    let fake = env.fake(&["--token", "t0ken=token-user"]);
    let mut kubelet = env.client(fake.port, Some("kubelet"));
    for _ in 0..3 {
        let resp = kubelet.get("/version").expect_status(200);
        assert_eq!(fake_user(&resp), "system:node:edge-1");
        assert!(resp.header("x-fake-serial").is_some());
    }
    assert_eq!(kubelet.connections_opened(), 1, "the fake should keep connections alive");

    let mut anonymous = env.client(fake.port, None);
    assert_eq!(fake_user(&anonymous.get("/version")), "system:anonymous");
    let resp = anonymous.request("GET", "/version", &[("Authorization", "Bearer t0ken")], b"");
    assert_eq!(fake_user(&resp), "token-user");

    assert_echo_receives_bodies_intact(&mut anonymous);

    let plain = anonymous.get("/debug/blob?bytes=100000").expect_status(200);
    let chunked = anonymous.get("/debug/blob?bytes=100000&chunked=1").expect_status(200);
    assert_eq!(plain.body.len(), 100_000);
    assert_eq!(plain.body, chunked.body);
    assert!(chunked.headers.has_token("transfer-encoding", "chunked"));
}

#[test]
fn selftest_fake_watch_and_restart() {
    let env = TestEnv::new("selftest-watch");
    let mut fake = env.fake(&[]);
    watch_pod_lifecycle(&mut env.client(fake.port, Some("admin")), "direct-pod");

    let port = fake.port;
    fake.stop();
    assert!(env.client(port, None).try_get("/version").is_err(), "the stopped fake still answers");
    fake.restart();
    assert_eq!(fake.port, port);
    env.client(port, None).get("/version").expect_status(200);
}

#[test]
fn selftest_fake_streams_a_large_body_after_a_pause() {
    let env = TestEnv::new("selftest-stream");
    let fake = env.fake(&[]);
    let mut stream = env.client(fake.port, None).stream("/debug/blob?bytes=67108864");
    // The pause fills the socket buffers, as in the proxy's backpressure test.
    std::thread::sleep(Duration::from_secs(1));
    let body = stream.read_to_end(Duration::from_secs(30)).expect("the whole body");
    assert_eq!(body.len(), 64 << 20);
}

/// LIST, WATCH from its resourceVersion, then create/modify/delete `name` through `client`
/// and see ADDED, MODIFIED, DELETED arrive one at a time on the still-open stream.
fn watch_pod_lifecycle(client: &mut Client, name: &str) {
    let list = client.get(PODS).expect_status(200).json();
    let version = resource_version(&list);
    let mut watch = client.watch(&format!("{PODS}?watch=true&resourceVersion={version}"));
    assert!(
        watch.head.headers.has_token("transfer-encoding", "chunked"),
        "watch is not chunked: {:?}",
        watch.head
    );

    let created = client.request("POST", PODS, &[JSON], &json_body(&pod(name)));
    assert!(matches!(created.status, 200 | 201), "create: {} {}", created.status, created.text());
    let added = watch.expect_change(EVENT_TIMEOUT, "ADDED", name);

    let mut changed = added["object"].clone();
    changed["metadata"]["labels"]["changed"] = json!("yes");
    client
        .request("PUT", &format!("{PODS}/{name}"), &[JSON], &json_body(&changed))
        .expect_status(200);
    let modified = watch.expect_change(EVENT_TIMEOUT, "MODIFIED", name);
    assert_eq!(modified["object"]["metadata"]["labels"]["changed"], "yes");

    let deleted = client.request("DELETE", &format!("{PODS}/{name}"), &[], b"");
    assert!(matches!(deleted.status, 200 | 202), "delete: {} {}", deleted.status, deleted.text());
    watch.expect_change(EVENT_TIMEOUT, "DELETED", name);
    watch.assert_open_for(Duration::from_millis(500));
}

// ---------------------------------------------------------------------------------------
// Proxy tests.
// ---------------------------------------------------------------------------------------

#[test]
fn identity_is_chosen_by_client_cert_cn() {
    let edge = Edge::start("identity", &[], &[]);
    for (cert, user) in
        [("kubelet", "system:node:edge-1"), ("kube-proxy", "system:kube-proxy"), ("admin", "admin")]
    {
        let resp = edge.client(Some(cert)).get(PODS).expect_status(200);
        assert_eq!(fake_user(&resp), user, "client cert {cert}");
        assert_eq!(resp.json()["kind"], "PodList");
    }
}

#[test]
fn no_cert_uses_default_identity_and_token_passes_unchanged() {
    let edge =
        Edge::start("token", &["--token", "pod-token=system:serviceaccount:default:app"], &[]);
    let mut client = edge.client(None);
    let bearer = ("Authorization", "Bearer pod-token");

    let resp = client.request("GET", PODS, &[bearer], b"").expect_status(200);
    assert_eq!(fake_user(&resp), "system:serviceaccount:default:app");
    assert!(
        resp.header("x-fake-serial").is_none(),
        "default identity must not present a client cert"
    );

    let echo = client.request("GET", "/debug/echo", &[bearer], b"").expect_status(200).json();
    assert_eq!(echo_header(&echo, "authorization"), vec!["Bearer pod-token"]);

    let resp = client.get("/version").expect_status(200);
    assert_eq!(fake_user(&resp), "system:anonymous");
}

#[test]
fn unknown_cn_uses_default_identity() {
    let edge = Edge::start("unknown-cn", &[], &[]);
    edge.env.pki.issue_client("stranger", "system:node:somebody-else").expect("issue client cert");
    let resp = edge.client(Some("stranger")).get("/version").expect_status(200);
    assert_eq!(fake_user(&resp), "system:anonymous");
    assert!(resp.header("x-fake-serial").is_none(), "an unknown CN must not borrow an identity");
}

#[test]
fn rogue_ca_client_cert_fails_the_handshake() {
    let mut edge = Edge::start("rogue", &[], &[]);
    let outcome = edge.client(Some("rogue")).try_get("/version");
    assert!(outcome.is_err(), "a cert from another CA got an HTTP answer: {outcome:?}");
    edge.lite.assert_alive();
    edge.client(Some("admin")).get("/version").expect_status(200);
}

#[test]
fn watch_events_arrive_one_by_one_on_an_open_stream() {
    let edge = Edge::start("watch", &[], &[]);
    watch_pod_lifecycle(&mut edge.client(Some("kubelet")), "watched-pod");
}

#[test]
fn watch_from_zero_starts_with_current_state() {
    let edge = Edge::start("watch-zero", &[], &[]);
    let mut client = edge.client(Some("kubelet"));
    let listed = client.get(PODS).expect_status(200).json();
    let count = listed["items"].as_array().map_or(0, Vec::len);
    assert!(count > 0, "the fake seeds pods in default: {listed}");
    let mut watch = client.watch(&format!("{PODS}?watch=true&resourceVersion=0"));
    for _ in 0..count {
        let event = watch.next_event(EVENT_TIMEOUT).expect("synthetic ADDED event");
        assert_eq!(event["type"], "ADDED", "{event}");
    }
    watch.assert_open_for(Duration::from_millis(300));
}

#[test]
fn large_request_body_reaches_upstream_intact() {
    let edge = Edge::start("post-body", &[], &[]);
    assert_echo_receives_bodies_intact(&mut edge.client(Some("admin")));
}

/// Sends a 3 MiB body with Content-Length, then 1 MiB and a few bytes chunked, to
/// `/debug/echo`, and checks the length and SHA-256 the upstream saw. Run against the fake
/// directly by a self-test, so a failure through the proxy is the proxy's.
fn assert_echo_receives_bodies_intact(client: &mut Client) {
    let body = pattern_bytes(3 * 1024 * 1024);
    let octets = ("Content-Type", "application/octet-stream");
    let echo = client.request("POST", "/debug/echo", &[octets], &body).expect_status(200).json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(
        (&echo["body_len"], &echo["body_sha256"]),
        (&json!(body.len()), &json!(sha256_hex(&body)))
    );

    let chunked_headers = [octets, ("Transfer-Encoding", "chunked")];
    for (len, chunk_size) in [(1 << 20, 64 * 1024), (1000, 7)] {
        let part = &body[..len];
        let chunked = wire::encode_chunked(part, chunk_size);
        let echo = client
            .request("PUT", "/debug/echo", &chunked_headers, &chunked)
            .expect_status(200)
            .json();
        let seen = (&echo["body_len"], &echo["body_sha256"]);
        assert_eq!(
            seen,
            (&json!(len), &json!(sha256_hex(part))),
            "chunked body of {len} in {chunk_size}-byte chunks"
        );
    }
}

#[test]
fn large_response_arrives_intact() {
    let edge = Edge::start("blob", &[], &[]);
    let mut proxied = edge.client(Some("admin"));
    let mut direct = edge.direct(Some("admin"));
    for path in ["/debug/blob?bytes=5242880", "/debug/blob?bytes=5242880&chunked=1"] {
        let expected = direct.get(path).expect_status(200);
        let got = proxied.get(path).expect_status(200);
        assert_eq!(expected.body.len(), 5 * 1024 * 1024, "{path} direct");
        assert_eq!(got.body.len(), expected.body.len(), "{path} via proxy");
        assert_eq!(sha256_hex(&got.body), sha256_hex(&expected.body), "{path} via proxy");
    }
}

#[test]
fn a_client_that_stops_reading_does_not_grow_proxy_memory() {
    const TOTAL: usize = 64 << 20;
    const ALLOWED_GROWTH: u64 = 24 << 20;
    let mut edge = Edge::start("backpressure", &[], &[]);
    let mut client = edge.client(Some("admin"));
    client.get("/version").expect_status(200);
    let baseline = edge.lite.proc().rss_bytes();
    let mut stream = client.stream(&format!("/debug/blob?bytes={TOTAL}"));
    // The client reads nothing for a while: without backpressure the proxy would buffer
    // whatever the upstream sends at loopback speed.
    let mut peak = baseline;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        peak = peak.max(edge.lite.proc().rss_bytes());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        peak < baseline + ALLOWED_GROWTH,
        "proxy RSS grew from {baseline} to {peak} bytes while its client was not reading"
    );
    // Directly from the fake this takes about a second (see the self-test).
    let body = stream
        .read_to_end(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the rest of the body: {e}"));
    assert_eq!(body.len(), TOTAL, "body length after resuming reads");
}

#[test]
fn upstream_never_started_gives_503_status() {
    let env = TestEnv::new("down");
    let mut lite = env.lite(free_port(), &["--timeout=1"]);
    let mut client = env.client(lite.port, Some("kubelet"));
    for _ in 0..2 {
        let resp = client.request("POST", "/debug/echo", &[], b"x");
        assert_eq!(resp.status, 503, "body: {}", resp.text());
        assert_status_body(&resp, 503);
    }
    let resp = client.get(PODS);
    assert_status_body(&resp, 503);
    lite.assert_alive();
}

#[test]
fn upstream_killed_gives_503_and_recovers_when_back() {
    let mut edge = Edge::start("killed", &[], &["--timeout=1"]);
    let mut client = edge.client(Some("kubelet"));
    client.request("POST", "/debug/echo", &[], b"x").expect_status(200);

    edge.fake.stop();
    let resp = edge.client(Some("kubelet")).request("POST", "/debug/echo", &[], b"x");
    assert_status_body(&resp, 503);
    edge.lite.assert_alive();

    edge.fake.restart();
    let recovered = wait_for(Duration::from_secs(10), || {
        let resp =
            edge.client(Some("kubelet")).try_request("POST", "/debug/echo", &[], b"x").ok()?;
        (resp.status == 200).then_some(resp)
    });
    assert!(recovered.is_some(), "the proxy did not reach the restarted upstream within 10 s");
}

#[test]
fn upstream_that_never_answers_tls_times_out_with_status() {
    let env = TestEnv::new("tls-hang");
    // Accepts TCP connections (the kernel backlog does) but never speaks TLS.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let mut lite = env.lite(port, &["--timeout=1"]);
    let started = Instant::now();
    let resp = env.client(lite.port, Some("kubelet")).request("POST", "/debug/echo", &[], b"x");
    assert!(matches!(resp.status, 503 | 504), "status {}: {}", resp.status, resp.text());
    assert_status_body(&resp, resp.status);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} with --timeout=1",
        started.elapsed()
    );
    lite.assert_alive();
}

#[test]
fn garbage_from_upstream_is_a_5xx_status_not_a_crash() {
    let mut edge = Edge::start("upstream-garbage", &[], &[]);
    let resp = edge.client(Some("admin")).get("/debug/garbage");
    assert!((500..=504).contains(&resp.status), "status {}: {}", resp.status, resp.text());
    assert_status_body(&resp, resp.status);
    edge.lite.assert_alive();
    edge.client(Some("admin")).get("/version").expect_status(200);
}

#[test]
fn keep_alive_serves_sequential_requests_on_one_connection() {
    let edge = Edge::start("keepalive", &[], &[]);
    let mut client = edge.client(Some("kubelet"));
    for round in 0..3 {
        client.get("/version").expect_status(200);
        client.get(PODS).expect_status(200);
        let body = format!("round {round}");
        let echo =
            client.request("POST", "/debug/echo", &[], body.as_bytes()).expect_status(200).json();
        assert_eq!(echo["body_sha256"], sha256_hex(body.as_bytes()));
        client.get("/debug/blob?bytes=70000&chunked=1").expect_status(200);
    }
    assert_eq!(client.connections_opened(), 1, "the proxy closed a keep-alive connection");
}

#[test]
fn hop_by_hop_headers_are_dropped_and_others_pass() {
    let edge = Edge::start("hop-by-hop", &[], &[]);
    let headers = [
        ("Connection", "close, X-Custom"),
        ("X-Custom", "1"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Proxy-Connection", "keep-alive"),
        ("Impersonate-User", "jane"),
        ("Impersonate-Group", "developers"),
        ("X-Ordinary", "kept"),
        ("Accept", "application/json"),
    ];
    let resp =
        edge.client(Some("admin")).request("GET", "/debug/echo", &headers, b"").expect_status(200);
    let echo = resp.json();
    for dropped in ["connection", "x-custom", "keep-alive", "te", "proxy-connection"] {
        assert!(echo_header(&echo, dropped).is_empty(), "{dropped} reached upstream: {echo}");
    }
    for (name, value) in
        [("impersonate-user", "jane"), ("impersonate-group", "developers"), ("x-ordinary", "kept")]
    {
        assert_eq!(echo_header(&echo, name), vec![value], "{name} in {echo}");
    }
}

#[test]
fn upgrade_is_tunnelled_as_raw_bytes() {
    let edge = Edge::start("upgrade", &[], &[]);
    let mut client = edge.client(Some("admin"));
    let headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "SPDY/3.1"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
    ];
    let path = format!("{PODS}/x/exec?command=sh&stdin=true&stdout=true");
    let (resp, tunnel) = client.upgrade("POST", &path, &headers);
    assert_eq!(resp.status, 101, "body: {}", resp.text());
    assert!(resp.headers.has_token("upgrade", "SPDY/3.1"), "{:?}", resp.headers);
    let mut tunnel = tunnel.expect("101 gives a tunnel");
    for payload in [b"hello through the tunnel\n".to_vec(), pattern_bytes(256 * 1024)] {
        tunnel.send(&payload).expect("write to tunnel");
        let echoed =
            tunnel.recv_exact(payload.len(), Duration::from_secs(10)).expect("echo from tunnel");
        assert!(echoed == payload, "tunnel altered {} bytes", payload.len());
    }
}

#[test]
fn malformed_requests_get_400_status() {
    let mut edge = Edge::start("malformed", &[], &[]);
    for garbage in
        [&b"THIS IS NOT HTTP\r\n\r\n"[..], b"GET /version HTTP/1.1\r\nHost localhost\r\n\r\n"]
    {
        let resp = edge.client(Some("admin")).raw(garbage).expect("a response to garbage");
        assert_status_body(&resp, 400);
    }
    edge.lite.assert_alive();
    edge.client(Some("admin")).get("/version").expect_status(200);
}

#[test]
fn sigterm_exits_zero_promptly() {
    let mut edge = Edge::start("sigterm", &[], &[]);
    edge.client(Some("admin")).get("/version").expect_status(200);
    edge.lite.sigterm();
    let status = edge.lite.proc().wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit status after SIGTERM: {status:?}");
}

#[test]
fn sigterm_with_an_open_watch_closes_it_and_exits_zero() {
    let mut edge = Edge::start("sigterm-watch", &[], &[]);
    let mut client = edge.client(Some("kubelet"));
    let version = resource_version(&client.get(PODS).expect_status(200).json());
    let mut watch = client.watch(&format!("{PODS}?watch=true&resourceVersion={version}"));
    edge.lite.sigterm();
    let status = edge.lite.proc().wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit status after SIGTERM: {status:?}");
    assert!(watch.wait_closed(Duration::from_secs(2)), "watch still open after the proxy exited");
}

#[test]
fn discovery_and_custom_resources_pass_through() {
    let edge = Edge::start("discovery", &[], &[]);
    let mut client = edge.client(Some("kubelet"));
    let mut direct = edge.direct(Some("kubelet"));
    for path in ["/version", "/api", "/apis", "/apis/example.com/v1"] {
        let mut got = client.get(path).expect_status(200).json();
        let mut expected = direct.get(path).expect_status(200).json();
        // /api reports the address the client used, which differs between the two.
        for doc in [&mut got, &mut expected] {
            doc.as_object_mut().map(|o| o.remove("serverAddressByClientCIDRs"));
        }
        assert_eq!(got, expected, "{path}");
    }
    let widgets =
        client.get("/apis/example.com/v1/namespaces/default/widgets").expect_status(200).json();
    assert_eq!(widgets["kind"], "WidgetList", "{widgets}");

    let widget = json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w1", "namespace": "default"},
        "spec": {"size": 3}
    });
    let created = client.request(
        "POST",
        "/apis/example.com/v1/namespaces/default/widgets",
        &[JSON],
        &json_body(&widget),
    );
    assert!(
        matches!(created.status, 200 | 201),
        "create widget: {} {}",
        created.status,
        created.text()
    );
    let got =
        client.get("/apis/example.com/v1/namespaces/default/widgets/w1").expect_status(200).json();
    assert_eq!(got["spec"]["size"], 3);
}

#[test]
fn a_slow_upstream_request_does_not_block_others() {
    let edge = Edge::start("slow", &[], &[]);
    let mut slow_client = edge.client(Some("admin"));
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        slow_client.get("/debug/slow?ms=3000").expect_status(200);
        started.elapsed()
    });
    // Give the slow request a head start so it is in flight upstream.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut client = edge.client(Some("kubelet"));
    for _ in 0..5 {
        client.get("/version").expect_status(200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "requests waited {:?} behind a slow one",
        started.elapsed()
    );
    let slow_took = slow.join().expect("slow request thread");
    assert!(
        slow_took >= Duration::from_millis(2900),
        "the slow request returned early: {slow_took:?}"
    );
}

/// The link's byte counters include an answer as soon as it has been relayed, while its
/// connection waits in the pool (it may idle there for 90 s).
#[test]
fn cloud_link_bytes_are_counted_when_the_answer_is_relayed() {
    const RECEIVED: &str = "lite_apiserver_upstream_bytes_total{direction=\"received\"}";
    const SENT: &str = "lite_apiserver_upstream_bytes_total{direction=\"sent\"}";
    let edge = Edge::start("link-bytes", &[], &[]);
    let mut kubelet = edge.kubelet();
    kubelet.get(PODS).expect_status(200);
    let (received, sent) = (edge.metric(RECEIVED), edge.metric(SENT));
    let answer = kubelet.get(PODS).expect_status(200);
    assert_eq!(edge.metric("lite_apiserver_open_upstream_connections"), 1, "pooled, not closed");
    let received_now = edge.metric(RECEIVED) - received;
    assert!(received_now > answer.body.len() as u64, "{received_now} bytes for the answer");
    assert!(edge.metric(SENT) > sent, "the request's bytes");
}
