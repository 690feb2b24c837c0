//! The cloud apiserver as the reactor sees it: where it is, whether the prober last found
//! it reachable, and the short-lived suspicion a timed-out request raises. Only the
//! prober's reports flip it up or down: one slow connect among hundreds of watches must
//! not take every client offline.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::health::{HealthReport, Prober};
use crate::metrics::Metrics;
use crate::plan::CloudVerdict;
use crate::proxy::UpstreamFailure;

pub struct Cloud {
    up: bool,
    /// A fresh connection timed out: until the prober's next report (which a kick always
    /// brings), reads go to the cache instead of waiting `--timeout` each.
    suspect: bool,
    addr: Option<SocketAddr>,
    server_name: ServerName<'static>,
    host_header: String,
    prober: Prober,
}

/// A change the reactor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudChange {
    /// Reachable again: offline watches end so their clients re-list fresh data.
    CameBack,
    /// Lost: streams proxied to it may hang on a dead link and are ended.
    WentAway,
}

impl Cloud {
    /// Up when its address is known at start; the prober corrects that within a probe.
    pub fn new(
        addr: Option<SocketAddr>,
        server_name: ServerName<'static>,
        host_header: String,
        prober: Prober,
    ) -> Cloud {
        Cloud { up: addr.is_some(), suspect: false, addr, server_name, host_header, prober }
    }

    pub fn verdict(&self) -> CloudVerdict {
        match (self.up, self.suspect) {
            (false, _) => CloudVerdict::Down,
            (true, true) => CloudVerdict::Suspect,
            (true, false) => CloudVerdict::Up,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    pub fn host_header(&self) -> &str {
        &self.host_header
    }

    /// Takes in a prober report; returns the change it makes, if any.
    pub fn on_report(&mut self, report: HealthReport, metrics: &Metrics) -> Option<CloudChange> {
        self.suspect = false;
        let (up, reason) = match report {
            HealthReport::Up(addr) => {
                self.addr = Some(addr);
                if !self.up {
                    log::info!("cloud apiserver reachable again at {addr}: proxying");
                }
                (true, String::new())
            }
            HealthReport::Down(reason) => {
                if self.up {
                    log::warn!("cloud apiserver unreachable, serving from cache: {reason}");
                }
                (false, reason)
            }
        };
        if self.up == up {
            return None;
        }
        self.up = up;
        metrics.set_cloud(up, &reason);
        Some(if up { CloudChange::CameBack } else { CloudChange::WentAway })
    }

    /// A request could not reach the cloud. Whether the cloud as a whole is down is the
    /// prober's call, asked for at once; a fresh connection timing out makes reads use the
    /// cache meanwhile. A pooled connection dying says little about the cloud.
    pub fn request_failed(&mut self, failure: &UpstreamFailure, reused: bool, metrics: &Metrics) {
        if reused && !failure.is_timeout() {
            return;
        }
        self.suspect |= failure.is_timeout() && !reused;
        metrics.upstream_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        log::debug!("request to the cloud failed: {failure}; asking the prober");
        self.prober.kick();
    }

    /// No connection could even be started (no address yet, no socket).
    pub fn connect_failed(&mut self, metrics: &Metrics) {
        metrics.upstream_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.prober.kick();
    }

    /// Probes with this client configuration from now on.
    pub fn probe_with(&self, config: Arc<ClientConfig>) {
        self.prober.use_config(config);
    }
}
