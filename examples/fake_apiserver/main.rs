//! A kube-apiserver stand-in for tests, benchmarks and the demo: HTTPS with optional client
//! certificates, discovery, an in-memory resource store with LIST/WATCH/writes, Table and
//! metadata representations, and debug endpoints. Thread per connection, blocking rustls.
//!
//! ```text
//! fake_apiserver --cert F --key F --client-ca F [--address 127.0.0.1] [--port 0]
//!                [--token TOKEN=USER]... [--bookmark-interval-ms 1000] [--history 1000]
//!                [--service-account-signing-alg RS256|ES256] [--api-audience AUD]...
//! ```
//! Prints `listening on <addr>:<port>` on stdout once ready; logs go to stderr
//! (`FAKE_APISERVER_LOG=debug` logs every request).
//!
//! Outages on demand: `POST /debug/fault?mode=etcd-down|lb-dead|throttle|none` (see
//! `faults.rs`); the other `/debug/*` endpoints are listed in `debug.rs`.

#[path = "../support/pki.rs"]
mod pki;

mod api;
mod clock;
mod debug;
mod discovery;
mod faults;
mod http;
mod identity;
mod protobuf;
mod repr;
mod resources;
mod selectors;
mod server;
mod signing;
mod status;
mod store;
mod table;
mod tokens;
mod watch;
mod writes;

use std::collections::HashMap;
use std::error::Error;
use std::fs::File;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::ring::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use server::Server;
use store::Shared;

/// Enough for the deepest JSON serde_json accepts (128 levels) and the recursive merge patch.
const CONNECTION_STACK: usize = 512 * 1024;

/// Keeps `Instant + interval` far from overflowing.
const MAX_BOOKMARK_INTERVAL_MS: u64 = 24 * 3600 * 1000;

struct Options {
    cert: String,
    key: String,
    client_ca: String,
    address: String,
    port: u16,
    tokens: HashMap<String, String>,
    bookmark_interval: Duration,
    history: usize,
    signing_alg: signing::Alg,
    api_audiences: Vec<String>,
}

const USAGE: &str = "usage: fake_apiserver --cert F --key F --client-ca F [--address 127.0.0.1] \
                     [--port 0] [--token TOKEN=USER]... [--bookmark-interval-ms 1000] \
                     [--history 1000] [--service-account-signing-alg RS256|ES256] \
                     [--api-audience AUD]...";

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        cert: String::new(),
        key: String::new(),
        client_ca: String::new(),
        address: "127.0.0.1".into(),
        port: 0,
        tokens: HashMap::new(),
        bookmark_interval: Duration::from_millis(1000),
        history: 1000,
        signing_alg: signing::Alg::Rs256,
        api_audiences: Vec::new(),
    };
    let mut args = args;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number =
            |what: &str| value.parse::<u64>().map_err(|_| format!("{what}: not a number: {value}"));
        match flag.as_str() {
            "--cert" => options.cert = value,
            "--key" => options.key = value,
            "--client-ca" => options.client_ca = value,
            "--address" => options.address = value,
            "--port" => {
                options.port = value.parse().map_err(|_| format!("--port: bad port {value}"))?
            }
            "--bookmark-interval-ms" => {
                options.bookmark_interval =
                    Duration::from_millis(number(&flag)?.clamp(1, MAX_BOOKMARK_INTERVAL_MS))
            }
            "--history" => options.history = number(&flag)? as usize,
            "--token" => {
                let (token, user) = value.split_once('=').ok_or("--token wants TOKEN=USER")?;
                options.tokens.insert(token.to_string(), user.to_string());
            }
            "--service-account-signing-alg" => {
                options.signing_alg = signing::Alg::parse(&value)
                    .ok_or_else(|| format!("{flag}: RS256 or ES256, not {value}"))?
            }
            "--api-audience" => options.api_audiences.push(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.cert.is_empty() || options.key.is_empty() || options.client_ca.is_empty() {
        return Err("--cert, --key and --client-ca are required".into());
    }
    Ok(options)
}

fn tls_config(options: &Options) -> Result<Arc<ServerConfig>, Box<dyn Error>> {
    let provider = Arc::new(default_provider());
    let certs = rustls_pemfile::certs(&mut BufReader::new(File::open(&options.cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(File::open(&options.key)?))?
        .ok_or_else(|| format!("no private key in {}", options.key))?;
    let mut roots = RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut BufReader::new(File::open(&options.client_ca)?)) {
        roots.add(ca?)?;
    }
    // Like kube-apiserver: a client certificate is optional, but must chain to the CA if sent.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn run(options: Options) -> Result<(), Box<dyn Error>> {
    let tls = tls_config(&options)?;
    let shared = Shared::new(options.history);
    writes::load_seed(&shared).map_err(|e| e.message)?;
    // The fake's serving certificate and client certificates share this CA (tests' PKI).
    let root_ca = std::fs::read_to_string(&options.client_ca)?;
    tokens::publish_root_ca(&shared, &root_ca).map_err(|e| e.message)?;
    let server = Arc::new(Server {
        shared,
        tokens: options.tokens,
        bookmark_interval: options.bookmark_interval,
        signer: signing::Signer::new(options.signing_alg)?,
        api_audiences: if options.api_audiences.is_empty() {
            vec![tokens::ISSUER.to_string()]
        } else {
            options.api_audiences
        },
    });

    let listener = TcpListener::bind((options.address.as_str(), options.port))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    for tcp in listener.incoming() {
        let tcp = match tcp {
            Ok(tcp) => tcp,
            Err(e) => {
                log::warn!("accept: {e}");
                continue;
            }
        };
        let (tls, server) = (tls.clone(), server.clone());
        let spawned = std::thread::Builder::new()
            .name("connection".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || server::serve_connection(tcp, tls, &server));
        if let Err(e) = spawned {
            log::warn!("cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    init_logging();
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("fake_apiserver: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake_apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (stdout carries only the `listening on` line). Dependencies (rustls)
/// only get to say warnings and errors.
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let ours = metadata.target().starts_with(env!("CARGO_CRATE_NAME"));
        metadata.level() <= log::max_level() && (ours || metadata.level() <= log::Level::Warn)
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            eprintln!("fake_apiserver {} {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

fn init_logging() {
    let level = std::env::var("FAKE_APISERVER_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(log::LevelFilter::Info);
    if log::set_logger(&StderrLogger).is_ok() {
        log::set_max_level(level);
    }
}
