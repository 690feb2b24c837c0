//! `bench_client`: the load generator behind `bench/run.sh`. Blocking rustls over std
//! threads, so every connection can present a client certificate (wrk cannot).
//!
//! ```text
//! bench_client load        --addr A --path P --ca F [--identity CERT,KEY]... [--connections 8]
//!                          [--duration 5] [--max-requests 1000000] [--header 'Name: value']...
//! bench_client watchers    --addr A --path COLLECTION --ca F [--identity CERT,KEY]... --count 500
//!                          [--rounds 3 --trigger-addr A --trigger-identity CERT,KEY]
//!                          [--hold-secs S --release-file F]
//! bench_client watch-count --addr A --path COLLECTION --ca F [--identity ..] --events N [--timeout 60]
//! bench_client write       --addr A --path COLLECTION --ca F [--identity ..] --method POST|PUT
//!                          --count N [--connections 4] [--prefix cm-] [--bytes 256] [--tag T]
//!                          [--rate PER_SEC]
//! bench_client cold-start  --addr A --path P --ca F [--identity ..] --log FILE -- CMD ARGS...
//! bench_client identities  --pki DIR --count N --out tls.json
//! ```
//! Every mode prints one JSON object on stdout (`watchers --hold-secs` first prints a
//! `{"ready":..}` line when its watches are open); progress goes to stderr. Every loop is
//! bounded by a count and a deadline. No assertions: it measures, the script compares.
//! `--header` (any mode) adds a request header to every request, e.g. a bearer token, an
//! `Accept` (replacing the default `application/json`) or `Accept-Encoding: gzip`.

#[path = "support/pki.rs"]
mod pki;

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A request that gets no answer for this long counts as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 64 * 1024;
const MAX_HEAD_BYTES: usize = 64 * 1024;
const WATCHER_STACK: usize = 256 * 1024;
/// How long a watcher round waits for everyone to see the change.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);
const OPEN_WATCHES_TIMEOUT: Duration = Duration::from_secs(90);
const COLD_START_TIMEOUT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(mode) = argv.next() else {
        eprintln!(
            "usage: bench_client load|watchers|watch-count|write|cold-start|identities --flags (see the file header)"
        );
        return ExitCode::from(2);
    };
    let result = Args::parse(argv).and_then(|args| match mode.as_str() {
        "load" => load(&args),
        "watchers" => watchers(&args),
        "watch-count" => watch_count(&args),
        "write" => write_objects(&args),
        "cold-start" => cold_start(&args),
        "identities" => identities(&args),
        _ => Err(format!("unknown mode {mode}").into()),
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_client {mode}: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flags

struct Args {
    values: HashMap<String, Vec<String>>,
    /// Everything after `--`.
    rest: Vec<String>,
}

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args> {
        let mut args = Args { values: HashMap::new(), rest: Vec::new() };
        while let Some(flag) = argv.next() {
            if flag == "--" {
                args.rest = argv.collect();
                break;
            }
            let name =
                flag.strip_prefix("--").ok_or_else(|| format!("expected a --flag, got {flag}"))?;
            let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
            args.values.entry(name.to_string()).or_default().push(value);
        }
        Ok(args)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.last()).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| format!("--{name} is required").into())
    }

    fn all(&self, name: &str) -> &[String] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: not a number: {v}").into()),
        }
    }

    fn addr(&self, name: &str) -> Result<SocketAddr> {
        let value = self.required(name)?;
        value.parse().map_err(|_| format!("--{name}: not an address: {value}").into())
    }

    fn secs(&self, name: &str, default: f64) -> Result<Duration> {
        Ok(Duration::from_secs_f64(self.number(name, default)?))
    }
}

// ---------------------------------------------------------------------------------------
// TLS

/// Where to connect and how: one client config per identity (connection `i` uses `i % n`).
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    configs: Vec<Arc<ClientConfig>>,
    /// `--header` lines, `Name: value`, sent with every request.
    headers: Arc<[String]>,
}

impl Target {
    fn from_args(args: &Args, addr_flag: &str, identity_flag: &str) -> Result<Target> {
        let roots = load_roots(args.required("ca")?)?;
        let pairs = args.all(identity_flag);
        let configs = if pairs.is_empty() {
            vec![client_config(roots, None)?]
        } else {
            pairs
                .iter()
                .map(|pair| client_config(roots.clone(), Some(pair)))
                .collect::<Result<_>>()?
        };
        let headers = args.all("header").iter().map(|h| header_line(h)).collect::<Result<_>>()?;
        Ok(Target { addr: args.addr(addr_flag)?, configs, headers })
    }

    fn connect(&self, index: usize, read_timeout: Option<Duration>) -> io::Result<Conn> {
        let config = self.configs[index % self.configs.len()].clone();
        let mut conn = Conn::open(self.addr, config, read_timeout)?;
        conn.headers = self.headers.clone();
        Ok(conn)
    }
}

/// A `--header` value as a head line: `Name: value`, no line breaks.
fn header_line(header: &str) -> Result<String> {
    let (name, value) = header.split_once(':').ok_or("--header wants 'Name: value'")?;
    if name.trim().is_empty() || header.contains(['\r', '\n']) {
        return Err(format!("--header: not a header: {header:?}").into());
    }
    Ok(format!("{}: {}", name.trim(), value.trim()))
}

fn load_roots(path: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(File::open(path)?)) {
        roots.add(cert?)?;
    }
    Ok(roots)
}

/// `pair` is `CERT,KEY`; `None` presents no certificate.
fn client_config(roots: RootCertStore, pair: Option<&String>) -> Result<Arc<ClientConfig>> {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let mut config = match pair {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let (cert, key) = pair.split_once(',').ok_or("--identity wants CERT,KEY")?;
            let (chain, key) = load_identity(cert, key)?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_identity(
    cert: &str,
    key: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = rustls_pemfile::certs(&mut BufReader::new(File::open(cert)?))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(File::open(key)?))?
        .ok_or_else(|| format!("no key in {key}"))?;
    Ok((chain, key))
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 over a blocking TLS stream

struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

#[derive(Clone, Copy)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Conn {
    stream: StreamOwned<ClientConnection, TcpStream>,
    host: String,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Extra head lines (`Target::headers`).
    headers: Arc<[String]>,
}

impl Conn {
    fn open(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        read_timeout: Option<Duration>,
    ) -> io::Result<Conn> {
        let tcp = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(read_timeout)?;
        tcp.set_write_timeout(Some(IO_TIMEOUT))?;
        let name = ServerName::from(addr.ip());
        let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        Ok(Conn {
            stream: StreamOwned::new(tls, tcp),
            host: addr.to_string(),
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            headers: Arc::from([]),
        })
    }

    /// A second handle on the socket, to shut it down from another thread.
    fn socket_handle(&self) -> io::Result<TcpStream> {
        self.stream.sock.try_clone()
    }

    fn send(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<()> {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: bench-client\r\n",
            self.host
        );
        let has_accept = self.headers.iter().any(|h| h.to_ascii_lowercase().starts_with("accept:"));
        if !has_accept {
            request.push_str("Accept: application/json\r\n");
        }
        for header in self.headers.iter() {
            request.push_str(&format!("{header}\r\n"));
        }
        if method != "GET" {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)?;
        self.stream.flush()
    }

    /// One whole exchange; returns the status and the body.
    fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(Head, Vec<u8>)> {
        self.send(method, path, body)?;
        let head = self.read_head()?;
        let mut out = Vec::new();
        self.read_body(head.framing, |piece| {
            out.extend_from_slice(piece);
            true
        })?;
        Ok((head, out))
    }

    /// Reads more bytes into the buffer; EOF is an error (a response was due).
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(())
    }

    fn read_head(&mut self) -> io::Result<Head> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut headers);
            match response.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let head = head_of(&response);
                    self.start += len;
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) if self.end - self.start < MAX_HEAD_BYTES => {
                    self.fill()?
                }
                Ok(httparse::Status::Partial) => {
                    return Err(io::Error::other("response head too large"));
                }
                Err(e) => return Err(io::Error::other(format!("bad response head: {e}"))),
            }
        }
    }

    /// Streams the body to `sink` piece by piece; `sink` returns false to stop early.
    fn read_body(
        &mut self,
        framing: Framing,
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<()> {
        match framing {
            Framing::Length(n) => self.take(n, &mut sink).map(|_| ()),
            Framing::UntilClose => loop {
                if self.start == self.end {
                    match self.fill() {
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                        other => other?,
                    }
                }
                let keep_going = sink(&self.buf[self.start..self.end]);
                self.start = self.end;
                if !keep_going {
                    return Ok(());
                }
            },
            Framing::Chunked => loop {
                let line = self.read_line()?;
                let size_text = line.split(|b| *b == b';').next().unwrap_or_default();
                let size = usize::from_str_radix(String::from_utf8_lossy(size_text).trim(), 16)
                    .map_err(|_| io::Error::other("bad chunk size"))?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {}
                    return Ok(());
                }
                if !self.take(size, &mut sink)? {
                    return Ok(());
                }
                self.read_line()?;
            },
        }
    }

    /// Passes `n` body bytes to `sink`; false when the sink asked to stop.
    fn take(&mut self, mut n: usize, sink: &mut impl FnMut(&[u8]) -> bool) -> io::Result<bool> {
        while n > 0 {
            if self.start == self.end {
                self.fill()?;
            }
            let k = n.min(self.end - self.start);
            let keep_going = sink(&self.buf[self.start..self.start + k]);
            self.start += k;
            n -= k;
            if !keep_going {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One CRLF-terminated line, without the line ending.
    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end].iter().position(|b| *b == b'\n') {
                let line = self.buf[self.start..self.start + pos]
                    .strip_suffix(b"\r")
                    .unwrap_or(&self.buf[self.start..self.start + pos])
                    .to_vec();
                self.start += pos + 1;
                return Ok(line);
            }
            self.fill()?;
        }
    }
}

fn head_of(response: &httparse::Response) -> Head {
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
    };
    let status = response.code.unwrap_or(0);
    let framing = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        Framing::Chunked
    } else if let Some(length) = header("content-length").and_then(|v| v.trim().parse().ok()) {
        Framing::Length(length)
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Framing::Length(0)
    } else {
        Framing::UntilClose
    };
    let close = header("connection").is_some_and(|v| v.contains("close"))
        || matches!(framing, Framing::UntilClose);
    Head { status, framing, close }
}

// ---------------------------------------------------------------------------------------
// load

#[derive(Default)]
struct WorkerReport {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    bytes: u64,
    reconnects: u64,
}

struct LoadPlan {
    target: Target,
    path: String,
    duration: Duration,
    max_requests: u64,
    issued: AtomicU64,
    start: Barrier,
}

fn load(args: &Args) -> Result<Value> {
    let connections: usize = args.number("connections", 8)?;
    let plan = Arc::new(LoadPlan {
        target: Target::from_args(args, "addr", "identity")?,
        path: args.required("path")?.to_string(),
        duration: args.secs("duration", 5.0)?,
        max_requests: args.number("max-requests", 1_000_000)?,
        issued: AtomicU64::new(0),
        start: Barrier::new(connections + 1),
    });
    let workers: Vec<_> = (0..connections)
        .map(|index| {
            let plan = plan.clone();
            thread::spawn(move || load_worker(&plan, index))
        })
        .collect();
    plan.start.wait();
    let started = Instant::now();
    let mut total = WorkerReport::default();
    for worker in workers {
        let report = worker.join().map_err(|_| "a load worker panicked")?;
        total.latencies_us.extend(report.latencies_us);
        for (status, n) in report.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.errors += report.errors;
        total.bytes += report.bytes;
        total.reconnects += report.reconnects;
    }
    let secs = started.elapsed().as_secs_f64();
    let ok = total.statuses.get(&200).copied().unwrap_or(0);
    let mut report = json!({
        "connections": connections,
        "requests": total.latencies_us.len(),
        "ok": ok,
        "errors": total.errors,
        "reconnects": total.reconnects,
        "secs": round3(secs),
        "rps": round3(total.latencies_us.len() as f64 / secs),
        "mb_per_sec": round3(total.bytes as f64 / secs / 1e6),
        "statuses": total.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    });
    merge(
        &mut report,
        percentiles_ms(total.latencies_us.into_iter().map(u64::from).collect(), 1e3),
    );
    Ok(report)
}

/// One keep-alive connection: a warm-up request, then requests back to back until the
/// deadline or the shared request budget runs out. Errors reconnect.
fn load_worker(plan: &LoadPlan, index: usize) -> WorkerReport {
    let mut report = WorkerReport::default();
    let mut conn = plan.target.connect(index, Some(IO_TIMEOUT)).ok();
    if let Some(c) = conn.as_mut()
        && c.request("GET", &plan.path, b"").is_err()
    {
        conn = None;
    }
    plan.start.wait();
    let deadline = Instant::now() + plan.duration;
    report.latencies_us.reserve(64 * 1024);
    while Instant::now() < deadline
        && plan.issued.fetch_add(1, Ordering::Relaxed) < plan.max_requests
    {
        if conn.is_none() {
            report.reconnects += 1;
            conn = plan.target.connect(index, Some(IO_TIMEOUT)).ok();
        }
        let Some(c) = conn.as_mut() else {
            report.errors += 1;
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        let sent = Instant::now();
        match timed_get(c, &plan.path) {
            Ok((head, bytes)) => {
                report
                    .latencies_us
                    .push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                *report.statuses.entry(head.status).or_default() += 1;
                report.bytes += bytes;
                if head.close {
                    conn = None;
                }
            }
            Err(_) => {
                report.errors += 1;
                conn = None;
            }
        }
    }
    report
}

/// A GET whose body is counted, not kept.
fn timed_get(conn: &mut Conn, path: &str) -> io::Result<(Head, u64)> {
    conn.send("GET", path, b"")?;
    let head = conn.read_head()?;
    let mut bytes = 0u64;
    conn.read_body(head.framing, |piece| {
        bytes += piece.len() as u64;
        true
    })?;
    Ok((head, bytes))
}

// ---------------------------------------------------------------------------------------
// watchers

/// What the watcher threads share: per round, per watcher, when it saw the round's object
/// (nanoseconds since `epoch`, 0 = not yet).
struct FanOut {
    epoch: Instant,
    seen: Vec<Vec<AtomicU64>>,
    name_prefix: String,
    ready: AtomicUsize,
    failed: AtomicUsize,
    sockets: Mutex<Vec<TcpStream>>,
}

fn watchers(args: &Args) -> Result<Value> {
    let target = Target::from_args(args, "addr", "identity")?;
    let path = args.required("path")?.to_string();
    let count: usize = args.number("count", 500)?;
    let rounds: usize = args.number("rounds", 0)?;
    let tag = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis()
    );
    let rv = list_resource_version(&target, &path)?;
    let fan = Arc::new(FanOut {
        epoch: Instant::now(),
        seen: (0..rounds).map(|_| (0..count).map(|_| AtomicU64::new(0)).collect()).collect(),
        name_prefix: format!("fanout-{tag}-"),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        sockets: Mutex::new(Vec::new()),
    });
    let watch_path = format!("{path}?watch=true&resourceVersion={rv}&timeoutSeconds=900");
    let opening = Instant::now();
    let threads = (0..count)
        .map(|index| {
            let (target, fan, watch_path) = (target.clone(), fan.clone(), watch_path.clone());
            thread::Builder::new()
                .stack_size(WATCHER_STACK)
                .spawn(move || run_watcher(&target, index, &watch_path, &fan))
        })
        .collect::<io::Result<Vec<_>>>()?;
    while fan.ready.load(Ordering::Relaxed) + fan.failed.load(Ordering::Relaxed) < count
        && opening.elapsed() < OPEN_WATCHES_TIMEOUT
    {
        thread::sleep(Duration::from_millis(5));
    }
    let open_secs = opening.elapsed().as_secs_f64();
    let ready = fan.ready.load(Ordering::Relaxed);
    eprintln!("bench_client watchers: {ready}/{count} watches open in {open_secs:.2}s");
    if args.get("hold-secs").is_some() {
        println!("{}", json!({ "ready": ready, "open_secs": round3(open_secs) }));
        io::stdout().flush()?;
        hold(args)?;
    }
    let mut report = json!({ "watchers": count, "ready": ready, "failed": fan.failed.load(Ordering::Relaxed), "open_secs": round3(open_secs), "rounds": rounds });
    if rounds > 0 {
        let trigger = Target::from_args(args, "trigger-addr", "trigger-identity")?;
        merge(&mut report, run_rounds(&fan, &trigger, &path, rounds)?);
    }
    for socket in fan.sockets.lock().map_err(|_| "poisoned")?.iter() {
        let _ = socket.shutdown(Shutdown::Both);
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(report)
}

/// Sleeps `--hold-secs`, or less when `--release-file` appears.
fn hold(args: &Args) -> Result<()> {
    let until = Instant::now() + args.secs("hold-secs", 0.0)?;
    let release = args.get("release-file").map(PathBuf::from);
    while Instant::now() < until && !release.as_deref().is_some_and(Path::exists) {
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Per round: create one pod at the trigger address, wait until every open watcher saw it.
fn run_rounds(fan: &FanOut, trigger: &Target, path: &str, rounds: usize) -> Result<Value> {
    let mut conn = trigger.connect(0, Some(IO_TIMEOUT))?;
    let namespace = path
        .split('/')
        .skip_while(|s| *s != "namespaces")
        .nth(1)
        .ok_or("--path has no namespace")?;
    let ready = fan.ready.load(Ordering::Relaxed);
    let mut samples = Vec::new();
    let mut missed = 0usize;
    for round in 0..rounds {
        thread::sleep(Duration::from_millis(300));
        let name = format!("{}{round}", fan.name_prefix);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let sent_ns = fan.epoch.elapsed().as_nanos() as u64;
        let (head, body) = conn.request("POST", path, pod.to_string().as_bytes())?;
        if head.status != 201 {
            return Err(format!(
                "trigger POST answered {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        let deadline = Instant::now() + ROUND_TIMEOUT;
        let seen = &fan.seen[round];
        while seen.iter().filter(|t| t.load(Ordering::Relaxed) != 0).count() < ready
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(1));
        }
        for t in seen {
            match t.load(Ordering::Relaxed) {
                0 => missed += 1,
                at => samples.push(at.saturating_sub(sent_ns)),
            }
        }
        missed = missed.saturating_sub(seen.len() - ready); // watchers that never opened are not misses
    }
    let mut report = json!({ "samples": samples.len(), "missed": missed });
    merge(&mut report, percentiles_ms(samples, 1e6));
    Ok(report)
}

fn run_watcher(target: &Target, index: usize, watch_path: &str, fan: &FanOut) {
    let opened = target.connect(index, None).and_then(|mut conn| {
        conn.send("GET", watch_path, b"")?;
        let head = conn.read_head()?;
        if head.status != 200 {
            return Err(io::Error::other(format!("watch answered {}", head.status)));
        }
        Ok((conn, head))
    });
    let (mut conn, head) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if fan.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("bench_client watchers: a watch failed to open: {e}");
            }
            return;
        }
    };
    if let Ok(socket) = conn.socket_handle()
        && let Ok(mut sockets) = fan.sockets.lock()
    {
        sockets.push(socket);
    }
    fan.ready.fetch_add(1, Ordering::Relaxed);
    let mut lines = LineSplitter::default();
    let _ = conn.read_body(head.framing, |piece| {
        lines.feed(piece, |line| note_fan_out_event(fan, index, line));
        true
    });
}

fn note_fan_out_event(fan: &FanOut, index: usize, line: &[u8]) {
    if !contains(line, fan.name_prefix.as_bytes()) {
        return;
    }
    let Ok(event) = serde_json::from_slice::<Value>(line) else { return };
    let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default();
    let round = name.strip_prefix(&fan.name_prefix).and_then(|r| r.parse::<usize>().ok());
    if let (Some(round), Some("ADDED")) = (round, event["type"].as_str())
        && let Some(slot) = fan.seen.get(round).and_then(|r| r.get(index))
    {
        slot.store((fan.epoch.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
    }
}

/// Splits a watch body into newline-terminated events, across pieces.
#[derive(Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    fn feed(&mut self, mut piece: &[u8], mut on_line: impl FnMut(&[u8])) {
        while let Some(pos) = piece.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                on_line(&piece[..pos]);
            } else {
                self.partial.extend_from_slice(&piece[..pos]);
                on_line(&std::mem::take(&mut self.partial));
            }
            piece = &piece[pos + 1..];
        }
        self.partial.extend_from_slice(piece);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `metadata.resourceVersion` of a LIST of `path`.
fn list_resource_version(target: &Target, path: &str) -> Result<String> {
    let mut conn = target.connect(0, Some(IO_TIMEOUT))?;
    let (head, body) = conn.request("GET", path, b"")?;
    if head.status != 200 {
        return Err(format!("LIST {path} answered {}", head.status).into());
    }
    let list: Value = serde_json::from_slice(&body)?;
    list["metadata"]["resourceVersion"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| "the LIST has no resourceVersion".into())
}

// ---------------------------------------------------------------------------------------
// watch-count

/// One watch from the current version; counts events (not BOOKMARKs) until `--events`
/// arrived or `--timeout` passed.
fn watch_count(args: &Args) -> Result<Value> {
    let target = Target::from_args(args, "addr", "identity")?;
    let path = args.required("path")?;
    let wanted: u64 = args.number("events", 1000)?;
    let timeout = args.secs("timeout", 60.0)?;
    let rv = list_resource_version(&target, path)?;
    let mut conn = target.connect(0, None)?;
    conn.send("GET", &format!("{path}?watch=true&resourceVersion={rv}&timeoutSeconds=900"), b"")?;
    let head = conn.read_head()?;
    if head.status != 200 {
        return Err(format!("watch answered {}", head.status).into());
    }
    println!("{}", json!({ "ready": true, "resourceVersion": rv }));
    io::stdout().flush()?;
    let socket = conn.socket_handle()?;
    let opened = Instant::now();
    thread::spawn(move || {
        thread::sleep(timeout);
        let _ = socket.shutdown(Shutdown::Both);
    });
    let (mut events, mut first, mut last) = (0u64, None, opened);
    let mut lines = LineSplitter::default();
    let _ = conn.read_body(head.framing, |piece| {
        lines.feed(piece, |line| {
            if !contains(line, b"\"BOOKMARK\"") {
                events += 1;
                last = Instant::now();
                first.get_or_insert(last);
            }
        });
        events < wanted
    });
    let first = first.unwrap_or(last);
    Ok(json!({
        "events": events,
        "first_to_last_secs": round3((last - first).as_secs_f64()),
        "ready_to_last_secs": round3((last - opened).as_secs_f64()),
    }))
}

// ---------------------------------------------------------------------------------------
// write

/// POSTs (creates) or PUTs (replaces) `--count` ConfigMaps named `<prefix><i>`, as fast as
/// the server answers or paced at `--rate` writes per second.
fn write_objects(args: &Args) -> Result<Value> {
    let target = Target::from_args(args, "addr", "identity")?;
    let path = args.required("path")?.to_string();
    let method = args.get("method").unwrap_or("POST").to_string();
    let count: usize = args.number("count", 1000)?;
    let connections: usize = args.number("connections", 4)?;
    let prefix = args.get("prefix").unwrap_or("cm-").to_string();
    let filler = "x".repeat(args.number("bytes", 256)?);
    let tag = args.get("tag").unwrap_or("0").to_string();
    let namespace = path
        .split('/')
        .skip_while(|s| *s != "namespaces")
        .nth(1)
        .ok_or("--path has no namespace")?
        .to_string();
    let rate: f64 = args.number("rate", 0.0)?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|index| {
            let (target, next, path, method, prefix, filler, tag, namespace) = (
                target.clone(),
                next.clone(),
                path.clone(),
                method.clone(),
                prefix.clone(),
                filler.clone(),
                tag.clone(),
                namespace.clone(),
            );
            thread::spawn(move || -> (u64, u64) {
                let (mut ok, mut failed) = (0, 0);
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return (ok, failed);
                    }
                    if rate > 0.0 {
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let name = format!("{prefix}{i:05}");
                    let object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                                        "metadata": {"name": name, "namespace": namespace},
                                        "data": {"value": filler, "tag": tag}});
                    let url =
                        if method == "POST" { path.clone() } else { format!("{path}/{name}") };
                    if conn.is_none() {
                        conn = target.connect(index, Some(IO_TIMEOUT)).ok();
                    }
                    match conn
                        .as_mut()
                        .map(|c| c.request(&method, &url, object.to_string().as_bytes()))
                    {
                        Some(Ok((head, _))) => {
                            if (200..300).contains(&head.status) {
                                ok += 1;
                            } else {
                                failed += 1;
                            }
                            // A 503 Status from a proxy offline comes with `Connection: close`.
                            if head.close {
                                conn = None;
                            }
                        }
                        _ => {
                            failed += 1;
                            conn = None;
                        }
                    }
                }
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.join().map_err(|_| "a writer panicked")?;
        ok += o;
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(
        json!({ "method": method, "count": count, "ok": ok, "failed": failed, "secs": round3(secs), "per_sec": round3(ok as f64 / secs) }),
    )
}

// ---------------------------------------------------------------------------------------
// cold-start

/// Spawns the command after `--` (output to `--log`) and requests `--path` every
/// millisecond until a 200; the process is left running and its pid reported.
fn cold_start(args: &Args) -> Result<Value> {
    let target = Target::from_args(args, "addr", "identity")?;
    let path = args.required("path")?;
    let (program, rest) = args.rest.split_first().ok_or("cold-start needs -- CMD ARGS")?;
    let log = File::create(args.required("log")?)?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let mut attempts = 0u64;
    let mut first_connect_ms = None;
    loop {
        attempts += 1;
        if let Ok(mut conn) = target.connect(0, Some(IO_TIMEOUT)) {
            first_connect_ms.get_or_insert(started.elapsed().as_secs_f64() * 1e3);
            if let Ok((head, _)) = timed_get(&mut conn, path)
                && head.status == 200
            {
                break;
            }
        }
        if started.elapsed() > COLD_START_TIMEOUT {
            return Err(format!(
                "no 200 from {path} within {COLD_START_TIMEOUT:?} (pid {})",
                child.id()
            )
            .into());
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(json!({
        "pid": child.id(),
        "first_ok_ms": round3(started.elapsed().as_secs_f64() * 1e3),
        "first_connect_ms": first_connect_ms.map(round3),
        "attempts": attempts,
    }))
}

// ---------------------------------------------------------------------------------------
// identities

/// Issues `bench-<i>.crt/.key` (CN `bench-client-<i>`) from the CA in `--pki` and writes
/// `--out`: the entries of `<pki>/tls.json` followed by the new ones.
fn identities(args: &Args) -> Result<Value> {
    let pki = pki::Pki { dir: std::fs::canonicalize(args.required("pki")?)? };
    let count: usize = args.number("count", 10)?;
    let mut entries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(pki.path("tls.json"))?)?;
    let mut issued = Vec::new();
    for i in 0..count {
        let name = format!("bench-{i}");
        pki.issue_client(&name, &format!("bench-client-{i}"))?;
        let (cert, key) = (pki.path(&format!("{name}.crt")), pki.path(&format!("{name}.key")));
        entries.push(json!({ "cert": cert, "key": key }));
        issued.push(format!("{},{}", cert.display(), key.display()));
    }
    std::fs::write(args.required("out")?, serde_json::to_string_pretty(&entries)?)?;
    Ok(json!({ "identities": issued, "tls_config_entries": entries.len() }))
}

// ---------------------------------------------------------------------------------------
// numbers

/// p50/p90/p99/max of `samples` (in units that `per_ms` make one millisecond).
fn percentiles_ms(mut samples: Vec<u64>, per_ms: f64) -> Value {
    if samples.is_empty() {
        return json!({ "p50_ms": null, "p90_ms": null, "p99_ms": null, "max_ms": null });
    }
    samples.sort_unstable();
    let at = |q: f64| {
        round3(
            samples[((q * samples.len() as f64) as usize).min(samples.len() - 1)] as f64 / per_ms,
        )
    };
    json!({ "p50_ms": at(0.50), "p90_ms": at(0.90), "p99_ms": at(0.99), "max_ms": at(1.0) })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}
