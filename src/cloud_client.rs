//! Blocking HTTPS GETs to the cloud apiserver, for helper threads: resolve, connect, TLS
//! with a given identity, and the whole response up to a byte cap.
//!
//! - [`CloudEndpoint::get`] is one-shot (`Connection: close`), for rare fetches (the
//!   service-account keys).
//! - [`KeptConnection`] keeps its connection open between GETs (HTTP/1.1 keep-alive, as
//!   client-go does), for the cloud prober: a steady probe costs one small request and
//!   answer instead of a TCP and TLS handshake. Only an answer with a known length and no
//!   `Connection: close` leaves the connection reusable. A kept connection the cloud closed
//!   while it sat idle (closed or reset before any byte of the answer) is retried once on a
//!   new one, as the reactor's pool does; any other failure closes it and is returned.
//!
//! Every failure is a typed [`CloudGetError`] naming the stage it happened in, so a caller
//! can tell a cloud that does not answer from a local fault (no file descriptors, no memory)
//! without reading messages back. Bytes count in `/metrics` at the end of each exchange.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::body::BodyTracker;
use crate::http1::{self, HttpError, ResponseHead};
use crate::metrics::{ByteCount, Link, OpenHelperConnection};

const READ_CHUNK: usize = 16 * 1024;

/// `Host` header value for the cloud apiserver (IPv6 literals in brackets).
pub fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Where and how to reach the cloud apiserver.
#[derive(Clone)]
pub struct CloudEndpoint {
    pub host: String,
    pub port: u16,
    pub server_name: ServerName<'static>,
    /// The identity (client certificate, or none) and the trust in the cloud's certificate.
    pub config: Arc<ClientConfig>,
    /// Bounds connecting plus the TLS handshake, and separately the whole answer.
    pub timeout: Duration,
}

/// A complete response.
#[derive(Debug)]
pub struct CloudResponse {
    /// The address that answered.
    pub addr: SocketAddr,
    pub status: u16,
    /// The payload (de-chunked).
    pub body: Vec<u8>,
}

/// Where in the exchange a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Resolve,
    Connect,
    Handshake,
    Request,
    Head,
    Body,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "resolving the name",
            Stage::Connect => "connecting",
            Stage::Handshake => "the TLS handshake",
            Stage::Request => "sending the request",
            Stage::Head => "waiting for the response head",
            Stage::Body => "reading the response body",
        })
    }
}

#[derive(Debug)]
pub enum CloudGetError {
    /// The name did not resolve (`source` is `None` when it resolved to no address).
    Resolve {
        host: String,
        source: Option<io::Error>,
    },
    Connect {
        addr: SocketAddr,
        kind: io::ErrorKind,
        detail: String,
    },
    Tls {
        addr: SocketAddr,
        error: rustls::Error,
    },
    Timeout {
        addr: SocketAddr,
        stage: Stage,
        limit: Duration,
    },
    /// The connection ended (closed or reset) before a whole response head arrived.
    ClosedBeforeHead {
        addr: SocketAddr,
        stage: Stage,
        kind: io::ErrorKind,
    },
    /// Not HTTP, bad framing, or a body that ended early.
    BadResponse {
        addr: SocketAddr,
        reason: String,
    },
    BodyTooLarge {
        addr: SocketAddr,
        limit: usize,
    },
    /// This process ran out of something (file descriptors, memory, buffers): a local
    /// fault, not a cloud outage.
    LocalResource {
        stage: Stage,
        errno: i32,
        detail: String,
    },
}

impl fmt::Display for CloudGetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudGetError::Resolve { host, source: Some(e) } => {
                write!(f, "cannot resolve {host}: {e}")
            }
            CloudGetError::Resolve { host, source: None } => write!(f, "{host} has no address"),
            CloudGetError::Connect { addr, kind, detail } => {
                write!(f, "cannot connect to {addr} ({kind}): {detail}")
            }
            CloudGetError::Tls { addr, error } => write!(f, "TLS with {addr} failed: {error}"),
            CloudGetError::Timeout { addr, stage, limit } => {
                write!(f, "{addr} timed out after {}s {stage}", limit.as_secs_f32())
            }
            CloudGetError::ClosedBeforeHead { addr, stage, kind } => {
                write!(f, "{addr} ended the connection ({kind}) while {stage}")
            }
            CloudGetError::BadResponse { addr, reason } => {
                write!(f, "bad response from {addr}: {reason}")
            }
            CloudGetError::BodyTooLarge { addr, limit } => {
                write!(f, "response body from {addr} is over {limit} bytes")
            }
            CloudGetError::LocalResource { stage, errno, detail } => {
                write!(f, "local fault while {stage} (errno {errno}): {detail}")
            }
        }
    }
}

impl std::error::Error for CloudGetError {}

impl CloudGetError {
    /// Whether this failure is this process's own (see [`CloudGetError::LocalResource`]).
    pub fn is_local(&self) -> bool {
        matches!(self, CloudGetError::LocalResource { .. })
    }
}

/// The errno of an error that means this process, not the peer, ran out of a resource.
fn local_errno(error: &io::Error) -> Option<i32> {
    error
        .raw_os_error()
        .filter(|errno| [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS].contains(errno))
}

/// Classifies an I/O failure at `stage` of the exchange with `addr`.
fn io_failure(addr: SocketAddr, stage: Stage, error: io::Error, limit: Duration) -> CloudGetError {
    if let Some(errno) = local_errno(&error) {
        return CloudGetError::LocalResource { stage, errno, detail: error.to_string() };
    }
    let tls = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(tls) = tls {
        return CloudGetError::Tls { addr, error: tls.clone() };
    }
    let kind = error.kind();
    match (stage, kind) {
        (_, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            CloudGetError::Timeout { addr, stage, limit }
        }
        (Stage::Resolve | Stage::Connect, _) => {
            CloudGetError::Connect { addr, kind, detail: error.to_string() }
        }
        (Stage::Body, _) => {
            CloudGetError::BadResponse { addr, reason: format!("body cut short: {error}") }
        }
        _ => CloudGetError::ClosedBeforeHead { addr, stage, kind },
    }
}

/// A point in time after which an exchange stage has failed.
struct Deadline {
    at: Instant,
    limit: Duration,
}

impl Deadline {
    fn after(limit: Duration) -> Deadline {
        Deadline { at: Instant::now() + limit, limit }
    }

    /// Sets the socket's timeouts to what is left; a zero remainder is a timeout error
    /// (a zero socket timeout would mean "none").
    fn arm(&self, socket: &TcpStream) -> io::Result<()> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        socket.set_write_timeout(Some(left))
    }
}

/// What the request asks of the connection after the answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persistence {
    Close,
    KeepAlive,
}

impl CloudEndpoint {
    /// `GET path` with `headers` added, on a fresh connection closed after it; the body may
    /// hold at most `max_body` bytes.
    pub fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        max_body: usize,
    ) -> Result<CloudResponse, CloudGetError> {
        let request = self.request_bytes(path, headers, Persistence::Close);
        let exchange = self.open()?.exchange(&request, max_body, self.timeout);
        exchange.map(|(response, _)| response).map_err(|failure| failure.error)
    }

    /// A new connection: resolved, connected and past the TLS handshake.
    fn open(&self) -> Result<Connection, CloudGetError> {
        let addr = self.resolve()?;
        let stream = self.connect(addr)?;
        Ok(Connection { stream, addr })
    }

    fn resolve(&self) -> Result<SocketAddr, CloudGetError> {
        let host = self.host.clone();
        match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(mut addrs) => addrs.next().ok_or(CloudGetError::Resolve { host, source: None }),
            Err(e) => Err(match local_errno(&e) {
                Some(errno) => CloudGetError::LocalResource {
                    stage: Stage::Resolve,
                    errno,
                    detail: e.to_string(),
                },
                None => CloudGetError::Resolve { host, source: Some(e) },
            }),
        }
    }

    /// TCP connect and the TLS handshake, both within `timeout`.
    fn connect(&self, addr: SocketAddr) -> Result<TlsStream, CloudGetError> {
        let deadline = Deadline::after(self.timeout);
        let fail = |stage, e| io_failure(addr, stage, e, self.timeout);
        let socket =
            TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| fail(Stage::Connect, e))?;
        let mut socket = CountedSocket {
            socket,
            bytes: ByteCount::new(Link::Cloud),
            _open: OpenHelperConnection::new(),
        };
        let mut tls = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|error| CloudGetError::Tls { addr, error })?;
        while tls.is_handshaking() {
            deadline.arm(&socket.socket).map_err(|e| fail(Stage::Handshake, e))?;
            tls.complete_io(&mut socket).map_err(|e| fail(Stage::Handshake, e))?;
        }
        Ok(StreamOwned::new(tls, socket))
    }

    fn request_bytes(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        persistence: Persistence,
    ) -> Vec<u8> {
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", host_header(&self.host, self.port));
        // HTTP/1.1 connections persist unless a side says otherwise.
        if persistence == Persistence::Close {
            request.push_str("Connection: close\r\n");
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.into_bytes()
    }
}

/// GETs to one cloud endpoint over a connection kept open between them.
pub struct KeptConnection {
    endpoint: CloudEndpoint,
    /// The connection the last exchange left reusable.
    idle: Option<Connection>,
}

impl KeptConnection {
    /// No connection is opened until the first GET.
    pub fn new(endpoint: CloudEndpoint) -> KeptConnection {
        KeptConnection { endpoint, idle: None }
    }

    /// GETs from now on present `config`'s identity; the open connection, made with the
    /// old one, is closed.
    pub fn use_config(&mut self, config: Arc<ClientConfig>) {
        self.endpoint.config = config;
        self.close();
    }

    /// Closes the kept connection: the next GET connects afresh (through a load balancer,
    /// perhaps to another apiserver).
    pub fn close(&mut self) {
        self.idle = None;
    }

    /// `GET path` with `headers` added, on the kept connection when there is one (else, or
    /// when the cloud closed it while idle, on a new one); the body may hold at most
    /// `max_body` bytes. A failure closes the connection: the next GET connects afresh.
    pub fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        max_body: usize,
    ) -> Result<CloudResponse, CloudGetError> {
        let request = self.endpoint.request_bytes(path, headers, Persistence::KeepAlive);
        let timeout = self.endpoint.timeout;
        if let Some(kept) = self.idle.take() {
            match kept.exchange(&request, max_body, timeout) {
                Ok((response, reusable)) => {
                    self.idle = reusable;
                    return Ok(response);
                }
                Err(failure) if failure.is_stale() => {
                    log::debug!("kept connection to the cloud was closed while idle: reconnecting")
                }
                Err(failure) => return Err(failure.error),
            }
        }
        let (response, reusable) =
            self.endpoint.open()?.exchange(&request, max_body, timeout).map_err(|f| f.error)?;
        self.idle = reusable;
        Ok(response)
    }
}

type TlsStream = StreamOwned<ClientConnection, CountedSocket>;

/// An open connection to the cloud, past the TLS handshake.
struct Connection {
    stream: TlsStream,
    addr: SocketAddr,
}

/// A failed exchange.
struct Failure {
    error: CloudGetError,
    /// Some of the answer had arrived.
    answered: bool,
}

impl Failure {
    /// The connection was closed or reset before any byte of the answer: on a connection
    /// that sat idle, the cloud closed it meanwhile, and the GET may be sent again.
    fn is_stale(&self) -> bool {
        !self.answered && matches!(self.error, CloudGetError::ClosedBeforeHead { .. })
    }
}

impl Connection {
    /// Sends `request` and reads the whole answer within `limit`; the connection comes
    /// back when it may carry another exchange.
    fn exchange(
        mut self,
        request: &[u8],
        max_body: usize,
        limit: Duration,
    ) -> Result<(CloudResponse, Option<Connection>), Failure> {
        let result = self.send_and_read(request, max_body, limit);
        self.stream.sock.bytes.publish();
        let (response, reusable) = result?;
        Ok((response, reusable.then_some(self)))
    }

    /// The answer, and whether the connection may carry another exchange.
    fn send_and_read(
        &mut self,
        request: &[u8],
        max_body: usize,
        limit: Duration,
    ) -> Result<(CloudResponse, bool), Failure> {
        let (addr, deadline) = (self.addr, Deadline::after(limit));
        let stream = &mut self.stream;
        let sent = deadline
            .arm(&stream.sock.socket)
            .and_then(|()| stream.write_all(request))
            .and_then(|()| stream.flush());
        sent.map_err(|e| Failure {
            error: io_failure(addr, Stage::Request, e, limit),
            answered: false,
        })?;
        let mut reader = Reader { stream, addr, deadline, buf: Vec::new(), answered: false };
        let answer = reader.read_head().and_then(|head| {
            let (body, reusable) = reader.read_body(&head, max_body)?;
            Ok((CloudResponse { addr, status: head.status, body }, reusable))
        });
        answer.map_err(|error| Failure { error, answered: reader.answered })
    }
}

/// A socket to the cloud whose bytes count in `/metrics` (added at the end of each
/// exchange, and when it closes).
struct CountedSocket {
    socket: TcpStream,
    bytes: ByteCount,
    _open: OpenHelperConnection,
}

impl Read for CountedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.bytes.received(n);
        Ok(n)
    }
}

impl Write for CountedSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.socket.write(buf)?;
        self.bytes.sent(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

/// The response side of one exchange: bytes read but not yet consumed, under a deadline.
struct Reader<'a> {
    stream: &'a mut TlsStream,
    addr: SocketAddr,
    deadline: Deadline,
    buf: Vec<u8>,
    /// Some of the answer has arrived.
    answered: bool,
}

impl Reader<'_> {
    /// Appends what the peer sends next to `buf`; `Ok(0)` at the end of the stream.
    fn fill(&mut self, stage: Stage) -> Result<usize, CloudGetError> {
        let mut chunk = [0u8; READ_CHUNK];
        let socket = &self.stream.sock.socket;
        let read = self.deadline.arm(socket).and_then(|()| self.stream.read(&mut chunk));
        match read {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.answered |= n > 0;
                Ok(n)
            }
            // A peer that closes without close_notify: rustls reports it as an error.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(io_failure(self.addr, stage, e, self.deadline.limit)),
        }
    }

    fn bad(&self, reason: impl fmt::Display) -> CloudGetError {
        CloudGetError::BadResponse { addr: self.addr, reason: reason.to_string() }
    }

    /// The final response head (interim `1xx` heads are skipped); its bytes leave `buf`.
    fn read_head(&mut self) -> Result<ResponseHead, CloudGetError> {
        loop {
            match http1::parse_response(&self.buf) {
                Ok(Some((head, length))) => {
                    self.buf.drain(..length);
                    if !(100..200).contains(&head.status) {
                        return Ok(head);
                    }
                }
                Ok(None) => {
                    if self.fill(Stage::Head)? == 0 {
                        let (addr, stage) = (self.addr, Stage::Head);
                        let kind = io::ErrorKind::UnexpectedEof;
                        return Err(CloudGetError::ClosedBeforeHead { addr, stage, kind });
                    }
                }
                Err(e) => return Err(self.bad(e)),
            }
        }
    }

    /// The payload, and whether the connection may carry another exchange: only after a
    /// body of known length, without `Connection: close`, and with nothing sent past it.
    fn read_body(
        &mut self,
        head: &ResponseHead,
        max_body: usize,
    ) -> Result<(Vec<u8>, bool), CloudGetError> {
        let framing = head.framing("GET").map_err(|e| self.bad(e))?;
        let mut tracker = BodyTracker::new(framing);
        let mut body = Vec::new();
        loop {
            let pending = std::mem::take(&mut self.buf);
            let progress = tracker
                .feed(&pending, &mut |payload| body.extend_from_slice(payload))
                .map_err(|e: HttpError| self.bad(e))?;
            if body.len() > max_body {
                return Err(CloudGetError::BodyTooLarge { addr: self.addr, limit: max_body });
            }
            if progress.done {
                let reusable = head.keep_alive() && progress.consumed == pending.len();
                return Ok((body, reusable));
            }
            if self.fill(Stage::Body)? == 0 {
                return if tracker.until_close() {
                    Ok((body, false))
                } else {
                    Err(self.bad(format!("connection closed {} bytes into the body", body.len())))
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};
    use std::thread::{self, JoinHandle};

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{RootCertStore, ServerConfig, ServerConnection};

    type ServerStream = StreamOwned<ServerConnection, TcpStream>;

    /// A self-signed `localhost` certificate: the server's config and a client trusting it.
    fn pki() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(certified.cert.der().to_vec());
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        let server = ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], PrivateKeyDer::Pkcs8(key))
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        (Arc::new(server), client_config(roots))
    }

    fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
        let config = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    fn endpoint(port: u16, config: Arc<ClientConfig>) -> CloudEndpoint {
        CloudEndpoint {
            host: "localhost".to_string(),
            port,
            server_name: ServerName::try_from("localhost").unwrap(),
            config,
            timeout: Duration::from_secs(5),
        }
    }

    /// Serves one TLS connection on loopback: reads the request head, hands it to `answer`.
    fn serve_once(
        config: Arc<ServerConfig>,
        answer: impl FnOnce(&mut ServerStream, String) + Send + 'static,
    ) -> (u16, JoinHandle<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let mut stream = accept(&listener, &config);
            if let Some(head) = read_request_head(&mut stream) {
                answer(&mut stream, head);
            }
        });
        (port, handle)
    }

    fn accept(listener: &TcpListener, config: &Arc<ServerConfig>) -> ServerStream {
        let (tcp, _) = listener.accept().unwrap();
        StreamOwned::new(ServerConnection::new(config.clone()).unwrap(), tcp)
    }

    /// The next request head; `None` once the client has closed the connection.
    fn read_request_head(stream: &mut ServerStream) -> Option<String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap_or(0) == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(String::from_utf8(head).unwrap())
    }

    /// What a scripted server does with a connection once it has sent its answers.
    #[derive(Clone, Copy)]
    enum Then {
        /// Closes it (a cloud closing an idle connection).
        Close,
        /// Reads what more the client sends, answering nothing, until the client closes.
        Linger,
    }

    /// One connection of a scripted server: the answers to its requests in turn, then.
    type Script = (&'static [&'static [u8]], Then);

    /// Serves `scripts.len()` TLS connections one after another; the server thread returns
    /// how many requests each connection carried.
    fn serve_scripts(
        config: Arc<ServerConfig>,
        scripts: &'static [Script],
    ) -> (u16, JoinHandle<Vec<usize>>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for (answers, then) in scripts {
                let mut stream = accept(&listener, &config);
                let mut count = 0;
                for answer in answers.iter() {
                    let Some(head) = read_request_head(&mut stream) else { break };
                    assert!(!head.contains("Connection: close"), "{head}");
                    count += 1;
                    stream.write_all(answer).unwrap();
                    stream.flush().unwrap();
                }
                match then {
                    Then::Close => replying(b"")(&mut stream, String::new()),
                    Then::Linger => {
                        while read_request_head(&mut stream).is_some() {
                            count += 1;
                        }
                    }
                }
                requests.push(count);
            }
            requests
        });
        (port, handle)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// A kept connection to a scripted server; GETs time out after 500 ms.
    fn kept(scripts: &'static [Script]) -> (KeptConnection, JoinHandle<Vec<usize>>) {
        let (server, client) = pki();
        let (port, handle) = serve_scripts(server, scripts);
        let mut target = endpoint(port, client);
        target.timeout = Duration::from_millis(500);
        (KeptConnection::new(target), handle)
    }

    fn get_ok(kept: &mut KeptConnection) -> Vec<u8> {
        let response = kept.get("/readyz", &[], 100).unwrap();
        assert_eq!(response.status, 200);
        response.body
    }

    /// Answers every request with the raw bytes `response`, then closes cleanly.
    fn replying(response: &'static [u8]) -> impl FnOnce(&mut ServerStream, String) + Send {
        move |stream, _| {
            stream.write_all(response).unwrap();
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
    }

    fn get_from(response: &'static [u8], max_body: usize) -> Result<CloudResponse, CloudGetError> {
        let (server, client) = pki();
        let (port, handle) = serve_once(server, replying(response));
        let result = endpoint(port, client).get("/readyz", &[], max_body);
        handle.join().unwrap();
        result
    }

    #[test]
    fn content_length_response_and_the_request_sent() {
        let (server, client) = pki();
        let (tx, rx) = std::sync::mpsc::channel();
        let (port, handle) = serve_once(server, move |stream, head| {
            tx.send(head).unwrap();
            replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok")(
                stream,
                String::new(),
            )
        });
        let response = endpoint(port, client)
            .get("/readyz?verbose", &[("Authorization", "Bearer t")], 100)
            .unwrap();
        handle.join().unwrap();
        assert_eq!((response.status, response.body.as_slice()), (200, &b"ok"[..]));
        assert_eq!(response.addr.port(), port);
        let head = rx.recv().unwrap();
        assert!(head.starts_with("GET /readyz?verbose HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nHost: localhost:{port}\r\n")), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert!(head.contains("\r\nAuthorization: Bearer t\r\n"), "{head}");
    }

    #[test]
    fn chunked_and_until_close_bodies() {
        let chunked = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n\
                        3\r\n[-]\r\n5\r\netcd \r\n0\r\n\r\n";
        let response = get_from(chunked, 100).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (500, &b"[-]etcd "[..]));
        let until_close = b"HTTP/1.1 503 Service Unavailable\r\n\r\nno backend";
        let response = get_from(until_close, 100).unwrap();
        assert_eq!((response.status, response.body.as_slice()), (503, &b"no backend"[..]));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(get_from(interim, 0).unwrap().status, 204);
    }

    #[test]
    fn body_over_the_cap_is_refused() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
        let error = get_from(response, 9).unwrap_err();
        assert!(matches!(error, CloudGetError::BodyTooLarge { limit: 9, .. }), "{error}");
        assert!(get_from(response, 10).is_ok());
    }

    #[test]
    fn malformed_and_truncated_responses() {
        let error = get_from(b"\x00\x01garbage\r\n\r\n", 100).unwrap_err();
        assert!(matches!(error, CloudGetError::BadResponse { .. }), "{error}");
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234";
        let error = get_from(short, 100).unwrap_err();
        assert!(matches!(error, CloudGetError::BadResponse { .. }), "{error}");
        let error = get_from(b"HTTP/1.1 200", 100).unwrap_err();
        assert!(
            matches!(error, CloudGetError::ClosedBeforeHead { stage: Stage::Head, .. }),
            "{error}"
        );
    }

    #[test]
    fn untrusted_certificate_is_a_tls_error() {
        let (server, _) = pki();
        let (port, handle) = serve_once(server, |_, _| {});
        let error =
            endpoint(port, client_config(RootCertStore::empty())).get("/", &[], 0).unwrap_err();
        handle.join().unwrap();
        assert!(matches!(error, CloudGetError::Tls { .. }), "{error}");
    }

    #[test]
    fn silent_peer_times_out_in_the_handshake() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut target = endpoint(port, pki().1);
        target.timeout = Duration::from_millis(200);
        let error = target.get("/", &[], 0).unwrap_err();
        assert!(matches!(error, CloudGetError::Timeout { stage: Stage::Handshake, .. }), "{error}");
        drop(listener);
    }

    #[test]
    fn nothing_listening_is_a_refused_connect() {
        let port =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port();
        let error = endpoint(port, pki().1).get("/", &[], 0).unwrap_err();
        assert!(
            matches!(error, CloudGetError::Connect { kind: io::ErrorKind::ConnectionRefused, .. }),
            "{error}"
        );
        assert!(!error.is_local());
    }

    #[test]
    fn exhausted_local_resources_are_local_faults() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let limit = Duration::from_secs(1);
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
            let error =
                io_failure(addr, Stage::Connect, io::Error::from_raw_os_error(errno), limit);
            assert!(error.is_local(), "{errno}: {error}");
        }
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(!io_failure(addr, Stage::Connect, refused, limit).is_local());
        let reset = io::Error::from_raw_os_error(libc::ECONNRESET);
        let error = io_failure(addr, Stage::Handshake, reset, limit);
        assert!(matches!(error, CloudGetError::ClosedBeforeHead { .. }), "{error}");
    }

    #[test]
    fn two_gets_share_one_kept_connection() {
        const SCRIPTS: &[Script] = &[(&[OK, OK], Then::Close)];
        let (mut kept, server) = kept(SCRIPTS);
        assert_eq!(get_ok(&mut kept), b"ok");
        assert!(kept.idle.is_some(), "the connection was not kept");
        assert_eq!(get_ok(&mut kept), b"ok");
        drop(kept);
        assert_eq!(server.join().unwrap(), [2], "requests per connection");
    }

    /// `lite_apiserver_upstream_bytes_total`, (received, sent), as `/metrics` shows it.
    fn cloud_bytes() -> (u64, u64) {
        let text = crate::metrics::Metrics::default().render();
        let value = |direction| {
            let series =
                format!("lite_apiserver_upstream_bytes_total{{direction=\"{direction}\"}} ");
            text.lines().find_map(|line| line.strip_prefix(&series)?.parse().ok()).unwrap()
        };
        (value("received"), value("sent"))
    }

    #[test]
    fn a_kept_connection_counts_its_bytes_at_each_exchange() {
        const SCRIPTS: &[Script] = &[(&[OK, OK], Then::Close)];
        let (mut kept, server) = kept(SCRIPTS);
        for round in 0..2 {
            let before = cloud_bytes();
            get_ok(&mut kept);
            let after = cloud_bytes();
            // Other tests may add to the process-wide totals meanwhile, never take away.
            assert!(after.0 >= before.0 + OK.len() as u64, "#{round}: {before:?} {after:?}");
            assert!(after.1 >= before.1 + b"GET /readyz".len() as u64, "#{round}");
        }
        drop(kept);
        server.join().unwrap();
    }

    #[test]
    fn a_connection_closed_while_idle_is_retried_on_a_new_one() {
        const SCRIPTS: &[Script] = &[(&[OK], Then::Close), (&[OK, OK], Then::Close)];
        let (mut kept, server) = kept(SCRIPTS);
        get_ok(&mut kept);
        get_ok(&mut kept);
        get_ok(&mut kept);
        drop(kept);
        assert_eq!(server.join().unwrap(), [1, 2], "requests per connection");
    }

    #[test]
    fn answers_that_end_the_connection_are_not_kept() {
        const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
        const UNTIL_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\n\r\nok";
        // Lingering, the first server counts a request sent after its `Connection: close`.
        const SCRIPTS: &[Script] =
            &[(&[CLOSE], Then::Linger), (&[UNTIL_CLOSE], Then::Close), (&[OK], Then::Close)];
        let (mut kept, server) = kept(SCRIPTS);
        assert_eq!(get_ok(&mut kept), b"ok");
        assert!(kept.idle.is_none(), "kept after Connection: close");
        assert_eq!(get_ok(&mut kept), b"ok");
        assert!(kept.idle.is_none(), "kept after a body read to the close");
        assert_eq!(get_ok(&mut kept), b"ok");
        drop(kept);
        assert_eq!(server.join().unwrap(), [1, 1, 1], "requests per connection");
    }

    #[test]
    fn a_timeout_on_the_kept_connection_is_not_retried_and_closes_it() {
        const SCRIPTS: &[Script] = &[(&[OK], Then::Linger), (&[OK], Then::Close)];
        let (mut kept, server) = kept(SCRIPTS);
        get_ok(&mut kept);
        let error = kept.get("/readyz", &[], 100).unwrap_err();
        assert!(matches!(error, CloudGetError::Timeout { stage: Stage::Head, .. }), "{error}");
        assert!(kept.idle.is_none());
        get_ok(&mut kept);
        drop(kept);
        assert_eq!(server.join().unwrap(), [2, 1], "requests per connection");
    }

    #[test]
    fn a_connection_closed_mid_answer_is_not_retried() {
        const SCRIPTS: &[Script] = &[(&[OK, b"HTTP/1.1 200"], Then::Close)];
        let (mut kept, server) = kept(SCRIPTS);
        get_ok(&mut kept);
        let error = kept.get("/readyz", &[], 100).unwrap_err();
        assert!(matches!(error, CloudGetError::ClosedBeforeHead { .. }), "{error}");
        assert!(kept.idle.is_none());
        assert_eq!(server.join().unwrap(), [2], "requests per connection");
    }

    #[test]
    fn host_header_brackets_ipv6() {
        assert_eq!(host_header("::1", 6443), "[::1]:6443");
        assert_eq!(host_header("k8s", 443), "k8s:443");
    }
}
