//! Integration tests of TokenRequests answered offline (issue 13, item 1): kubelet's
//! `kube-api-access` TokenRequest, in JSON and in protobuf, is proxied while the cloud is up
//! and its `201` cached; once the link is cut — and after a `kill -9` and a restart while
//! still cut — the same request gets the same token the cloud issued, in the same
//! representation. Other requests (another audience, another pod uid, another service
//! account) get a `503`, a malformed body a `400`, and the token never shows in the log,
//! `/debug/cache` or `/metrics`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const POD: &str = "/api/v1/namespaces/default/pods/web-1";
const TOKEN_PATH: &str = "/api/v1/namespaces/default/serviceaccounts/default/token";
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";
/// What kubelet sends as `Accept` for protobuf.
const KUBELET_ACCEPT: &str = "application/vnd.kubernetes.protobuf,application/json";
const CACHE_HEADER: &str = "x-lite-apiserver-cache";
/// kubelet's `kube-api-access` request: 3607 s, the apiserver's audiences, bound to the pod.
const KUBE_API_ACCESS_SECONDS: i64 = 3607;
/// The cache identity of kubelet's certificate.
const KUBELET_IDENTITY: &str = "cn:system:node:edge-1";
/// One failed probe takes the node offline.
const QUICK_DOWN: &str = "--cloud-down-after=1";
const SETTLE: Duration = Duration::from_secs(20);

/// The fake, a relay standing for the link, and lite-apiserver (diagnostics on) pointed at
/// the relay. Fields drop in order: the proxy, the relay, the fake, the PKI directory.
struct Node {
    lite: Lite,
    diagnostics: Diagnostics,
    relay: Relay,
    _fake: FakeApiserver,
    env: TestEnv,
}

impl Node {
    fn start(label: &str, lite_args: &[&str]) -> Node {
        let env = TestEnv::new(label);
        let fake = env.fake(&[]);
        let relay = Relay::start(fake.port);
        let (lite, diagnostics) = Diagnostics::lite(&env, relay.port, lite_args);
        let node = Node { lite, diagnostics, relay, _fake: fake, env };
        node.wait_cloud_up(true);
        node
    }

    /// A client with kubelet's certificate (CN `system:node:edge-1`).
    fn kubelet(&self) -> Client {
        self.env.client(self.lite.port, Some("kubelet"))
    }

    fn wait_cloud_up(&self, up: bool) {
        let metric = "lite_apiserver_cloud_up";
        let reached =
            wait_for(SETTLE, || (self.diagnostics.metric(metric) == u64::from(up)).then_some(()));
        assert!(reached.is_some(), "the cloud never became up={up}");
    }

    fn wait_stored(&self, count: u64) {
        let metric = "lite_apiserver_cache_stored_total";
        let stored = wait_for(SETTLE, || (self.diagnostics.metric(metric) >= count).then_some(()));
        assert!(stored.is_some(), "the cache never stored {count} answers");
    }

    /// `/debug/cache` once it counts `count` cached TokenRequest answers for kubelet.
    fn wait_debug_cache_counts(&self, count: u64) -> String {
        let mut last = String::new();
        let found = wait_for(SETTLE, || {
            let (status, body) = self.diagnostics.get("/debug/cache");
            assert_eq!(status, 200, "/debug/cache: {body}");
            let summary: Value = serde_json::from_str(&body).expect("/debug/cache is JSON");
            last = body;
            let counted =
                &summary["identities"][KUBELET_IDENTITY]["serviceaccounts/token"]["entries"];
            (counted.as_u64() == Some(count)).then(|| last.clone())
        });
        found.unwrap_or_else(|| panic!("/debug/cache never counted {count} tokens: {last}"))
    }

    /// Cuts the link the way a dead one fails: connects hang, open connections go silent.
    fn cut(&self) {
        self.relay.set_mode(RelayMode::BlackHole);
    }
}

/// The representation of a TokenRequest body, asked and answered.
#[derive(Clone, Copy, Debug)]
enum Format {
    Json,
    Protobuf,
}

/// What one TokenRequest asks for.
struct Ask<'a> {
    audiences: &'a [&'a str],
    uid: &'a str,
    expiration_seconds: i64,
}

impl Ask<'_> {
    /// kubelet's `kube-api-access` request for pod web-1 of `uid`.
    fn kube_api_access(uid: &str) -> Ask<'_> {
        Ask { audiences: &[], uid, expiration_seconds: KUBE_API_ACCESS_SECONDS }
    }

    fn body(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Json => self.json(),
            Format::Protobuf => self.protobuf(),
        }
    }

    fn json(&self) -> Vec<u8> {
        let request = json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {
                "audiences": self.audiences,
                "expirationSeconds": self.expiration_seconds,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1",
                                   "uid": self.uid},
            },
            "status": {"token": "", "expirationTimestamp": null},
        });
        serde_json::to_vec(&request).expect("JSON")
    }

    /// As client-go encodes it for kubelet (tests/common/token_request.rs).
    fn protobuf(&self) -> Vec<u8> {
        token_request::protobuf_body(self.audiences, self.expiration_seconds, "web-1", self.uid)
    }
}

fn post(client: &mut Client, path: &str, format: Format, body: &[u8]) -> Response {
    let (content_type, accept) = match format {
        Format::Json => ("application/json", "application/json"),
        Format::Protobuf => (PROTOBUF, KUBELET_ACCEPT),
    };
    let headers = [("Content-Type", content_type), ("Accept", accept)];
    client.request("POST", path, &headers, body)
}

fn token_request(client: &mut Client, format: Format, ask: &Ask) -> Response {
    post(client, TOKEN_PATH, format, &ask.body(format))
}

/// `status.token` of a `201` answer, read in the representation its Content-Type names.
fn token_of(resp: &Response, format: Format) -> String {
    assert_eq!(resp.status, 201, "{format:?} TokenRequest: {}", resp.text());
    let content_type = resp.header("content-type").unwrap_or_default();
    match format {
        Format::Json => {
            assert!(content_type.starts_with("application/json"), "{content_type}");
            resp.json()["status"]["token"].as_str().expect("status.token").to_string()
        }
        Format::Protobuf => {
            assert_eq!(content_type, PROTOBUF);
            token_request::protobuf_answer_token(&resp.body)
        }
    }
}

fn pod_uid(client: &mut Client) -> String {
    let pod = client.get(POD).expect_status(200).json();
    pod["metadata"]["uid"].as_str().expect("pod uid").to_string()
}

/// Asserts that no token appears in `text` (a log, a diagnostics page).
fn assert_no_token(text: &str, tokens: &[&str], what: &str) {
    for token in tokens {
        assert!(!text.contains(token), "a token appears in {what}");
    }
}

const FORMATS: [Format; 2] = [Format::Json, Format::Protobuf];

/// Asserts what the offline node answers: the same token (and answer) for the requests seen
/// online, `503` for others, `400` for a malformed body.
fn assert_offline_answers(node: &Node, uid: &str, online: &[(Format, Response)], round: &str) {
    let mut kubelet = node.kubelet();
    for (format, seen) in online {
        let what = format!("{format:?} TokenRequest {round}");
        let resp = token_request(&mut kubelet, *format, &Ask::kube_api_access(uid));
        assert_eq!(token_of(&resp, *format), token_of(seen, *format), "{what}: another token");
        assert_eq!(resp.body, seen.body, "{what}: the cached answer is replayed as it was");
        assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "{what}");
    }
    for format in FORMATS {
        let what = format!("{format:?} {round}");
        let audience = Ask { audiences: &["vault"], ..Ask::kube_api_access(uid) };
        let resp = token_request(&mut kubelet, format, &audience);
        assert_status_body(&resp, 503);
        let other_pod = Ask::kube_api_access("0b5e0000-another-pod");
        let resp = token_request(&mut kubelet, format, &other_pod);
        assert_status_body(&resp, 503);
        assert!(resp.text().contains("default/default"), "{what}: {}", resp.text());
        let lifetime = Ask { expiration_seconds: 7200, ..Ask::kube_api_access(uid) };
        assert_status_body(&token_request(&mut kubelet, format, &lifetime), 503);
        let other_account = "/api/v1/namespaces/default/serviceaccounts/builder/token";
        let body = Ask::kube_api_access(uid).body(format);
        assert_status_body(&post(&mut kubelet, other_account, format, &body), 503);
    }
    let malformed = post(&mut node.kubelet(), TOKEN_PATH, Format::Json, b"{\"spec\": [");
    assert_status_body(&malformed, 400);
    let garbage = post(&mut node.kubelet(), TOKEN_PATH, Format::Protobuf, b"k8s\0\xff\xff");
    assert_status_body(&garbage, 400);
}

#[test]
fn kubelets_token_requests_get_the_clouds_token_offline_and_after_a_restart() {
    let mut node = Node::start("tokens-offline", &[QUICK_DOWN]);
    let mut kubelet = node.kubelet();
    let uid = pod_uid(&mut kubelet);
    let online: Vec<(Format, Response)> = FORMATS
        .iter()
        .map(|&format| (format, token_request(&mut kubelet, format, &Ask::kube_api_access(&uid))))
        .collect();
    for (format, resp) in &online {
        token_of(resp, *format);
        assert_eq!(resp.header(CACHE_HEADER), None, "{format:?}: from the cloud");
    }
    let tokens: Vec<String> = online.iter().map(|(format, resp)| token_of(resp, *format)).collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_ne!(tokens[0], tokens[1], "the cloud issues a token per request");
    node.wait_stored(3); // the pod and the two answers
    let summary = node.wait_debug_cache_counts(2);
    assert_no_token(&summary, &tokens, "/debug/cache");
    assert!(!summary.contains("tokenrequest:"), "/debug/cache shows keys: {summary}");

    node.cut();
    node.wait_cloud_up(false);
    assert_offline_answers(&node, &uid, &online, "offline");
    assert_no_token(&node.lite.stderr(), &tokens, "the log");
    assert_no_token(&node.diagnostics.metrics(), &tokens, "/metrics");

    for round in 1..=2 {
        node.lite.restart(); // kill -9, then start again on the same cache, still cut off
        node.diagnostics.wait_up(&node.lite);
        // The fresh process does not know the cloud is down yet: the requests try the
        // cloud, get no answer and are answered from the cache.
        assert_offline_answers(&node, &uid, &online, &format!("after kill -9 #{round}"));
        node.wait_cloud_up(false);
        assert_offline_answers(&node, &uid, &online, &format!("offline after kill -9 #{round}"));
        assert_no_token(&node.lite.stderr(), &tokens, "the log after the restart");
    }
}

#[test]
fn token_request_bodies_are_checked_before_the_cloud_is_asked() {
    let node = Node::start("tokens-bodies", &[QUICK_DOWN]);
    let mut kubelet = node.kubelet();
    let malformed = post(&mut kubelet, TOKEN_PATH, Format::Json, b"[1, 2");
    assert_status_body(&malformed, 400);
    assert!(malformed.text().contains("not valid JSON"), "{}", malformed.text());
    let huge = vec![b' '; 64 * 1024 + 1];
    let resp = post(&mut node.kubelet(), TOKEN_PATH, Format::Json, &huge);
    assert_status_body(&resp, 413);
    // The connection that answered the 400 is still good for the next request.
    let uid = pod_uid(&mut kubelet);
    let resp = token_request(&mut kubelet, Format::Json, &Ask::kube_api_access(&uid));
    token_of(&resp, Format::Json);
}

/// The link goes silent while the prober has not declared the cloud down (it needs many
/// failed probes here): the TokenRequest sent on a pooled connection gets no answer head
/// within `--cloud-response-timeout` and is answered from the cache, closing the
/// connection (part of its body may have gone to the cloud).
#[test]
fn a_token_request_the_cloud_does_not_answer_in_time_gets_the_cached_token() {
    let node =
        Node::start("tokens-silent", &["--cloud-down-after=1000", "--cloud-response-timeout=1"]);
    let mut kubelet = node.kubelet();
    let uid = pod_uid(&mut kubelet);
    let ask = Ask::kube_api_access(&uid);
    let online = token_request(&mut kubelet, Format::Protobuf, &ask);
    node.wait_stored(2);
    node.cut();
    let resp = token_request(&mut kubelet, Format::Protobuf, &ask);
    assert_eq!(token_of(&resp, Format::Protobuf), token_of(&online, Format::Protobuf));
    assert_eq!(resp.header(CACHE_HEADER), Some("hit"));
    assert!(resp.headers.has_token("connection", "close"), "{:?}", resp.headers);
    assert_eq!(node.diagnostics.metric("lite_apiserver_cloud_up"), 1, "still believed up");
}
