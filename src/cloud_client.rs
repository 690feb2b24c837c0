//! A blocking one-shot HTTPS GET to the cloud apiserver, for helper threads (the cloud
//! prober; a key fetcher later): resolve, connect, TLS with a given identity, one request
//! with `Connection: close`, and the whole response up to a byte cap.
//!
//! Every failure is a typed [`CloudGetError`] naming the stage it happened in, so a caller
//! can tell a cloud that does not answer from a local fault (no file descriptors, no memory)
//! without reading messages back.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::body::BodyTracker;
use crate::http1::{self, HttpError, ResponseHead};
use crate::metrics::{ByteCount, Link};

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

impl CloudEndpoint {
    /// `GET path` with `headers` added, on a fresh connection; the body may hold at most
    /// `max_body` bytes.
    pub fn get(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        max_body: usize,
    ) -> Result<CloudResponse, CloudGetError> {
        let addr = self.resolve()?;
        let mut stream = self.connect(addr)?;
        let answer = Deadline::after(self.timeout);
        let request = self.request_bytes(path, headers);
        let sent = answer.arm(&stream.sock.socket).and_then(|()| stream.write_all(&request));
        sent.map_err(|e| io_failure(addr, Stage::Request, e, self.timeout))?;
        let mut reader = Reader { stream, addr, deadline: answer, buf: Vec::new() };
        let head = reader.read_head()?;
        let body = reader.read_body(&head, max_body)?;
        Ok(CloudResponse { addr, status: head.status, body })
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
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> Result<StreamOwned<ClientConnection, CountedSocket>, CloudGetError> {
        let deadline = Deadline::after(self.timeout);
        let fail = |stage, e| io_failure(addr, stage, e, self.timeout);
        let socket =
            TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| fail(Stage::Connect, e))?;
        let mut socket = CountedSocket { socket, bytes: ByteCount::new(Link::Cloud) };
        let mut tls = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(|error| CloudGetError::Tls { addr, error })?;
        while tls.is_handshaking() {
            deadline.arm(&socket.socket).map_err(|e| fail(Stage::Handshake, e))?;
            tls.complete_io(&mut socket).map_err(|e| fail(Stage::Handshake, e))?;
        }
        Ok(StreamOwned::new(tls, socket))
    }

    fn request_bytes(&self, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            host_header(&self.host, self.port)
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.into_bytes()
    }
}

/// A socket to the cloud whose bytes count in `/metrics` (added when it closes).
struct CountedSocket {
    socket: TcpStream,
    bytes: ByteCount,
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
struct Reader {
    stream: StreamOwned<ClientConnection, CountedSocket>,
    addr: SocketAddr,
    deadline: Deadline,
    buf: Vec<u8>,
}

impl Reader {
    /// Appends what the peer sends next to `buf`; `Ok(0)` at the end of the stream.
    fn fill(&mut self, stage: Stage) -> Result<usize, CloudGetError> {
        let mut chunk = [0u8; READ_CHUNK];
        let socket = &self.stream.sock.socket;
        let read = self.deadline.arm(socket).and_then(|()| self.stream.read(&mut chunk));
        match read {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
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

    fn read_body(
        &mut self,
        head: &ResponseHead,
        max_body: usize,
    ) -> Result<Vec<u8>, CloudGetError> {
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
                return Ok(body);
            }
            if self.fill(Stage::Body)? == 0 {
                return if tracker.until_close() {
                    Ok(body)
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
            let (tcp, _) = listener.accept().unwrap();
            let mut stream = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).unwrap_or(0) == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            answer(&mut stream, String::from_utf8(head).unwrap());
        });
        (port, handle)
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
    fn host_header_brackets_ipv6() {
        assert_eq!(host_header("::1", 6443), "[::1]:6443");
        assert_eq!(host_header("k8s", 443), "k8s:443");
    }
}
