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

#[derive(Default)]
pub struct Metrics {
    /// [source][code class 1xx..5xx]
    responses: [[AtomicU64; CODE_CLASSES]; 3],
    pub open_clients: AtomicU64,
    pub open_upstreams: AtomicU64,
    pub open_watches: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub cloud_down: AtomicBool,
    /// Why the cloud is considered down (for /readyz).
    cloud_reason: Mutex<String>,
    pub cert_reload_failures: AtomicU64,
}

impl Metrics {
    pub fn count_response(&self, source: Source, status: u16) {
        let class = usize::from(status / 100).clamp(1, CODE_CLASSES) - 1;
        self.responses[source as usize][class].fetch_add(1, Ordering::Relaxed);
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
        out
    }
}
