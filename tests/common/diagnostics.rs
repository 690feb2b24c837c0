//! The proxy's plain-HTTP diagnostics listener as the tests read it: a GET's status and
//! body, and one Prometheus series of `/metrics`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use super::{Lite, TestEnv, free_port, wait_for};

/// How long the listener gets to answer once the proxy is up, and one GET to complete.
const DEADLINE: Duration = Duration::from_secs(15);

/// A diagnostics listener on `127.0.0.1:<port>`.
#[derive(Clone, Copy, Debug)]
pub struct Diagnostics {
    pub port: u16,
}

impl Diagnostics {
    /// A free port for `--diagnostics-port`.
    pub fn on_free_port() -> Diagnostics {
        Diagnostics { port: free_port() }
    }

    pub fn flag(&self) -> String {
        format!("--diagnostics-port={}", self.port)
    }

    /// lite-apiserver in front of `upstream_port` with `extra_args` and its diagnostics on a
    /// free port; returns once that port answers.
    pub fn lite(env: &TestEnv, upstream_port: u16, extra_args: &[&str]) -> (Lite, Diagnostics) {
        let diagnostics = Diagnostics::on_free_port();
        let flag = diagnostics.flag();
        let mut args = vec![flag.as_str()];
        args.extend_from_slice(extra_args);
        let lite = env.lite(upstream_port, &args);
        diagnostics.wait_up(&lite);
        (lite, diagnostics)
    }

    /// Waits until `/healthz` answers (the listener starts just after the proxy port).
    pub fn wait_up(&self, lite: &Lite) {
        let up = wait_for(DEADLINE, || self.try_get("/healthz").ok());
        assert!(up.is_some(), "diagnostics port {} never answered:\n{}", self.port, lite.stderr());
    }

    /// `GET path`: (status, body).
    pub fn try_get(&self, path: &str) -> io::Result<(u16, String)> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(DEADLINE))?;
        stream.set_write_timeout(Some(DEADLINE))?;
        stream.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:?}")))?;
        Ok((status, body.to_string()))
    }

    /// `GET path`: (status, body); panics when the listener does not answer.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("diagnostics GET {path} on {} failed: {e}", self.port))
    }

    /// The body of `/metrics`.
    pub fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "/metrics: {text}");
        text
    }

    /// The value of one series, e.g. `lite_apiserver_cache_hits_total` or
    /// `lite_apiserver_responses_total{source="cache",code="2xx"}`.
    pub fn metric(&self, series: &str) -> u64 {
        let text = self.metrics();
        metric_value(&text, series)
            .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
    }
}

/// The value of `series` in Prometheus text.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.rsplit_once(' ').filter(|(name, _)| *name == series)?.1.parse().ok())
}
