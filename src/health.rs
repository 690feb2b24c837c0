//! Cloud health: a prober thread that asks the cloud apiserver `GET /readyz` and tells the
//! reactor when the cloud comes and goes.
//!
//! - Only `200` is ready; any other answer, or none, is a failed probe whose reason names
//!   the code (and the failing checks kube-apiserver lists). `401`/`403` mean the apiserver
//!   itself answered: up, with a warning (once) that the probe's credentials are refused.
//! - The probe runs with a client identity ([`probe_config`]: kubelet's when configured),
//!   because clusters with anonymous auth off answer `401` to a probe without one.
//! - Hysteresis ([`Verdicts`]): down after `--cloud-down-after` failed probes in a row, up
//!   after `--cloud-up-after` good ones; but the first verdict of a fresh process is
//!   reported at once, whichever it is.
//! - A local fault (no file descriptors, no memory) is not a cloud outage: it is logged,
//!   named in the reason while down, and counts neither way.
//! - Interval: 5 s while up, 1 s while counting failures, and a backoff from 1 s to 4 s
//!   while down, all ±20% jitter. A kick from the reactor (a request could not reach the
//!   cloud) probes at once, but kicked probes are at least 1 s apart.
//!
//! Name resolution happens here too, off the reactor thread: an `Up` report carries the
//! address to connect to.
//!
//! Probes go over one connection kept open between them ([`KeptConnection`]): a steady
//! probe is one small request and answer, not a TCP and TLS handshake. A probe that meets
//! that connection closed by the cloud while idle is retried at once on a new one, so a
//! stale connection is no failed probe. Any failed probe (no answer, or not ready) closes
//! it, so the next one connects afresh: a black-holed link costs one timeout a probe, as
//! on a new connection, and behind a load balancer the next probe may reach another
//! apiserver than the one that is not ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::ClientConfig;

pub use crate::cloud_client::host_header;
use crate::cloud_client::{CloudEndpoint, CloudGetError, CloudResponse, KeptConnection};
use crate::tls::{Identity, IdentitySet};

const INTERVAL_UP: Duration = Duration::from_secs(5);
/// After a failure while up, and while confirming a return.
const INTERVAL_RECHECK: Duration = Duration::from_secs(1);
const INTERVAL_DOWN_FIRST: Duration = Duration::from_secs(1);
const INTERVAL_DOWN_MAX: Duration = Duration::from_secs(4);
/// Every interval is scaled by a factor in `[1 - JITTER, 1 + JITTER)`.
const JITTER: f64 = 0.2;
/// Kicked probes are at least this far apart.
const KICK_SPACING: Duration = Duration::from_secs(1);
/// `/readyz` bodies are a few hundred bytes; anything past this is not read.
const MAX_READYZ_BODY: usize = 64 * 1024;
/// How much of the failing checks a reason quotes.
const MAX_QUOTED_CHECKS: usize = 200;
const PROBE_PATH: &str = "/readyz";
/// The CN prefix of a kubelet's client certificate.
const NODE_CN_PREFIX: &str = "system:node:";

/// What the reactor hears.
#[derive(Debug, Clone)]
pub enum HealthReport {
    Up(SocketAddr),
    Down(String),
}

/// What the prober probes, and its hysteresis.
pub struct ProbeTarget {
    pub endpoint: CloudEndpoint,
    pub hysteresis: Hysteresis,
    /// Where the last verdict is kept for the next start (`last_verdict`).
    pub verdict_file: Option<PathBuf>,
}

/// The verdict a previous run left in `path`: `Some(false)` when it ended with the cloud
/// down. A node rebooted on a cut link then starts offline at once, instead of waiting
/// `--timeout` for a first probe that a black-holed link never answers.
pub fn last_verdict(path: &Path) -> Option<bool> {
    match std::fs::read_to_string(path).ok()?.trim() {
        "up" => Some(true),
        "down" => Some(false),
        _ => None,
    }
}

/// Keeps the verdict for the next start; a failure only costs that start's head start.
fn keep_verdict(path: &Path, up: bool) {
    let temporary = path.with_extension("tmp");
    let written = std::fs::write(&temporary, if up { "up\n" } else { "down\n" })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(e) = written {
        log::debug!("cannot keep the cloud's state in {}: {e}", path.display());
    }
}

/// `--cloud-down-after` / `--cloud-up-after`: consecutive probes needed to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    pub down_after: usize,
    pub up_after: usize,
}

/// The identity the prober presents: kubelet's (CN `system:node:…`) when configured, else
/// the first configured one (by CN), else the default (no client certificate).
pub fn probe_identity(identities: &IdentitySet) -> &Arc<Identity> {
    let mut named: Vec<&Arc<Identity>> = identities.by_name.values().collect();
    named.sort_by(|a, b| a.name.cmp(&b.name));
    let node = named.iter().find(|identity| identity.name.starts_with(NODE_CN_PREFIX));
    node.or(named.first()).copied().unwrap_or(&identities.default)
}

/// The client config of [`probe_identity`].
pub fn probe_config(identities: &IdentitySet) -> Arc<ClientConfig> {
    probe_identity(identities).config.clone()
}

/// One probe, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The apiserver answered; `refused` holds `401`/`403` when it did not accept the probe's
    /// credentials (it is up all the same).
    Good {
        addr: SocketAddr,
        refused: Option<u16>,
    },
    Failed(String),
    /// This process could not run the probe.
    Local(String),
}

/// Turns the result of `GET /readyz` into an outcome.
pub fn classify(result: Result<CloudResponse, CloudGetError>) -> Outcome {
    match result {
        Ok(response) => match response.status {
            200 => Outcome::Good { addr: response.addr, refused: None },
            code @ (401 | 403) => Outcome::Good { addr: response.addr, refused: Some(code) },
            code => Outcome::Failed(not_ready_reason(&response, code)),
        },
        Err(error) if error.is_local() => Outcome::Local(error.to_string()),
        Err(error) => Outcome::Failed(format!("{PROBE_PATH} probe failed: {error}")),
    }
}

/// `/readyz of <addr> answered 500 ([-]etcd failed: reason withheld)`: the code, and the
/// checks kube-apiserver marks failed, so `/readyz` of lite-apiserver says what is wrong.
fn not_ready_reason(response: &CloudResponse, code: u16) -> String {
    let text = String::from_utf8_lossy(&response.body);
    let failed: Vec<&str> =
        text.lines().map(str::trim).filter(|line| line.starts_with("[-]")).collect();
    let mut reason = format!("{PROBE_PATH} of {} answered {code}", response.addr);
    if !failed.is_empty() {
        let checks: String = failed.join("; ").chars().take(MAX_QUOTED_CHECKS).collect();
        reason.push_str(&format!(" ({checks})"));
    }
    reason
}

/// What the prober believes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudState {
    /// No probe has answered yet.
    Unknown,
    Up,
    Down,
}

/// The decision logic, without sockets or clocks: consecutive outcomes in, reports out.
#[derive(Debug, Clone)]
pub struct Verdicts {
    hysteresis: Hysteresis,
    state: CloudState,
    consecutive_failures: usize,
    consecutive_successes: usize,
    /// Failed probes since the state became `Down` (drives the backoff).
    failures_while_down: usize,
    /// A kick asked for the next conclusive probe to be reported even if nothing changed
    /// (the reactor may have suspected the cloud meanwhile).
    report_owed: bool,
}

impl Verdicts {
    pub fn new(hysteresis: Hysteresis) -> Verdicts {
        Verdicts {
            hysteresis,
            state: CloudState::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
            failures_while_down: 0,
            report_owed: false,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> CloudState {
        self.state
    }

    /// The reactor saw a request fail.
    pub fn kicked(&mut self) {
        self.report_owed = true;
    }

    /// Takes one probe's outcome; returns what the reactor must hear, if anything.
    pub fn observe(&mut self, outcome: &Outcome) -> Option<HealthReport> {
        let report = match outcome {
            Outcome::Good { addr, .. } => self.good(*addr),
            Outcome::Failed(reason) => self.failed(reason),
            Outcome::Local(reason) => {
                let reason = format!("probe not run (a local fault, not counted): {reason}");
                (self.state == CloudState::Down).then_some(HealthReport::Down(reason))
            }
        };
        if report.is_some() {
            self.report_owed = false;
        }
        report
    }

    fn good(&mut self, addr: SocketAddr) -> Option<HealthReport> {
        self.consecutive_failures = 0;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        let enough = self.consecutive_successes >= self.hysteresis.up_after;
        match self.state {
            CloudState::Up if !self.report_owed => None,
            CloudState::Down if !enough => None,
            _ => {
                self.state = CloudState::Up;
                self.failures_while_down = 0;
                Some(HealthReport::Up(addr))
            }
        }
    }

    fn failed(&mut self, reason: &str) -> Option<HealthReport> {
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let enough = self.consecutive_failures >= self.hysteresis.down_after;
        let report = Some(HealthReport::Down(reason.to_string()));
        match self.state {
            CloudState::Down => {
                self.failures_while_down = self.failures_while_down.saturating_add(1);
                if self.report_owed { report } else { None }
            }
            CloudState::Up if !enough => None,
            _ => {
                self.state = CloudState::Down;
                self.failures_while_down = 0;
                report
            }
        }
    }

    /// How long until the next probe, before jitter.
    pub fn base_interval(&self) -> Duration {
        match self.state {
            CloudState::Up if self.consecutive_failures == 0 => INTERVAL_UP,
            CloudState::Down if self.consecutive_successes == 0 => {
                let doublings = self.failures_while_down.min(8) as u32;
                (INTERVAL_DOWN_FIRST * 2u32.pow(doublings)).min(INTERVAL_DOWN_MAX)
            }
            _ => INTERVAL_RECHECK,
        }
    }

    /// How long until the next probe.
    pub fn next_interval(&self, rng: &mut XorShift) -> Duration {
        let factor = 1.0 - JITTER + 2.0 * JITTER * rng.next_unit();
        self.base_interval().mul_f64(factor)
    }
}

/// A tiny xorshift64 generator for jitter (no dependency for a few random numbers).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's one fixed point.
        XorShift(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// Seeded from the clock and the pid, so the nodes of a site do not probe in step.
    pub fn from_entropy() -> XorShift {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        XorShift::new((nanos as u64) ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// When a kicked probe runs: at once, but not within [`KICK_SPACING`] of the last probe,
/// and never later than the one already scheduled.
pub fn kicked_probe_at(last_probe: Option<Instant>, now: Instant, scheduled: Instant) -> Instant {
    let earliest = last_probe.map_or(now, |last| (last + KICK_SPACING).max(now));
    earliest.min(scheduled)
}

/// What the reactor tells the prober.
enum ProberMessage {
    /// A request failed: probe now.
    Kick,
    /// The identities were rebuilt (e.g. for a new cloud CA): probe with this from now on.
    Config(Arc<ClientConfig>),
}

/// Handle to the prober thread: `kick` asks for a probe now.
pub struct Prober {
    kicks: Sender<ProberMessage>,
}

impl Prober {
    pub fn kick(&self) {
        let _ = self.kicks.send(ProberMessage::Kick);
    }

    /// Probes with `config` from now on (and at once).
    pub fn use_config(&self, config: Arc<ClientConfig>) {
        let _ = self.kicks.send(ProberMessage::Config(config));
    }
}

/// Starts the prober; reports go to `reports`, and `wake` is called after each one.
pub fn spawn(
    target: ProbeTarget,
    reports: Sender<HealthReport>,
    wake: impl Fn() + Send + 'static,
) -> std::io::Result<Prober> {
    let (kicks, kicked) = mpsc::channel();
    thread::Builder::new()
        .name("cloud-prober".into())
        .spawn(move || ProberLoop::new(target).run(kicked, reports, wake))?;
    Ok(Prober { kicks })
}

/// The prober thread's state.
struct ProberLoop {
    cloud: KeptConnection,
    verdicts: Verdicts,
    rng: XorShift,
    last_probe: Option<Instant>,
    next_probe: Instant,
    /// The credentials-refused warning was logged for the current identity.
    warned_refused: bool,
    verdict_file: Option<PathBuf>,
    /// The verdict last written to `verdict_file`.
    kept: Option<bool>,
}

impl ProberLoop {
    fn new(target: ProbeTarget) -> ProberLoop {
        ProberLoop {
            cloud: KeptConnection::new(target.endpoint),
            verdicts: Verdicts::new(target.hysteresis),
            rng: XorShift::from_entropy(),
            last_probe: None,
            next_probe: Instant::now(),
            warned_refused: false,
            verdict_file: target.verdict_file,
            kept: None,
        }
    }

    fn run(
        mut self,
        kicked: Receiver<ProberMessage>,
        reports: Sender<HealthReport>,
        wake: impl Fn(),
    ) {
        loop {
            if !self.wait(&kicked) {
                return; // the reactor is gone
            }
            let outcome = self.probe();
            if let Some(report) = self.verdicts.observe(&outcome) {
                let up = matches!(report, HealthReport::Up(_));
                if let Some(path) = self.verdict_file.as_deref()
                    && self.kept != Some(up)
                {
                    keep_verdict(path, up);
                    self.kept = Some(up);
                }
                if reports.send(report).is_err() {
                    return;
                }
                wake();
            }
            self.next_probe = Instant::now() + self.verdicts.next_interval(&mut self.rng);
        }
    }

    /// Waits until the next probe is due, taking messages meanwhile; `false` once the
    /// reactor has dropped its handle.
    fn wait(&mut self, kicked: &Receiver<ProberMessage>) -> bool {
        loop {
            let now = Instant::now();
            if now >= self.next_probe {
                return true;
            }
            match kicked.recv_timeout(self.next_probe - now) {
                Ok(message) => self.take(message, now),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    fn take(&mut self, message: ProberMessage, now: Instant) {
        if let ProberMessage::Config(config) = message {
            self.cloud.use_config(config);
            self.warned_refused = false;
        }
        self.verdicts.kicked();
        self.next_probe = kicked_probe_at(self.last_probe, now, self.next_probe);
    }

    fn probe(&mut self) -> Outcome {
        self.last_probe = Some(Instant::now());
        let outcome = classify(self.cloud.get(PROBE_PATH, &[], MAX_READYZ_BODY));
        match &outcome {
            Outcome::Good { refused: Some(code), .. } if !self.warned_refused => {
                self.warned_refused = true;
                log::warn!(
                    "the cloud apiserver answered {code} to the {PROBE_PATH} probe: it refuses \
                     the probe's credentials (counted as up; check --tls-config-file)"
                );
            }
            Outcome::Failed(reason) => {
                log::debug!("{reason}");
                self.cloud.close();
            }
            Outcome::Local(reason) => log::warn!("cloud probe not run: {reason}"),
            Outcome::Good { .. } => {}
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addr() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 6443))
    }

    fn good() -> Outcome {
        Outcome::Good { addr: addr(), refused: None }
    }

    fn failed() -> Outcome {
        Outcome::Failed("/readyz answered 500".into())
    }

    fn local() -> Outcome {
        Outcome::Local("Too many open files".into())
    }

    fn verdicts(down_after: usize, up_after: usize) -> Verdicts {
        Verdicts::new(Hysteresis { down_after, up_after })
    }

    /// Observes `outcomes` in order; what each one reported, as `U`, `D` or `.`.
    fn run(v: &mut Verdicts, outcomes: &[Outcome]) -> String {
        outcomes
            .iter()
            .map(|o| match v.observe(o) {
                Some(HealthReport::Up(_)) => 'U',
                Some(HealthReport::Down(_)) => 'D',
                None => '.',
            })
            .collect()
    }

    #[test]
    fn first_verdict_is_reported_at_once_either_way() {
        let mut v = verdicts(3, 2);
        assert_eq!(v.state(), CloudState::Unknown);
        assert_eq!(run(&mut v, &[failed()]), "D");
        assert_eq!(v.state(), CloudState::Down);
        let mut v = verdicts(3, 2);
        assert_eq!(run(&mut v, &[good()]), "U");
        assert_eq!(v.state(), CloudState::Up);
    }

    #[test]
    fn down_after_n_consecutive_failures_only() {
        let mut v = verdicts(3, 2);
        let outcomes = [good(), failed(), failed(), good(), failed(), failed(), failed(), failed()];
        assert_eq!(run(&mut v, &outcomes), "U.....D.");
        assert_eq!(v.state(), CloudState::Down);
    }

    #[test]
    fn up_after_m_consecutive_successes_only() {
        let mut v = verdicts(3, 2);
        let outcomes = [failed(), good(), failed(), good(), good(), good()];
        assert_eq!(run(&mut v, &outcomes), "D...U.");
        assert_eq!(v.state(), CloudState::Up);
    }

    #[test]
    fn one_probe_each_way_without_hysteresis() {
        let mut v = verdicts(1, 1);
        assert_eq!(run(&mut v, &[good(), failed(), good(), good(), failed()]), "UDU.D");
    }

    #[test]
    fn local_faults_count_neither_way() {
        let mut v = verdicts(3, 2);
        // Unknown stays unknown: a local fault says nothing about the cloud.
        assert_eq!(run(&mut v, &[local()]), ".");
        assert_eq!(v.state(), CloudState::Unknown);
        let outcomes = [good(), failed(), failed(), local(), local(), local(), local()];
        assert_eq!(run(&mut v, &outcomes), "U......");
        assert_eq!(v.state(), CloudState::Up);
        // Nor do they break a streak: the third real failure takes it down.
        assert_eq!(run(&mut v, &[failed()]), "D");
        // While down, a local fault is named in the reason but changes nothing.
        let report = v.observe(&local());
        let Some(HealthReport::Down(reason)) = report else { panic!("{report:?}") };
        assert!(reason.contains("local fault") && reason.contains("Too many open files"));
        assert_eq!(run(&mut v, &[good(), local(), good()]), ".DU");
    }

    #[test]
    fn kick_makes_the_next_conclusive_probe_reported() {
        let mut v = verdicts(3, 2);
        assert_eq!(run(&mut v, &[good(), good()]), "U.");
        v.kicked();
        // A failure is not conclusive while up: the report waits for a good probe.
        assert_eq!(run(&mut v, &[failed(), good(), good()]), ".U.");
        assert_eq!(run(&mut v, &[failed(), failed(), failed(), failed()]), "..D.");
        v.kicked();
        assert_eq!(run(&mut v, &[local(), failed(), failed()]), "D..");
    }

    #[test]
    fn kick_while_down_does_not_skip_the_up_hysteresis() {
        let mut v = verdicts(3, 2);
        assert_eq!(run(&mut v, &[failed()]), "D");
        v.kicked();
        assert_eq!(run(&mut v, &[good(), good()]), ".U");
    }

    #[test]
    fn intervals_follow_the_state() {
        let secs = Duration::from_secs;
        let mut v = verdicts(3, 2);
        assert_eq!(v.base_interval(), secs(1), "unknown: retry soon");
        v.observe(&good());
        assert_eq!(v.base_interval(), secs(5));
        v.observe(&failed());
        assert_eq!(v.base_interval(), secs(1), "counting failures");
        v.observe(&failed());
        v.observe(&failed());
        assert_eq!(v.state(), CloudState::Down);
        let mut backoff = vec![v.base_interval()];
        for _ in 0..4 {
            v.observe(&failed());
            backoff.push(v.base_interval());
        }
        assert_eq!(backoff, [secs(1), secs(2), secs(4), secs(4), secs(4)]);
        v.observe(&good());
        assert_eq!(v.base_interval(), secs(1), "confirming a return");
        v.observe(&failed());
        assert_eq!(v.base_interval(), secs(4), "back to the backoff");
        v.observe(&good());
        v.observe(&good());
        assert_eq!(v.state(), CloudState::Up);
        assert_eq!(v.base_interval(), secs(5));
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_varies() {
        let v = verdicts(3, 2);
        let mut rng = XorShift::new(42);
        let intervals: Vec<Duration> = (0..1000).map(|_| v.next_interval(&mut rng)).collect();
        let (low, high) = (Duration::from_millis(800), Duration::from_millis(1200));
        assert!(intervals.iter().all(|i| (low..high).contains(i)), "{intervals:?}");
        let below = intervals.iter().filter(|i| **i < Duration::from_secs(1)).count();
        assert!((300..700).contains(&below), "{below} of 1000 below the base");
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }

    #[test]
    fn kicked_probes_are_spaced() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert_eq!(kicked_probe_at(None, now, later), now, "first probe: at once");
        let last = now - Duration::from_millis(300);
        assert_eq!(kicked_probe_at(Some(last), now, later), last + KICK_SPACING);
        let long_ago = now - Duration::from_secs(3);
        assert_eq!(kicked_probe_at(Some(long_ago), now, later), now);
        let soon = now + Duration::from_millis(100);
        assert_eq!(kicked_probe_at(Some(last), now, soon), soon, "never later than planned");
    }

    fn identity_set(names: &[&str]) -> IdentitySet {
        let trust = crate::tls::UpstreamTrust::Insecure;
        let named = |name: &str| {
            let identity = Identity::default_identity(&trust).unwrap();
            Arc::new(Identity { name: name.to_string(), ..identity })
        };
        IdentitySet {
            by_name: names.iter().map(|name| (name.to_string(), named(name))).collect(),
            default: named(""),
        }
    }

    #[test]
    fn probe_identity_prefers_kubelet_then_the_first_then_the_default() {
        let pick = |names: &[&str]| probe_identity(&identity_set(names)).name.clone();
        assert_eq!(
            pick(&["admin", "system:node:edge-1", "system:kube-proxy"]),
            "system:node:edge-1"
        );
        assert_eq!(pick(&["system:kube-proxy", "admin"]), "admin");
        assert_eq!(pick(&[]), "");
        let set = identity_set(&["admin"]);
        assert!(Arc::ptr_eq(&probe_config(&set), &set.by_name["admin"].config));
    }

    fn response(status: u16, body: &str) -> Result<CloudResponse, CloudGetError> {
        Ok(CloudResponse { addr: addr(), status, body: body.into() })
    }

    #[test]
    fn only_200_is_ready_and_401_403_are_up() {
        assert_eq!(classify(response(200, "ok")), good());
        for code in [401, 403] {
            assert_eq!(
                classify(response(code, "")),
                Outcome::Good { addr: addr(), refused: Some(code) }
            );
        }
        let body = "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n";
        let Outcome::Failed(reason) = classify(response(500, body)) else { panic!() };
        assert!(reason.contains("answered 500"), "{reason}");
        assert!(reason.contains("[-]etcd failed: reason withheld"), "{reason}");
        assert!(!reason.contains("[+]ping"), "{reason}");
        let Outcome::Failed(reason) = classify(response(503, "no healthy upstream")) else {
            panic!()
        };
        assert!(reason.ends_with("answered 503"), "{reason}");
    }

    #[test]
    fn errors_classify_as_failed_or_local() {
        let refused = CloudGetError::Connect {
            addr: addr(),
            kind: std::io::ErrorKind::ConnectionRefused,
            detail: "connection refused".into(),
        };
        let Outcome::Failed(reason) = classify(Err(refused)) else { panic!() };
        assert!(reason.contains("connection refused"), "{reason}");
        let local = CloudGetError::LocalResource {
            stage: crate::cloud_client::Stage::Connect,
            errno: libc::EMFILE,
            detail: "Too many open files".into(),
        };
        assert!(matches!(classify(Err(local)), Outcome::Local(_)));
    }
}
