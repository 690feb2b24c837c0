//! Certificate reloading, on a helper thread: every `--sync-duration` (at once on
//! SIGHUP, every second while something fails to load) it re-reads the serving
//! cert/key, the CAs, `--tls-config-file` and every identity file it names. Changes
//! are detected by content, not mtime. Material that does not load (missing,
//! half-written, expired, key not matching) is not applied: the old one stays in
//! use, a warning is logged once per distinct failure, and a metric counts it.
//!
//! Applied changes go to the reactor as `CertUpdate`s through the waker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rustls::ServerConfig;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::tls::{self, Identity, IdentityFiles, IdentitySet, KeyPair, TlsError, UpstreamTrust};
use crate::x509;

const RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub enum CertUpdate {
    Identities(IdentitySet),
    ServerConfig(Arc<ServerConfig>),
}

/// A summary of the identities in use, for `/debug/certs` (no key material).
pub type CertsSnapshot = Arc<Mutex<serde_json::Value>>;

/// Everything loaded at start; `main` fails with a one-line error if any of it is bad.
pub struct Loaded {
    pub server_config: Arc<ServerConfig>,
    pub trust: UpstreamTrust,
    pub identities: IdentitySet,
    state: State,
}

/// What was applied last: file contents, to compare against.
#[derive(Default)]
struct State {
    serving: Vec<u8>,
    trust: Vec<u8>,
    identity_list: Vec<u8>,
    /// CN → (cert+key bytes) of each applied identity, by its files.
    identity_files: HashMap<IdentityFiles, Vec<u8>>,
    /// The last failure logged per subject, so each is logged once.
    failures: HashMap<String, String>,
}

pub fn load(config: &Config) -> Result<Loaded, TlsError> {
    let (server_config, _) = serving_config(config)?;
    let trust = upstream_trust(config)?;
    let mut state = State {
        serving: serving_bytes(config),
        trust: trust_bytes(config),
        identity_list: read_or_empty(config.tls_config_file.as_deref()),
        ..State::default()
    };
    let mut by_name = HashMap::new();
    for files in identity_list(config)? {
        let identity = Identity::load(&files.cert, &files.key, &trust)?;
        state.identity_files.insert(files.clone(), pair_bytes(&files));
        by_name.insert(identity.name.clone(), Arc::new(identity));
    }
    let identities =
        IdentitySet { by_name, default: Arc::new(Identity::default_identity(&trust)?) };
    Ok(Loaded { server_config, trust, identities, state })
}

fn serving_config(config: &Config) -> Result<(Arc<ServerConfig>, x509::CertSummary), TlsError> {
    let pair = KeyPair::load(&config.tls_cert_file, &config.tls_private_key_file)?;
    let summary = pair.summary.clone();
    Ok((tls::server_config(pair, tls::load_roots(&config.ca_file)?)?, summary))
}

fn upstream_trust(config: &Config) -> Result<UpstreamTrust, TlsError> {
    if config.insecure {
        return Ok(UpstreamTrust::Insecure);
    }
    let ca = config.apiserver_ca_file.as_deref().unwrap_or(&config.ca_file);
    Ok(UpstreamTrust::Roots(Arc::new(tls::load_roots(ca)?)))
}

fn identity_list(config: &Config) -> Result<Vec<IdentityFiles>, TlsError> {
    match &config.tls_config_file {
        Some(path) => tls::read_identity_list(path),
        None => Ok(Vec::new()),
    }
}

fn read_or_empty(path: Option<&Path>) -> Vec<u8> {
    path.and_then(|p| std::fs::read(p).ok()).unwrap_or_default()
}

fn concat(paths: &[&Path]) -> Vec<u8> {
    paths.iter().flat_map(|p| read_or_empty(Some(p))).collect()
}

fn serving_bytes(config: &Config) -> Vec<u8> {
    concat(&[&config.tls_cert_file, &config.tls_private_key_file, &config.ca_file])
}

fn trust_bytes(config: &Config) -> Vec<u8> {
    concat(&[config.apiserver_ca_file.as_deref().unwrap_or(&config.ca_file)])
}

fn pair_bytes(files: &IdentityFiles) -> Vec<u8> {
    concat(&[&files.cert, &files.key])
}

/// Handle to the reload thread: `reload_now` is SIGHUP.
pub struct Reloader {
    kicks: Sender<()>,
}

impl Reloader {
    pub fn reload_now(&self) {
        let _ = self.kicks.send(());
    }
}

pub struct ReloadContext {
    pub config: Arc<Config>,
    pub updates: Sender<CertUpdate>,
    pub metrics: Arc<Metrics>,
    pub snapshot: CertsSnapshot,
    pub wake: Box<dyn Fn() + Send>,
}

/// Starts the reload thread with what `load` returned.
pub fn spawn(loaded: &mut Loaded, context: ReloadContext) -> std::io::Result<Reloader> {
    let (kicks, kicked) = mpsc::channel();
    let mut reloader = ReloaderThread {
        state: std::mem::take(&mut loaded.state),
        trust: loaded.trust.clone(),
        identities: loaded.identities.clone(),
        context,
    };
    reloader.publish_snapshot();
    thread::Builder::new().name("cert-reloader".into()).spawn(move || reloader.run(kicked))?;
    Ok(Reloader { kicks })
}

struct ReloaderThread {
    state: State,
    trust: UpstreamTrust,
    identities: IdentitySet,
    context: ReloadContext,
}

impl ReloaderThread {
    fn run(&mut self, kicked: Receiver<()>) {
        let mut failing = false;
        loop {
            let wait = if failing { RETRY_INTERVAL } else { self.context.config.sync_duration };
            match kicked.recv_timeout(wait) {
                Ok(()) => log::info!("SIGHUP: reloading certificates"),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            failing = !self.tick();
        }
    }

    /// One pass over every file; returns false if anything failed to load.
    fn tick(&mut self) -> bool {
        let serving_ok = self.reload_serving();
        let identities_ok = self.reload_identities();
        serving_ok && identities_ok
    }

    fn reload_serving(&mut self) -> bool {
        let config = &self.context.config;
        let bytes = serving_bytes(config);
        if bytes == self.state.serving {
            // Also after a failure whose file was put back as it was: a later failure
            // is a new change and must be logged again.
            self.clear_failure("serving");
            return true;
        }
        match serving_config(config) {
            Ok((server_config, summary)) => {
                self.state.serving = bytes;
                self.clear_failure("serving");
                log::info!(
                    "serving certificate or client CA changed: new handshakes use serial {} until {}",
                    summary.serial_hex,
                    x509::format_unix(summary.not_after_unix)
                );
                self.send(CertUpdate::ServerConfig(server_config));
                true
            }
            Err(e) => self.failed("serving", &e),
        }
    }

    fn reload_identities(&mut self) -> bool {
        let config = self.context.config.clone();
        let trust_bytes = trust_bytes(&config);
        let trust_changed = trust_bytes != self.state.trust;
        if trust_changed {
            match upstream_trust(&config) {
                Ok(trust) => {
                    log::info!("cloud apiserver CA changed: rebuilding every upstream identity");
                    self.trust = trust;
                    self.state.trust = trust_bytes;
                    self.state.identity_files.clear();
                    self.clear_failure("upstream CA");
                }
                Err(e) => return self.failed("upstream CA", &e),
            }
        } else {
            self.clear_failure("upstream CA");
        }
        let list_bytes = read_or_empty(config.tls_config_file.as_deref());
        let list = match identity_list(&config) {
            Ok(list) => list,
            Err(e) => return self.failed("tls config file", &e),
        };
        self.clear_failure("tls config file");
        let mut all_ok = true;
        let mut changed = trust_changed || list_bytes != self.state.identity_list;
        let mut next: HashMap<String, Arc<Identity>> = HashMap::new();
        let mut next_files = HashMap::new();
        for files in list {
            let bytes = pair_bytes(&files);
            let previous = self.state.identity_files.get(&files).filter(|old| **old == bytes);
            let current = self.identity_by_files(&files);
            match (previous, current.clone()) {
                (Some(_), Some(identity)) => {
                    self.clear_failure(&files.cert.display().to_string());
                    next.insert(identity.name.clone(), identity);
                    next_files.insert(files, bytes);
                }
                _ => match Identity::load(&files.cert, &files.key, &self.trust) {
                    Ok(identity) => {
                        self.clear_failure(&files.cert.display().to_string());
                        log_identity_change(current.as_deref(), &identity);
                        next.insert(identity.name.clone(), Arc::new(identity));
                        next_files.insert(files, bytes);
                        changed = true;
                    }
                    Err(e) => {
                        all_ok = false;
                        // Keep what worked before for this entry, if anything did.
                        if let Some(identity) = current {
                            next.insert(identity.name.clone(), identity);
                            if let Some(old) = self.state.identity_files.get(&files) {
                                next_files.insert(files.clone(), old.clone());
                            }
                        }
                        self.failed(&files.cert.display().to_string(), &e);
                    }
                },
            }
        }
        for removed in self.identities.by_name.keys().filter(|name| !next.contains_key(*name)) {
            log::info!(
                "identity {removed} removed from the tls config file: its clients now use the default identity"
            );
            changed = true;
        }
        if changed {
            self.state.identity_list = list_bytes;
            self.state.identity_files = next_files;
            let default = if trust_changed {
                match Identity::default_identity(&self.trust) {
                    Ok(identity) => Arc::new(identity),
                    Err(e) => return self.failed("default identity", &e),
                }
            } else {
                self.identities.default.clone()
            };
            self.identities = IdentitySet { by_name: next, default };
            self.send(CertUpdate::Identities(self.identities.clone()));
            self.publish_snapshot();
        }
        all_ok
    }

    fn identity_by_files(&self, files: &IdentityFiles) -> Option<Arc<Identity>> {
        let cert: &PathBuf = &files.cert;
        self.identities.by_name.values().find(|i| i.cert_path.as_ref() == Some(cert)).cloned()
    }

    fn send(&self, update: CertUpdate) {
        if self.context.updates.send(update).is_ok() {
            (self.context.wake)();
        }
    }

    /// Logs a failure once per distinct message and counts it; returns false.
    fn failed(&mut self, subject: &str, error: &TlsError) -> bool {
        self.context.metrics.cert_reload_failures.fetch_add(1, Ordering::Relaxed);
        let message = error.to_string();
        if self.state.failures.get(subject) != Some(&message) {
            log::warn!(
                "not applying changed certificate material ({message}); the previous one stays in use, retrying every second"
            );
            self.state.failures.insert(subject.to_string(), message);
        }
        false
    }

    fn clear_failure(&mut self, subject: &str) {
        self.state.failures.remove(subject);
    }

    fn publish_snapshot(&self) {
        let mut identities: Vec<serde_json::Value> = self
            .identities
            .by_name
            .values()
            .map(|identity| {
                let summary = identity.summary.as_ref();
                serde_json::json!({
                    "commonName": identity.name,
                    "serial": summary.map(|s| s.serial_hex.clone()),
                    "notAfter": summary.map(|s| x509::format_unix(s.not_after_unix)),
                    "certFile": identity.cert_path.as_ref().map(|p| p.display().to_string()),
                })
            })
            .collect();
        identities.sort_by(|a, b| a["commonName"].as_str().cmp(&b["commonName"].as_str()));
        if let Ok(mut snapshot) = self.context.snapshot.lock() {
            *snapshot = serde_json::json!({ "identities": identities });
        }
    }
}

fn log_identity_change(old: Option<&Identity>, new: &Identity) {
    let describe = |identity: &Identity| {
        identity.summary.as_ref().map_or_else(String::new, |s| {
            format!("serial {} until {}", s.serial_hex, x509::format_unix(s.not_after_unix))
        })
    };
    match old {
        Some(old) => {
            log::info!("identity {} rotated: {} → {}", new.name, describe(old), describe(new))
        }
        None => log::info!("identity {} added: {}", new.name, describe(new)),
    }
}
