//! The world most integration tests start from: a fake kube-apiserver (the cloud), optionally
//! a TCP relay standing in for the link, and a lite-apiserver in front with its diagnostics
//! listener on a known port. Clients of the proxy and of the cloud under the test PKI's
//! identities, the proxy killed or restarted on its cache, the cloud cut and restored, and
//! the diagnostics the tests wait on (cache writes, `/debug/cache`).

use std::io;
use std::time::Duration;

use serde_json::Value;

use super::client::Conn;
use super::{Client, Diagnostics, FakeApiserver, Lite, Relay, Response, TempDir, TestEnv};
use super::{pod, wait_for};

/// Generous bound for anything asynchronous (cache writes, the `/debug/cache` summary).
const SETTLE: Duration = Duration::from_secs(15);
const PODS: &str = "/api/v1/namespaces/default/pods";
const JSON_CONTENT: (&str, &str) = ("Content-Type", "application/json");

/// A fake apiserver, perhaps a relay, and a lite-apiserver (diagnostics on) in front. Fields
/// drop in order: the proxy, the relay, the fake, then the PKI directory.
pub struct Edge {
    pub lite: Lite,
    relay: Option<Relay>,
    pub fake: FakeApiserver,
    diagnostics: Diagnostics,
    pub env: TestEnv,
}

/// How to start an [`Edge`] beyond its flags: see [`Edge::build`].
pub struct EdgeSpec<'a> {
    label: &'a str,
    fake_args: &'a [&'a str],
    lite_args: &'a [&'a str],
    relay: bool,
    cache: Option<TempDir>,
}

impl<'a> EdgeSpec<'a> {
    /// Flags of the fake apiserver.
    pub fn fake_args(self, fake_args: &'a [&'a str]) -> EdgeSpec<'a> {
        EdgeSpec { fake_args, ..self }
    }

    /// Flags of lite-apiserver, after the defaults (see [`Lite::default_args`]).
    pub fn lite_args(self, lite_args: &'a [&'a str]) -> EdgeSpec<'a> {
        EdgeSpec { lite_args, ..self }
    }

    /// Puts a [`Relay`] between the proxy and the fake, for link faults a stopped fake
    /// cannot show (black holes, resets, cut connections).
    pub fn through_relay(self) -> EdgeSpec<'a> {
        EdgeSpec { relay: true, ..self }
    }

    /// Caches into `cache`, which the test prepared (e.g. with a corrupt database).
    pub fn cache_dir(self, cache: TempDir) -> EdgeSpec<'a> {
        EdgeSpec { cache: Some(cache), ..self }
    }

    /// Starts the fake, the relay and the proxy; returns once the diagnostics port answers.
    pub fn start(self) -> Edge {
        let env = TestEnv::new(self.label);
        let fake = env.fake(self.fake_args);
        let relay = self.relay.then(|| Relay::start(fake.port));
        let upstream = relay.as_ref().map_or(fake.port, |relay| relay.port);
        let diagnostics = Diagnostics::on_free_port();
        let flag = diagnostics.flag();
        let args: Vec<&str> =
            [flag.as_str()].into_iter().chain(self.lite_args.iter().copied()).collect();
        let cache = self.cache.unwrap_or_else(|| TempDir::new("cache"));
        let lite = Lite::start_in(&env.pki, upstream, cache, &args);
        diagnostics.wait_up(&lite);
        let edge = Edge { lite, relay, fake, diagnostics, env };
        // A fresh proxy's cloud state is unknown until its first probe (milliseconds here):
        // tests start from a proxy that knows the cloud is up.
        let up = wait_for(SETTLE, || (edge.diag("/readyz").0 == 200).then_some(()));
        assert!(up.is_some(), "the proxy never found the cloud up: {:?}", edge.diag("/readyz"));
        edge
    }
}

impl Edge {
    /// The proxy straight in front of the fake, with these flags.
    pub fn start(label: &str, fake_args: &[&str], lite_args: &[&str]) -> Edge {
        Edge::build(label).fake_args(fake_args).lite_args(lite_args).start()
    }

    /// An edge with no flags yet; set what the test needs, then [`EdgeSpec::start`].
    pub fn build(label: &str) -> EdgeSpec<'_> {
        EdgeSpec { label, fake_args: &[], lite_args: &[], relay: false, cache: None }
    }

    // ----- clients -------------------------------------------------------------------

    /// A client of the proxy presenting `<cert>.crt`, or no certificate (the token and
    /// anonymous identities: a bearer token goes in the request's headers).
    pub fn client(&self, cert: Option<&str>) -> Client {
        self.env.client(self.lite.port, cert)
    }

    /// A client of the proxy with kubelet's certificate (CN `system:node:edge-1`).
    pub fn kubelet(&self) -> Client {
        self.client(Some("kubelet"))
    }

    /// A client of the proxy with kube-proxy's certificate (CN `system:kube-proxy`).
    pub fn kube_proxy(&self) -> Client {
        self.client(Some("kube-proxy"))
    }

    /// One raw TLS connection to the proxy presenting `<cert>.crt`, or no certificate.
    pub fn conn(&self, cert: Option<&str>) -> io::Result<Conn> {
        Conn::open_as(&self.env.pki, self.lite.port, cert)
    }

    /// A client of the fake itself, bypassing the proxy and the relay (the cloud as the
    /// rest of the world sees it).
    pub fn direct(&self, cert: Option<&str>) -> Client {
        self.env.client(self.fake.port, cert)
    }

    /// An admin client of the fake (the cloud changing on its own).
    pub fn cloud_admin(&self) -> Client {
        self.direct(Some("admin"))
    }

    // ----- the cloud -----------------------------------------------------------------

    /// Creates pod `name` in `default` at the fake, bypassing the proxy; returns it.
    pub fn create_pod_upstream(&self, name: &str) -> Value {
        let body = serde_json::to_vec(&pod(name)).expect("serialize pod");
        self.cloud_admin().request("POST", PODS, &[JSON_CONTENT], &body).expect_status(201).json()
    }

    /// Deletes pod `name` in `default` at the fake (`200`, or `202` while it terminates).
    pub fn delete_pod_upstream(&self, name: &str) {
        let resp = self.cloud_admin().request("DELETE", &format!("{PODS}/{name}"), &[], b"");
        assert!(
            resp.status == 200 || resp.status == 202,
            "delete {name}: {} {}",
            resp.status,
            resp.text()
        );
    }

    /// Pod `name` in `default` as the fake has it.
    pub fn upstream_pod(&self, name: &str) -> Response {
        self.cloud_admin().get(&format!("{PODS}/{name}"))
    }

    /// The relay of an edge built [`EdgeSpec::through_relay`].
    pub fn relay(&self) -> &Relay {
        self.relay.as_ref().expect("this edge was built without a relay")
    }

    /// Cuts the link: the fake is killed, its port stays reserved for [`Edge::cloud_back`].
    pub fn cut_cloud(&mut self) {
        self.fake.stop();
    }

    /// Starts the fake again (from its seed) on the same port.
    pub fn cloud_back(&mut self) {
        let port = self.fake.port;
        self.fake.restart();
        assert_eq!(self.fake.port, port, "the fake must come back on the same port");
    }

    // ----- the proxy -----------------------------------------------------------------

    /// `kill -9`, then the same flags, port and cache dir again; returns once the
    /// diagnostics port answers.
    pub fn restart_lite(&mut self) {
        self.lite.restart();
        self.diagnostics.wait_up(&self.lite);
    }

    /// `GET path` on the diagnostics port: (status, body).
    pub fn diag(&self, path: &str) -> (u16, String) {
        self.diagnostics.get(path)
    }

    /// The body of `/metrics`.
    pub fn metrics(&self) -> String {
        self.diagnostics.metrics()
    }

    /// The value of one Prometheus series, e.g. `lite_apiserver_cache_hits_total` or
    /// `lite_apiserver_responses_total{source="cache",code="2xx"}`.
    pub fn metric(&self, series: &str) -> u64 {
        self.diagnostics.metric(series)
    }

    /// Waits until the cache thread has stored at least `count` answers in total (it
    /// writes asynchronously, and lookups overtake queued writes).
    pub fn wait_stored(&self, count: u64) {
        let stored = wait_for(SETTLE, || {
            (self.metric("lite_apiserver_cache_stored_total") >= count).then_some(())
        });
        assert!(
            stored.is_some(),
            "the cache stored {} answers, expected {count}:\n{}",
            self.metric("lite_apiserver_cache_stored_total"),
            self.metrics()
        );
    }

    /// `/debug/cache` as JSON, once `ready` accepts it (the summary is refreshed lazily).
    pub fn wait_cache_summary(&self, ready: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = wait_for(SETTLE, || {
            let (status, body) = self.diag("/debug/cache");
            assert_eq!(status, 200, "/debug/cache: {body}");
            last = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("/debug/cache is not JSON ({e}): {body}"));
            ready(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| panic!("/debug/cache never showed the expected entries: {last}"))
    }
}
