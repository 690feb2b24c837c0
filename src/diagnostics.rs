//! The diagnostics listener: plain HTTP on 127.0.0.1 only (`--diagnostics-port`),
//! for operators with `curl` and for Prometheus. Served by its own small thread,
//! one short request at a time, so the proxy's loop never waits on it.
//!
//! `/healthz` (the proxy itself), `/readyz` (is the cloud reachable, and why not),
//! `/metrics` (Prometheus text), `/debug/cache` (entry counts, never bodies or
//! tokens), `/debug/certs` (identities: CN, serial, expiry; never keys).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::certs::CertsSnapshot;
use crate::metrics::Metrics;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// What the cache can tell about itself, from any thread.
pub trait CacheReport: Send + Sync {
    /// Prometheus lines for the cache counters.
    fn metrics(&self) -> String;
    /// JSON: entry counts per identity and resource.
    fn summary(&self) -> String;
}

pub struct Sources {
    pub metrics: Arc<Metrics>,
    pub certs: CertsSnapshot,
    pub cache: Option<Box<dyn CacheReport>>,
}

/// Binds 127.0.0.1:`port` and serves on a background thread.
pub fn spawn(port: u16, sources: Sources) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    let addr = listener.local_addr()?;
    thread::Builder::new().name("diagnostics".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = serve(stream, &sources) {
                log::debug!("diagnostics request failed: {e}");
            }
        }
    })?;
    Ok(addr)
}

fn serve(mut stream: TcpStream, sources: &Sources) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(path) = read_request_path(&mut stream)? else {
        return respond(&mut stream, 400, "text/plain", "bad request\n");
    };
    let (status, content_type, body) = route(&path, sources);
    respond(&mut stream, status, content_type, &body)
}

/// Reads a request head and returns its path (None if it is not HTTP).
fn read_request_path(stream: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let path = request.path.unwrap_or("/");
                return Ok(Some(path.split('?').next().unwrap_or("/").to_string()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_BYTES => {}
            _ => return Ok(None),
        }
    }
}

fn route(path: &str, sources: &Sources) -> (u16, &'static str, String) {
    match path {
        "/healthz" | "/livez" => (200, "text/plain", "ok\n".into()),
        "/readyz" => readyz(&sources.metrics),
        "/metrics" => {
            let mut text = sources.metrics.render();
            if let Some(cache) = &sources.cache {
                text.push_str(&cache.metrics());
            }
            (200, "text/plain; version=0.0.4", text)
        }
        "/debug/cache" => match &sources.cache {
            Some(cache) => (200, "application/json", cache.summary()),
            None => (404, "text/plain", "no cache\n".into()),
        },
        "/debug/certs" => {
            let snapshot =
                sources.certs.lock().map(|s| s.to_string()).unwrap_or_else(|_| "{}".into());
            (200, "application/json", snapshot)
        }
        _ => (
            404,
            "text/plain",
            "not found: try /healthz /readyz /metrics /debug/cache /debug/certs\n".into(),
        ),
    }
}

fn readyz(metrics: &Metrics) -> (u16, &'static str, String) {
    if metrics.cloud_down.load(Ordering::Relaxed) {
        let reason = metrics.cloud_reason();
        (
            503,
            "text/plain",
            format!("cloud apiserver unreachable: {reason}\nserving reads from the cache\n"),
        )
    } else {
        (200, "text/plain", "ok: cloud apiserver reachable\n".into())
    }
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) -> io::Result<()> {
    let reason = crate::status::reason_phrase(status);
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

impl CacheReport for crate::cache::CacheReporter {
    fn metrics(&self) -> String {
        let stats = self.stats();
        let rows = [
            ("cache_hits_total", "counter", stats.hits),
            ("cache_misses_total", "counter", stats.misses),
            ("cache_stored_total", "counter", stats.stored),
            ("cache_dropped_writes_total", "counter", stats.dropped_writes),
            ("cache_write_errors_total", "counter", stats.write_errors),
            ("cache_entries", "gauge", stats.entries),
            ("cache_bytes", "gauge", stats.bytes),
        ];
        rows.iter()
            .map(|(name, kind, value)| {
                format!("# TYPE lite_apiserver_{name} {kind}\nlite_apiserver_{name} {value}\n")
            })
            .collect()
    }

    fn summary(&self) -> String {
        self.debug_summary()
    }
}
