//! Command-line flags: parsing and validation.
//!
//! Flag names, defaults and meanings follow SuperEdge's lite-apiserver so that an
//! existing edgeadm systemd unit starts this binary unchanged. Parsing follows Go's
//! `flag` package conventions (`--flag value`, `--flag=value`, `-flag`, booleans only
//! as `--flag` or `--flag=bool`), because that is what those units were written for.
//! Every error is one line naming the flag; `main` prints it and exits with status 2.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Which cache store backs the proxy (`--cache-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheType {
    /// SQLite on disk under `--file-cache-path` (SuperEdge's `file`).
    File,
    /// In memory only: lost on restart.
    Memory,
}

/// The validated configuration of one lite-apiserver process.
#[derive(Debug, Clone)]
pub struct Config {
    pub ca_file: PathBuf,
    pub apiserver_ca_file: Option<PathBuf>,
    pub tls_cert_file: PathBuf,
    pub tls_private_key_file: PathBuf,
    pub addresses: Vec<IpAddr>,
    pub port: u16,
    pub upstream_host: String,
    pub upstream_port: u16,
    pub tls_config_file: Option<PathBuf>,
    pub timeout: Duration,
    pub insecure: bool,
    pub file_cache_path: PathBuf,
    pub cache_type: CacheType,
    pub cache_max_bytes: u64,
    pub sync_duration: Duration,
    pub modify_request_accept: bool,
    /// `--log-level` when given; otherwise `RUST_LOG`, then info.
    pub log_level: Option<log::LevelFilter>,
    pub diagnostics_port: u16,
    pub max_connections: usize,
    /// `--max-idle-upstream`: idle cloud connections kept per identity at most.
    pub max_idle_upstream: usize,
    pub client_timeouts: ClientTimeouts,
    /// `--cloud-down-after`: failed cloud probes in a row before the node goes offline.
    pub cloud_down_after: usize,
    /// `--cloud-up-after`: good cloud probes in a row before the node goes back online.
    pub cloud_up_after: usize,
    /// `--reconnect-spread`: offline watches end spread over this long when the cloud
    /// returns (zero: all at once), so a site's nodes do not re-watch in the same second.
    pub reconnect_spread: Duration,
    /// `--cloud-response-timeout`: a cacheable read whose answer has not begun this long
    /// after it was sent is answered from the cache (when it holds one).
    pub cloud_response_timeout: Duration,
    /// `--in-cluster-address`: the address pods on this node reach lite-apiserver at,
    /// shown to kubelet as the `default/kubernetes` Service (in_cluster.rs).
    pub in_cluster_address: Option<SocketAddr>,
    /// SuperEdge flags we accept and ignore, reported as a warning once logging is up.
    pub ignored_flags: Vec<String>,
}

/// How long a client connection may sit in each phase (the defaults are Go net/http's
/// and kube-apiserver's usual values; slow links may want them longer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// `--tls-handshake-timeout`: from accept to a finished TLS handshake.
    pub handshake: Duration,
    /// `--read-header-timeout`: from a request's first byte to the end of its head.
    pub read_header: Duration,
    /// `--idle-timeout`: a keep-alive connection waiting for its next request.
    pub idle: Duration,
    /// `--stall-timeout`: a non-watch request with no byte moving either way.
    pub stall: Duration,
}

impl Default for ClientTimeouts {
    fn default() -> ClientTimeouts {
        ClientTimeouts {
            handshake: Duration::from_secs(10),
            read_header: Duration::from_secs(30),
            idle: Duration::from_secs(90),
            stall: Duration::from_secs(60),
        }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
    Version,
}

/// A command-line error: always names the flag at fault.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    UnknownFlag(String),
    MissingValue(String),
    InvalidValue { flag: String, value: String, reason: String },
    Required(&'static str),
    UnexpectedArgument(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownFlag(flag) => write!(f, "unknown flag --{flag} (see --help)"),
            ConfigError::MissingValue(flag) => write!(f, "flag --{flag} needs a value"),
            ConfigError::InvalidValue { flag, value, reason } => {
                write!(f, "invalid value {value:?} for flag --{flag}: {reason}")
            }
            ConfigError::Required(flag) => write!(f, "flag --{flag} is required"),
            ConfigError::UnexpectedArgument(arg) => {
                write!(f, "unexpected argument {arg:?}: flags start with --")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

pub const USAGE: &str = "\
Usage: lite-apiserver [flags]

A caching mTLS proxy for the Kubernetes apiserver on edge nodes.

Flags:
  --ca-file PATH                 CA bundle verifying client certificates (and the cloud
                                 apiserver unless --apiserver-ca-file is set) [required]
  --apiserver-ca-file PATH       CA bundle for the cloud apiserver's serving certificate
  --tls-cert-file PATH           serving certificate [required]
  --tls-private-key-file PATH    serving private key [required]
  --address IP                   listen address, repeatable (default 127.0.0.1)
  --port N                       listen port (default 51003)
  --kube-apiserver-url URL       cloud apiserver: host or https://host[:port] [required]
  --kube-apiserver-port N        cloud apiserver port when the url has none (default 443)
  --tls-config-file PATH         JSON [{\"cert\":..,\"key\":..}]: upstream identities by CN
  --timeout SECONDS              connect timeout to the cloud (default 3)
  --insecure                     do not verify the cloud apiserver's certificate
  --file-cache-path DIR          cache directory (default /data/lite-apiserver/cache)
  --cache-type file|memory       cache store (default file: SQLite on disk)
  --cache-max-bytes N            cache size cap, LRU eviction (default 268435456)
  --sync-duration SECONDS        certificate reload period (default 60)
  --modify-request-accept BOOL   ask the cloud for JSON on cacheable GETs (default false)
  --diagnostics-port N           plain-HTTP diagnostics on 127.0.0.1, 0 disables (default 51004)
  --max-connections N            client connections at most (default 1024); the next 64
                                 get a 503 Status, further ones are closed at once
  --max-idle-upstream N          idle cloud connections kept per identity at most, fewer
                                 when recent load needed fewer (default 256)
  --tls-handshake-timeout SECONDS  client TLS handshake limit (default 10)
  --read-header-timeout SECONDS  limit for reading a request head once started (default 30)
  --idle-timeout SECONDS         close keep-alive connections idle this long (default 90)
  --stall-timeout SECONDS        abandon a non-watch request when no byte moves for this
                                 long (default 60)
  --cloud-down-after N           failed /readyz probes in a row before going offline (default 3)
  --cloud-up-after N             good /readyz probes in a row before going online (default 2)
  --reconnect-spread SECONDS     end offline watches spread over this long when the cloud
                                 returns (default 10; 0 = all at once)
  --cloud-response-timeout SECONDS  answer a cacheable read from the cache when the cloud
                                 has not begun its answer this long after it (default 5)
  --in-cluster-address IP:PORT   show kubelet this address as the default/kubernetes
                                 Service, so pods on the node use lite-apiserver (off)
  --log-level LEVEL              error|warn|info|debug|trace (default info; RUST_LOG too)
  --help, --version
";

/// SuperEdge (and its klog logging) flags that have no meaning here; accepted with a
/// warning so existing units start.
const IGNORED_FLAGS: &[&str] = &[
    "network-interface",
    "url-mux-cache",
    "badger-cache-path",
    "bolt-cache-path",
    "backend-timeout",
    "v",
    "vmodule",
    "log-dir",
    "log_dir",
    "log-file",
    "log_file",
    "stderrthreshold",
];

/// Ignored flags that are booleans (they never take the next argument as a value).
const IGNORED_BOOL_FLAGS: &[&str] = &[
    "profiling",
    "url-mux-cache",
    "logtostderr",
    "alsologtostderr",
    "add_dir_header",
    "skip_headers",
    "one_output",
];

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let mut builder = Builder::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            return Err(ConfigError::UnexpectedArgument(arg));
        };
        let (name, inline_value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (flag.to_string(), None),
        };
        match name.as_str() {
            "help" | "h" => return Ok(Command::Help),
            "version" => return Ok(Command::Version),
            _ => {}
        }
        if is_bool_flag(&name) {
            let value = inline_value.unwrap_or_else(|| "true".to_string());
            builder.set_bool(&name, &value)?;
            continue;
        }
        let value = match inline_value {
            Some(value) => value,
            None => args.next().ok_or_else(|| ConfigError::MissingValue(name.clone()))?,
        };
        builder.set(&name, value)?;
    }
    builder.build().map(|config| Command::Run(Box::new(config)))
}

fn is_bool_flag(name: &str) -> bool {
    matches!(name, "insecure" | "modify-request-accept") || IGNORED_BOOL_FLAGS.contains(&name)
}

#[derive(Default)]
struct Builder {
    ca_file: Option<PathBuf>,
    apiserver_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_private_key_file: Option<PathBuf>,
    addresses: Vec<IpAddr>,
    port: Option<u16>,
    url: Option<String>,
    upstream_port: Option<u16>,
    tls_config_file: Option<PathBuf>,
    timeout: Option<Duration>,
    insecure: bool,
    file_cache_path: Option<PathBuf>,
    cache_type: Option<CacheType>,
    cache_max_bytes: Option<u64>,
    sync_duration: Option<Duration>,
    modify_request_accept: Option<bool>,
    log_level: Option<log::LevelFilter>,
    diagnostics_port: Option<u16>,
    max_connections: Option<usize>,
    max_idle_upstream: Option<usize>,
    client_timeouts: ClientTimeouts,
    cloud_down_after: Option<usize>,
    cloud_up_after: Option<usize>,
    reconnect_spread: Option<Duration>,
    cloud_response_timeout: Option<Duration>,
    in_cluster_address: Option<SocketAddr>,
    ignored_flags: Vec<String>,
}

impl Builder {
    fn set(&mut self, name: &str, value: String) -> Result<(), ConfigError> {
        match name {
            "ca-file" => self.ca_file = Some(path(name, value)?),
            "apiserver-ca-file" => self.apiserver_ca_file = Some(path(name, value)?),
            "tls-cert-file" => self.tls_cert_file = Some(path(name, value)?),
            "tls-private-key-file" => self.tls_private_key_file = Some(path(name, value)?),
            "address" => self.addresses.push(number(name, &value, "an IP address")?),
            "port" => self.port = Some(number(name, &value, "a port number 0-65535")?),
            "kube-apiserver-url" => self.url = Some(value),
            "kube-apiserver-port" => {
                self.upstream_port = Some(number(name, &value, "a port number 1-65535")?)
            }
            "tls-config-file" => self.tls_config_file = Some(path(name, value)?),
            "timeout" => self.timeout = Some(seconds(name, &value)?),
            "file-cache-path" => self.file_cache_path = Some(path(name, value)?),
            "cache-type" => self.cache_type = Some(cache_type(&value)?),
            "cache-max-bytes" => self.cache_max_bytes = Some(number(name, &value, "a byte count")?),
            "sync-duration" => self.sync_duration = Some(seconds(name, &value)?),
            "log-level" => self.log_level = Some(log_level(&value)?),
            "diagnostics-port" => {
                self.diagnostics_port = Some(number(name, &value, "a port number 0-65535")?)
            }
            "max-connections" => self.max_connections = Some(positive(name, &value)?),
            "max-idle-upstream" => self.max_idle_upstream = Some(positive(name, &value)?),
            "tls-handshake-timeout" => self.client_timeouts.handshake = seconds(name, &value)?,
            "read-header-timeout" => self.client_timeouts.read_header = seconds(name, &value)?,
            "idle-timeout" => self.client_timeouts.idle = seconds(name, &value)?,
            "stall-timeout" => self.client_timeouts.stall = seconds(name, &value)?,
            "cloud-down-after" => self.cloud_down_after = Some(positive(name, &value)?),
            "cloud-up-after" => self.cloud_up_after = Some(positive(name, &value)?),
            "in-cluster-address" => {
                let addr = value.parse().map_err(|_| invalid(name, &value, "expected IP:PORT"))?;
                self.in_cluster_address = Some(addr);
            }
            "reconnect-spread" => self.reconnect_spread = Some(seconds_or_zero(name, &value)?),
            "cloud-response-timeout" => {
                self.cloud_response_timeout = Some(seconds(name, &value)?);
            }
            _ if IGNORED_FLAGS.contains(&name) => self.ignored_flags.push(name.to_string()),
            _ => return Err(ConfigError::UnknownFlag(name.to_string())),
        }
        Ok(())
    }

    fn set_bool(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let parsed = match value {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
            _ => return Err(invalid(name, value, "expected true or false")),
        };
        match name {
            "insecure" => self.insecure = parsed,
            "modify-request-accept" => self.modify_request_accept = Some(parsed),
            _ => self.ignored_flags.push(name.to_string()),
        }
        Ok(())
    }

    fn build(self) -> Result<Config, ConfigError> {
        let url = self.url.ok_or(ConfigError::Required("kube-apiserver-url"))?;
        let (upstream_host, url_port) = parse_upstream_url(&url)?;
        let addresses = if self.addresses.is_empty() {
            vec![IpAddr::from([127, 0, 0, 1])]
        } else {
            self.addresses
        };
        Ok(Config {
            ca_file: self.ca_file.ok_or(ConfigError::Required("ca-file"))?,
            apiserver_ca_file: self.apiserver_ca_file,
            tls_cert_file: self.tls_cert_file.ok_or(ConfigError::Required("tls-cert-file"))?,
            tls_private_key_file: self
                .tls_private_key_file
                .ok_or(ConfigError::Required("tls-private-key-file"))?,
            addresses,
            port: self.port.unwrap_or(51003),
            upstream_host,
            upstream_port: url_port.or(self.upstream_port).unwrap_or(443),
            tls_config_file: self.tls_config_file,
            timeout: self.timeout.unwrap_or(Duration::from_secs(3)),
            insecure: self.insecure,
            file_cache_path: self
                .file_cache_path
                .unwrap_or_else(|| PathBuf::from("/data/lite-apiserver/cache")),
            cache_type: self.cache_type.unwrap_or(CacheType::File),
            cache_max_bytes: self.cache_max_bytes.unwrap_or(256 << 20),
            sync_duration: self.sync_duration.unwrap_or(Duration::from_secs(60)),
            modify_request_accept: self.modify_request_accept.unwrap_or(false),
            log_level: self.log_level,
            diagnostics_port: self.diagnostics_port.unwrap_or(51004),
            max_connections: self.max_connections.unwrap_or(1024),
            max_idle_upstream: self.max_idle_upstream.unwrap_or(256),
            client_timeouts: self.client_timeouts,
            cloud_down_after: self.cloud_down_after.unwrap_or(3),
            cloud_up_after: self.cloud_up_after.unwrap_or(2),
            reconnect_spread: self.reconnect_spread.unwrap_or(Duration::from_secs(10)),
            cloud_response_timeout: self.cloud_response_timeout.unwrap_or(Duration::from_secs(5)),
            in_cluster_address: self.in_cluster_address,
            ignored_flags: self.ignored_flags,
        })
    }
}

/// Splits `--kube-apiserver-url` into host and optional port. Accepts `host`,
/// `host:port`, `https://host[:port][/]` and bracketed IPv6 literals.
fn parse_upstream_url(url: &str) -> Result<(String, Option<u16>), ConfigError> {
    let bad = |reason: &str| invalid("kube-apiserver-url", url, reason);
    if url.starts_with("http://") {
        return Err(bad("the cloud apiserver is only reached over https"));
    }
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(bad("expected host, host:port or https://host[:port]"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in IPv6 address"))?;
        (host, tail.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        (authority, None) // a bare IPv6 literal
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().map_err(|_| bad("invalid port"))?),
        None => None,
    };
    Ok((host.to_string(), port))
}

fn invalid(flag: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::InvalidValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn path(flag: &str, value: String) -> Result<PathBuf, ConfigError> {
    if value.is_empty() {
        return Err(invalid(flag, &value, "expected a path"));
    }
    Ok(PathBuf::from(value))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str, what: &str) -> Result<T, ConfigError> {
    value.parse().map_err(|_| invalid(flag, value, &format!("expected {what}")))
}

fn positive(flag: &str, value: &str) -> Result<usize, ConfigError> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(invalid(flag, value, "expected a whole number above 0")),
    }
}

/// Most seconds a duration flag takes: a year. Larger values would overflow deadline
/// arithmetic and mean "never" anyway.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

fn seconds(flag: &str, value: &str) -> Result<Duration, ConfigError> {
    match value.parse::<u64>() {
        Ok(n) if (1..=MAX_SECONDS).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(invalid(flag, value, &format!("expected whole seconds from 1 to {MAX_SECONDS}"))),
    }
}

/// Like `seconds`, but zero is allowed (it switches the thing off).
fn seconds_or_zero(flag: &str, value: &str) -> Result<Duration, ConfigError> {
    if value == "0" { Ok(Duration::ZERO) } else { seconds(flag, value) }
}

fn cache_type(value: &str) -> Result<CacheType, ConfigError> {
    match value {
        "file" | "sqlite" => Ok(CacheType::File),
        "memory" => Ok(CacheType::Memory),
        _ => Err(invalid("cache-type", value, "supported cache types are file and memory")),
    }
}

fn log_level(value: &str) -> Result<log::LevelFilter, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid("log-level", value, "expected error, warn, info, debug or trace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const REQUIRED: &[&str] = &[
        "--ca-file=/ca",
        "--tls-cert-file",
        "/crt",
        "--tls-private-key-file=/key",
        "--kube-apiserver-url=10.0.0.1",
    ];

    fn run(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut all = args(REQUIRED);
        all.extend(args(extra));
        match parse(all)? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected a run command, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_superedge() {
        let config = run(&[]).expect("valid");
        assert_eq!(config.port, 51003);
        assert_eq!(config.upstream_port, 443);
        assert_eq!(config.addresses, vec![IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(config.timeout, Duration::from_secs(3));
        assert_eq!(config.sync_duration, Duration::from_secs(60));
        assert!(!config.modify_request_accept);
        assert!(!config.insecure);
        assert_eq!(config.max_idle_upstream, 256);
    }

    #[test]
    fn max_idle_upstream_is_a_positive_count() {
        assert_eq!(run(&["--max-idle-upstream=200"]).expect("valid").max_idle_upstream, 200);
        for bad in ["0", "-1", "many"] {
            let error = run(&[&format!("--max-idle-upstream={bad}")]).expect_err(bad).to_string();
            assert!(error.contains("--max-idle-upstream") && !error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn url_forms() {
        assert_eq!(parse_upstream_url("1.2.3.4"), Ok(("1.2.3.4".into(), None)));
        assert_eq!(parse_upstream_url("https://k8s:6443/"), Ok(("k8s".into(), Some(6443))));
        assert_eq!(parse_upstream_url("[::1]:6443"), Ok(("::1".into(), Some(6443))));
        assert!(parse_upstream_url("http://k8s").is_err());
        assert!(parse_upstream_url("https://k8s:99999").is_err());
        let config = run(&["--kube-apiserver-url=https://k:7443", "--kube-apiserver-port=6443"]);
        assert_eq!(config.expect("valid").upstream_port, 7443);
    }

    #[test]
    fn client_timeouts_default_and_bounds() {
        assert_eq!(run(&[]).expect("valid").client_timeouts, ClientTimeouts::default());
        let config = run(&[
            "--tls-handshake-timeout=1",
            "--read-header-timeout=2",
            "--idle-timeout=3",
            "--stall-timeout=4",
        ]);
        let secs = |n| Duration::from_secs(n);
        let expected = ClientTimeouts {
            handshake: secs(1),
            read_header: secs(2),
            idle: secs(3),
            stall: secs(4),
        };
        assert_eq!(config.expect("valid").client_timeouts, expected);
        for bad in [
            "--idle-timeout=0",
            "--stall-timeout=-1",
            "--timeout=1.5",
            "--sync-duration=99999999999",
        ] {
            let err = run(&[bad]).expect_err(bad);
            let flag = bad.split('=').next().unwrap_or(bad);
            assert!(err.to_string().contains(flag), "{bad}: {err}");
        }
    }

    #[test]
    fn cloud_hysteresis_defaults_and_bounds() {
        let config = run(&[]).expect("valid");
        assert_eq!((config.cloud_down_after, config.cloud_up_after), (3, 2));
        assert_eq!(config.reconnect_spread, Duration::from_secs(10));
        assert_eq!(config.cloud_response_timeout, Duration::from_secs(5));
        let config = run(&["--reconnect-spread=0", "--cloud-response-timeout=2"]).expect("valid");
        assert_eq!(config.reconnect_spread, Duration::ZERO);
        assert_eq!(config.cloud_response_timeout, Duration::from_secs(2));
        assert_eq!(run(&[]).expect("valid").in_cluster_address, None);
        let config = run(&["--in-cluster-address=169.254.0.10:51003"]).expect("valid");
        assert_eq!(config.in_cluster_address, Some("169.254.0.10:51003".parse().expect("addr")));
        for bad in ["--in-cluster-address=169.254.0.10", "--in-cluster-address=host:1"] {
            let err = run(&[bad]).expect_err(bad);
            assert!(err.to_string().contains("--in-cluster-address"), "{bad}: {err}");
        }
        for bad in ["--reconnect-spread=-1", "--cloud-response-timeout=0"] {
            assert!(run(&[bad]).is_err(), "{bad} must be refused");
        }
        let config = run(&["--cloud-down-after=5", "--cloud-up-after", "1"]).expect("valid");
        assert_eq!((config.cloud_down_after, config.cloud_up_after), (5, 1));
        for bad in ["--cloud-down-after=0", "--cloud-up-after=-1", "--cloud-up-after=two"] {
            let err = run(&[bad]).expect_err(bad);
            let flag = bad.split('=').next().unwrap_or(bad);
            assert!(err.to_string().contains(flag), "{bad}: {err}");
        }
    }

    #[test]
    fn booleans_go_style() {
        assert!(run(&["--insecure"]).expect("valid").insecure);
        assert!(!run(&["--modify-request-accept=false"]).expect("valid").modify_request_accept);
        assert!(run(&["--insecure=maybe"]).is_err());
    }

    #[test]
    fn errors_name_the_flag() {
        let err = run(&["--bogus=1"]).expect_err("unknown");
        assert_eq!(err.to_string(), "unknown flag --bogus (see --help)");
        let err = run(&["--port=http"]).expect_err("bad port");
        assert!(err.to_string().contains("--port"), "{err}");
        let err = parse(args(&["--ca-file=/x"])).expect_err("missing");
        assert!(err.to_string().contains("--kube-apiserver-url"), "{err}");
        assert_eq!(
            run(&["--timeout"]).expect_err("no value"),
            ConfigError::MissingValue("timeout".into())
        );
        assert!(
            run(&["--cache-type=badger"])
                .expect_err("badger")
                .to_string()
                .contains("file and memory")
        );
    }

    #[test]
    fn superedge_only_flags_are_accepted() {
        let config = run(&["--network-interface=eth0", "--profiling", "--v", "4", "--logtostderr"])
            .expect("valid");
        assert_eq!(
            config.ignored_flags,
            vec!["network-interface", "profiling", "v", "logtostderr"]
        );
    }
}
