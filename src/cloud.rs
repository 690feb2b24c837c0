//! The cloud apiserver as the reactor sees it: where it is, whether the prober last found
//! it reachable, and the short-lived suspicion a timed-out request raises. Only the
//! prober's reports flip it up or down: one slow connect among hundreds of watches must
//! not take every client offline.
//!
//! ```text
//! Unknown ──first probe──► Up ◄──M good probes── Down ◄── start, when the last run
//!    └─────first probe──────┴───N failed probes──►         ended with the cloud down
//! ```
//! A fresh process is `Unknown` until the prober's first answer. For its first second
//! requests wait for that answer (on a good link it comes in milliseconds); then reads go
//! to the cache first (a node rebooted on a cut link must not wait `--timeout` per read), and a miss
//! asks the cloud. The prober applies the hysteresis (`health.rs`); a request that fails
//! makes the cloud `suspect` (reads go to the cache) until the prober's next report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::health::{HealthReport, Prober};
use crate::metrics::Metrics;
use crate::plan::CloudVerdict;
use crate::proxy::UpstreamFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Up,
    Down,
}

/// How long a fresh process waits for the prober's first verdict before answering from
/// the cache: on a good link the first probe answers within milliseconds (and requests
/// then go to the cloud as usual); on a black-holed link it would take `--timeout`.
const FIRST_VERDICT_GRACE: Duration = Duration::from_secs(1);

pub struct Cloud {
    state: State,
    /// Until when requests wait for the first verdict (a fresh process, state unknown).
    first_verdict_due: Instant,
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
    /// Unknown until the prober's first report — or down, when the last run ended with
    /// the cloud down (`was_down`): a node rebooted on a cut link is offline at once.
    pub fn new(
        addr: Option<SocketAddr>,
        server_name: ServerName<'static>,
        host_header: String,
        prober: Prober,
        was_down: bool,
    ) -> Cloud {
        let state = if was_down { State::Down } else { State::Unknown };
        let first_verdict_due = Instant::now() + FIRST_VERDICT_GRACE;
        Cloud { state, first_verdict_due, suspect: false, addr, server_name, host_header, prober }
    }

    pub fn verdict(&self) -> CloudVerdict {
        match (self.state, self.suspect) {
            (State::Down, _) => CloudVerdict::Down,
            (State::Unknown, _) if Instant::now() < self.first_verdict_due => CloudVerdict::Pending,
            (State::Unknown, _) => CloudVerdict::Unknown,
            (State::Up, true) => CloudVerdict::Suspect,
            (State::Up, false) => CloudVerdict::Up,
        }
    }

    /// When requests waiting for the first verdict stop waiting.
    pub fn first_verdict_due(&self) -> Instant {
        self.first_verdict_due
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
        let (state, reason) = match report {
            HealthReport::Up(addr) => {
                self.addr = Some(addr);
                (State::Up, String::new())
            }
            HealthReport::Down(reason) => (State::Down, reason),
        };
        // The reason may change while down (e.g. refused connects, then a 500).
        metrics.set_cloud(state == State::Up, &reason);
        let before = std::mem::replace(&mut self.state, state);
        match (before, state) {
            (State::Unknown, State::Up) => {
                log::info!("cloud apiserver reachable: proxying");
                // Watches started before the first probe were held from the cache.
                return Some(CloudChange::CameBack);
            }
            (State::Unknown, State::Down) => {
                log::warn!("cloud apiserver unreachable at start, serving from cache: {reason}");
                return Some(CloudChange::WentAway);
            }
            (State::Down, State::Up) => {
                log::info!("cloud apiserver reachable again: proxying");
                metrics.count_cloud_transition(true);
                return Some(CloudChange::CameBack);
            }
            (State::Up, State::Down) => {
                log::warn!("cloud apiserver unreachable, serving from cache: {reason}");
                metrics.count_cloud_transition(false);
                return Some(CloudChange::WentAway);
            }
            _ => {}
        }
        None
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

    /// The cloud answered a read with `502`/`503`/`504`: its load balancer may be in front
    /// of a dead apiserver. The prober finds out; the read is answered from the cache.
    pub fn answered_error(&mut self, metrics: &Metrics) {
        metrics.upstream_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
