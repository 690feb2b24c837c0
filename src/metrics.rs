//! Counters the reactor keeps and the diagnostics listener prints (Prometheus text).
//! Plain atomics: the reactor writes them, the diagnostics thread reads them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One open watch or other long-running stream (proxied, tunnelled or served from the
/// cache), counted in `open_watches` for exactly as long as this value lives.
pub struct OpenWatch(Arc<Metrics>);

impl OpenWatch {
    pub fn new(metrics: &Arc<Metrics>) -> OpenWatch {
        Metrics::gauge_add(&metrics.open_watches, 1);
        OpenWatch(Arc::clone(metrics))
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        Metrics::gauge_add(&self.0.open_watches, -1);
    }
}

/// Where a response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Upstream,
    Cache,
    Local,
}

const CODE_CLASSES: usize = 5;

/// Why a read was answered from the cache instead of the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    CloudDown,
    /// Before the first probe of a fresh process, or after a request timed out.
    CloudUnknown,
    /// The cloud answered `502`/`503`/`504`.
    CloudError,
    /// The cloud reset the connection or did not begin its answer in time.
    NoAnswer,
}

impl StaleReason {
    const ALL: [StaleReason; 4] = [
        StaleReason::CloudDown,
        StaleReason::CloudUnknown,
        StaleReason::CloudError,
        StaleReason::NoAnswer,
    ];

    fn label(self) -> &'static str {
        match self {
            StaleReason::CloudDown => "cloud_down",
            StaleReason::CloudUnknown => "cloud_unknown",
            StaleReason::CloudError => "cloud_error",
            StaleReason::NoAnswer => "no_answer",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// [source][code class 1xx..5xx]
    responses: [[AtomicU64; CODE_CLASSES]; 3],
    pub open_clients: AtomicU64,
    pub open_upstreams: AtomicU64,
    pub open_watches: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub upstream_failures: AtomicU64,
    /// Connections opened to the cloud (TCP + TLS attempts).
    pub upstream_connects: AtomicU64,
    /// Of those, closed before their TCP and TLS handshakes finished.
    pub upstream_connect_failures: AtomicU64,
    /// Of those, whose TLS handshake resumed a session (no full key exchange).
    pub upstream_resumed: AtomicU64,
    pub cloud_down: AtomicBool,
    /// Why the cloud is considered down (for /readyz).
    cloud_reason: Mutex<String>,
    pub cert_reload_failures: AtomicU64,
    /// Cache answers standing in for the cloud, by `StaleReason`.
    stale_answers: [AtomicU64; 4],
    /// Times the cloud went from up to down or back.
    cloud_transitions: AtomicU64,
    /// Seconds spent offline in finished outages; the current one is added when printed.
    offline_seconds: AtomicU64,
    /// When the current outage began (unix seconds), 0 while up.
    offline_since: AtomicU64,
    /// The oldest cache answer served in the last minute: (age, when served), unix seconds.
    oldest_answer: Mutex<(u64, u64)>,
}

impl Metrics {
    pub fn count_response(&self, source: Source, status: u16) {
        let class = usize::from(status / 100).clamp(1, CODE_CLASSES) - 1;
        self.responses[source as usize][class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_stale_answer(&self, reason: StaleReason, age_seconds: u64) {
        self.stale_answers[reason as usize].fetch_add(1, Ordering::Relaxed);
        let now = crate::clock::unix_seconds();
        if let Ok(mut oldest) = self.oldest_answer.lock() {
            let (age, served) = *oldest;
            if age_seconds >= age || now.saturating_sub(served) > 60 {
                *oldest = (age_seconds, now);
            }
        }
    }

    /// A transition of the cloud's state (not the first verdict of a fresh process).
    pub fn count_cloud_transition(&self, up: bool) {
        self.cloud_transitions.fetch_add(1, Ordering::Relaxed);
        let now = crate::clock::unix_seconds();
        if up {
            let since = self.offline_since.swap(0, Ordering::Relaxed);
            if since != 0 {
                self.offline_seconds.fetch_add(now.saturating_sub(since), Ordering::Relaxed);
            }
        } else {
            self.offline_since.store(now, Ordering::Relaxed);
        }
    }

    pub fn set_cloud(&self, up: bool, reason: &str) {
        self.cloud_down.store(!up, Ordering::Relaxed);
        if let Ok(mut current) = self.cloud_reason.lock() {
            *current = reason.to_string();
        }
    }

    pub fn cloud_reason(&self) -> String {
        self.cloud_reason.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn gauge_add(gauge: &AtomicU64, delta: i64) {
        if delta >= 0 {
            gauge.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(delta.unsigned_abs()))
            });
        }
    }

    /// The Prometheus text exposition of these counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP lite_apiserver_responses_total Responses sent to clients, by source and status class.\n");
        out.push_str("# TYPE lite_apiserver_responses_total counter\n");
        for (source, name) in
            [(Source::Upstream, "upstream"), (Source::Cache, "cache"), (Source::Local, "local")]
        {
            for class in 0..CODE_CLASSES {
                let value = self.responses[source as usize][class].load(Ordering::Relaxed);
                out.push_str(&format!(
                    "lite_apiserver_responses_total{{source=\"{name}\",code=\"{}xx\"}} {value}\n",
                    class + 1
                ));
            }
        }
        let gauges = [
            ("open_client_connections", "gauge", &self.open_clients),
            ("open_upstream_connections", "gauge", &self.open_upstreams),
            ("open_watches", "gauge", &self.open_watches),
            ("rejected_connections_total", "counter", &self.rejected_connections),
            ("upstream_failures_total", "counter", &self.upstream_failures),
            ("upstream_connects_total", "counter", &self.upstream_connects),
            ("upstream_connect_failures_total", "counter", &self.upstream_connect_failures),
            ("upstream_resumed_total", "counter", &self.upstream_resumed),
            ("cert_reload_failures_total", "counter", &self.cert_reload_failures),
        ];
        for (name, kind, value) in gauges {
            out.push_str(&format!(
                "# TYPE lite_apiserver_{name} {kind}\nlite_apiserver_{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        let up = u8::from(!self.cloud_down.load(Ordering::Relaxed));
        out.push_str(&format!(
            "# TYPE lite_apiserver_cloud_up gauge\nlite_apiserver_cloud_up {up}\n"
        ));
        self.render_outages(&mut out);
        LINK_BYTES.render(&mut out);
        out.push_str(&format!(
            "# HELP lite_apiserver_open_helper_connections Connections to the cloud held by the prober and the key fetcher (helper threads; not in open_upstream_connections).\n\
             # TYPE lite_apiserver_open_helper_connections gauge\n\
             lite_apiserver_open_helper_connections {}\n",
            HELPER_CONNECTIONS.load(Ordering::Relaxed)
        ));
        out
    }

    /// Cloud transitions, time offline, and what the cache answered in the cloud's stead.
    fn render_outages(&self, out: &mut String) {
        let now = crate::clock::unix_seconds();
        let since = self.offline_since.load(Ordering::Relaxed);
        let current = if since == 0 { 0 } else { now.saturating_sub(since) };
        let offline = self.offline_seconds.load(Ordering::Relaxed) + current;
        let transitions = self.cloud_transitions.load(Ordering::Relaxed);
        out.push_str(&format!(
            "# TYPE lite_apiserver_cloud_transitions_total counter\n\
             lite_apiserver_cloud_transitions_total {transitions}\n\
             # TYPE lite_apiserver_offline_seconds_total counter\n\
             lite_apiserver_offline_seconds_total {offline}\n\
             # HELP lite_apiserver_stale_answers_total Reads answered from the cache in the cloud's stead, by reason.\n\
             # TYPE lite_apiserver_stale_answers_total counter\n"
        ));
        for reason in StaleReason::ALL {
            let count = self.stale_answers[reason as usize].load(Ordering::Relaxed);
            let label = reason.label();
            out.push_str(&format!(
                "lite_apiserver_stale_answers_total{{reason=\"{label}\"}} {count}\n"
            ));
        }
        let (age, served) = self.oldest_answer.lock().map(|o| *o).unwrap_or((0, 0));
        let recent = if now.saturating_sub(served) <= 60 { age } else { 0 };
        out.push_str(&format!(
            "# HELP lite_apiserver_oldest_answer_age_seconds Age of the oldest cache answer served in the last minute.\n\
             # TYPE lite_apiserver_oldest_answer_age_seconds gauge\n\
             lite_apiserver_oldest_answer_age_seconds {recent}\n"
        ));
    }
}

/// A link whose bytes are counted: to the cloud (the reactor's upstream connections, the
/// prober's and the key fetcher's), or to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Cloud,
    Client,
}

/// Connections to the cloud open on helper threads (`OpenHelperConnection`).
static HELPER_CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Counts one helper thread's connection to the cloud while it lives: the prober keeps
/// one open between probes, so descriptors are only accounted for with it.
pub struct OpenHelperConnection(());

impl OpenHelperConnection {
    pub fn new() -> OpenHelperConnection {
        HELPER_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        OpenHelperConnection(())
    }
}

impl Drop for OpenHelperConnection {
    fn drop(&mut self) {
        HELPER_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Bytes on the sockets, as TLS records (handshakes and alerts included), by link and
/// direction. Process-wide: every transport adds to it, blocking helpers too.
pub struct LinkBytes {
    /// [link][received, sent]
    bytes: [[AtomicU64; 2]; 2],
}

pub static LINK_BYTES: LinkBytes =
    LinkBytes { bytes: [const { [const { AtomicU64::new(0) }; 2] }; 2] };

impl LinkBytes {
    fn add(&self, link: Link, received: u64, sent: u64) {
        let counters = &self.bytes[link as usize];
        for (counter, bytes) in counters.iter().zip([received, sent]) {
            if bytes > 0 {
                counter.fetch_add(bytes, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, out: &mut String) {
        let links = [
            (
                Link::Cloud,
                "upstream",
                "on the link to the cloud apiserver (lite-apiserver's own probes and key fetches included)",
            ),
            (Link::Client, "client", "on client connections"),
        ];
        for (link, name, which) in links {
            out.push_str(&format!(
                "# HELP lite_apiserver_{name}_bytes_total Bytes {which}, counted as TLS records on the socket (TLS overhead and handshakes included).\n\
                 # TYPE lite_apiserver_{name}_bytes_total counter\n"
            ));
            for (direction, counter) in ["received", "sent"].iter().zip(&self.bytes[link as usize])
            {
                let value = counter.load(Ordering::Relaxed);
                out.push_str(&format!(
                    "lite_apiserver_{name}_bytes_total{{direction=\"{direction}\"}} {value}\n"
                ));
            }
        }
    }
}

/// Bytes one connection moved and has not yet added to [`LINK_BYTES`]: kept in plain
/// integers while one read or flush pulls or pushes several records, and added when it
/// returns (and when the connection goes), so the totals are never behind a connection
/// that stopped moving — a pooled connection may sit idle for 90 s after its last answer.
pub struct ByteCount {
    link: Link,
    received: u64,
    sent: u64,
}

impl ByteCount {
    pub fn new(link: Link) -> ByteCount {
        ByteCount { link, received: 0, sent: 0 }
    }

    pub fn received(&mut self, bytes: usize) {
        self.received += bytes as u64;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.sent += bytes as u64;
    }

    /// Adds what is pending to the totals.
    pub fn publish(&mut self) {
        if self.received > 0 || self.sent > 0 {
            LINK_BYTES.add(self.link, self.received, self.sent);
            self.received = 0;
            self.sent = 0;
        }
    }
}

impl Drop for ByteCount {
    fn drop(&mut self) {
        self.publish();
    }
}
