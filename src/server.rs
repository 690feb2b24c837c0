//! Start-up: turns a validated `Config` into running parts — listeners, the cache
//! thread, the cloud prober, the certificate reloader — and hands them to the
//! reactor. Every failure here is a one-line error for `main` to print.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use mio::net::TcpListener;

use crate::cache::{self, CacheConfig, CacheKind};
use crate::certs::{self, CertsSnapshot, ReloadContext};
use crate::cloud::Cloud;
use crate::cloud_client::CloudEndpoint;
use crate::config::{CacheType, Config};
use crate::diagnostics::{self, Sources};
use crate::health::{self, Hysteresis, ProbeTarget};
use crate::issuer_keys::{self, IssuerKeys, Schedule};
use crate::metrics::Metrics;
use crate::reactor::{self, Inbox, Reactor, ReactorParts};
use crate::sdnotify;
use crate::signals::Signals;
use crate::tls;
use crate::token_identity::TokenVerifier;

#[derive(Debug)]
pub enum StartError {
    /// Bad TLS material named by a flag.
    Tls(tls::TlsError),
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    Cache(cache::CacheError),
    Io(&'static str, std::io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Tls(e) => write!(f, "{e}"),
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Cache(e) => write!(f, "{e}"),
            StartError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl StartError {
    /// Configuration problems exit 2 (like a bad flag); the rest exit 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Tls(_) | StartError::Listen { .. } => 2,
            _ => 1,
        }
    }
}

/// Loads everything, binds the listeners and runs until shut down.
pub fn run(config: Config) -> Result<(), StartError> {
    let config = Arc::new(config);
    for flag in &config.ignored_flags {
        log::warn!("flag --{flag} is accepted for SuperEdge compatibility and ignored");
    }
    let mut loaded = certs::load(&config).map_err(StartError::Tls)?;
    let listeners = bind(&config)?;
    let (poll, waker) =
        reactor::new_poll().map_err(|e| StartError::Io("cannot create the event loop", e))?;
    let metrics = Arc::new(Metrics::default());
    let signals =
        Signals::install().map_err(|e| StartError::Io("cannot install signal handlers", e))?;

    let cache = cache::start(cache_config(&config), waker.clone()).map_err(StartError::Cache)?;

    let (health_tx, health_rx) = mpsc::channel();
    let server_name = tls::upstream_server_name(&config.upstream_host).map_err(StartError::Tls)?;
    let probe_identity = health::probe_identity(&loaded.identities);
    if !probe_identity.name.is_empty() {
        log::info!("probing the cloud's /readyz as {}", probe_identity.name);
    }
    let probe_target = ProbeTarget {
        endpoint: CloudEndpoint {
            host: config.upstream_host.clone(),
            port: config.upstream_port,
            server_name: server_name.clone(),
            config: probe_identity.config.clone(),
            timeout: config.timeout,
        },
        hysteresis: Hysteresis {
            down_after: config.cloud_down_after,
            up_after: config.cloud_up_after,
        },
        verdict_file: kept_file(&config, "cloud-state"),
    };
    let was_down =
        probe_target.verdict_file.as_deref().and_then(health::last_verdict) == Some(false);
    let (keys_tx, keys_rx) = mpsc::channel();
    // The probe's identity (kubelet's when configured): a user the cloud knows, which the
    // operator can grant the issuer-discovery role.
    let endpoint = probe_target.endpoint.clone();
    let tokens = start_token_verifier(&config, endpoint, keys_tx, waker.clone())?;
    let first_addr = initial_address(&config);
    let prober_waker = waker.clone();
    let prober = health::spawn(probe_target, health_tx, move || {
        let _ = prober_waker.wake();
    })
    .map_err(|e| StartError::Io("cannot start the cloud prober", e))?;

    let (certs_tx, certs_rx) = mpsc::channel();
    let snapshot: CertsSnapshot = Arc::new(Mutex::new(serde_json::Value::Null));
    let reload_waker = waker.clone();
    let reloader = certs::spawn(
        &mut loaded,
        ReloadContext {
            config: config.clone(),
            updates: certs_tx,
            metrics: metrics.clone(),
            snapshot: snapshot.clone(),
            wake: Box::new(move || {
                let _ = reload_waker.wake();
            }),
        },
    )
    .map_err(|e| StartError::Io("cannot start the certificate reloader", e))?;

    if config.diagnostics_port != 0 {
        let sources = Sources {
            metrics: metrics.clone(),
            certs: snapshot,
            cache: Some(Box::new(cache.reporter())),
        };
        let addr = diagnostics::spawn(config.diagnostics_port, sources)
            .map_err(|e| StartError::Io("cannot listen on --diagnostics-port", e))?;
        log::info!(
            "diagnostics on http://{addr} (/healthz /readyz /metrics /debug/cache /debug/certs)"
        );
    }
    let host_header = health::host_header(&config.upstream_host, config.upstream_port);
    let cloud = Cloud::new(first_addr, server_name, host_header, prober, was_down);
    if was_down {
        log::warn!(
            "the cloud apiserver was down when lite-apiserver last stopped: serving from the cache until a probe finds it"
        );
        metrics.set_cloud(false, "down when lite-apiserver last stopped; waiting for a probe");
    } else {
        metrics.set_cloud(false, "waiting for the first probe of the cloud apiserver");
    }
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            log::info!("serving on https://{addr}, cloud apiserver {}", cloud.host_header());
        }
    }
    let reactor = Reactor::new(ReactorParts {
        poll,
        listeners,
        identities: loaded.identities.clone(),
        server_config: loaded.server_config.clone(),
        cache: Some(cache),
        cloud,
        tokens,
        inbox: Inbox { health: health_rx, certs: certs_rx, issuer_keys: keys_rx },
        signals,
        reloader,
        metrics,
        config,
    })
    .map_err(|e| StartError::Io("cannot start the event loop", e))?;
    sdnotify::ready();
    reactor.run().map_err(|e| StartError::Io("event loop failed", e))
}

/// Where state kept between runs lives: with the cache (nowhere for a memory one).
fn kept_file(config: &Config, name: &str) -> Option<PathBuf> {
    match config.cache_type {
        CacheType::File => Some(config.file_cache_path.join(name)),
        CacheType::Memory => None,
    }
}

/// The verifier of service-account tokens, with the keys a previous run kept (so tokens
/// verify after a reboot while offline) and a thread that fetches them from the cloud
/// (its identity needs the `system:service-account-issuer-discovery` RBAC).
fn start_token_verifier(
    config: &Config,
    endpoint: CloudEndpoint,
    keys: mpsc::Sender<IssuerKeys>,
    waker: Arc<mio::Waker>,
) -> Result<TokenVerifier, StartError> {
    let store = kept_file(config, "issuer-keys.json");
    let stored = store.as_deref().and_then(issuer_keys::load_stored);
    if let Some(stored) = &stored {
        log::info!("service-account keys of {} loaded from the cache", stored.issuer());
    }
    let fetch = move |path: &str| {
        let accept = [("Accept", "application/json")];
        endpoint.get(path, &accept, issuer_keys::MAX_DOCUMENT_LEN).map(|r| (r.status, r.body))
    };
    let wake = move || {
        let _ = waker.wake();
    };
    let fetcher = issuer_keys::spawn(fetch, Schedule::default(), store, keys, wake)
        .map_err(|e| StartError::Io("cannot start the service-account key fetcher", e))?;
    Ok(TokenVerifier::new(stored, Some(fetcher)))
}

fn cache_config(config: &Config) -> CacheConfig {
    let kind = match config.cache_type {
        CacheType::File => CacheKind::Sqlite { dir: config.file_cache_path.clone() },
        CacheType::Memory => {
            log::info!("--cache-type=memory: the cache is lost when lite-apiserver restarts");
            CacheKind::Memory
        }
    };
    CacheConfig { max_bytes: config.cache_max_bytes, ..CacheConfig::new(kind) }
}

fn bind(config: &Config) -> Result<Vec<TcpListener>, StartError> {
    config
        .addresses
        .iter()
        .map(|ip| {
            let addr = SocketAddr::new(*ip, config.port);
            if !ip.is_loopback() {
                log::warn!(
                    "listening on {addr}, beyond loopback: any host that can reach it may connect"
                );
            }
            TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })
        })
        .collect()
}

/// The cloud's address at start. An IP needs no lookup; a name is resolved once
/// here (the prober keeps it fresh). Failing that, start offline: a node that
/// reboots while cut off must still serve from its cache.
fn initial_address(config: &Config) -> Option<SocketAddr> {
    match (config.upstream_host.as_str(), config.upstream_port).to_socket_addrs() {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            log::warn!("cannot resolve {} yet ({e}): starting offline", config.upstream_host);
            None
        }
    }
}
