//! A small blocking HTTPS/1.1 client on rustls for the tests: keep-alive requests, watch
//! streams read event by event, upgraded tunnels and raw bytes. Every read and write runs
//! under a deadline, so a silent server makes a call fail instead of hanging the test.

use std::io::{self, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::pki::Pki;
use super::wire::{ChunkDecoder, Framing, Head, Response, framing, parse_head};

/// Deadline for one whole request/response exchange unless changed with [`Client::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The name the test certificates are issued for.
const SERVER_NAME: &str = "localhost";

/// An HTTPS client for `127.0.0.1:<port>` that reuses its connection while the server allows.
pub struct Client {
    config: Arc<ClientConfig>,
    port: u16,
    conn: Option<Conn>,
    connections_opened: usize,
    timeout: Duration,
}

impl Client {
    /// Trusts the PKI's CA; presents no client certificate.
    pub fn anonymous(pki: &Pki, port: u16) -> Client {
        Client::new(tls_config(pki, None), port)
    }

    /// Trusts the PKI's CA; presents `<name>.crt`/`<name>.key` from the PKI directory.
    pub fn with_cert(pki: &Pki, port: u16, name: &str) -> Client {
        Client::new(tls_config(pki, Some(name)), port)
    }

    fn new(config: Arc<ClientConfig>, port: u16) -> Client {
        Client { config, port, conn: None, connections_opened: 0, timeout: DEFAULT_TIMEOUT }
    }

    /// Changes the deadline of each exchange.
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// How many TCP+TLS connections this client has opened so far.
    pub fn connections_opened(&self) -> usize {
        self.connections_opened
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn try_get(&mut self, path: &str) -> io::Result<Response> {
        self.try_request("GET", path, &[], b"")
    }

    /// Sends one request and reads the whole response; panics on any I/O or protocol error.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path} on port {} failed: {e}", self.port))
    }

    /// Sends one request and reads the whole response. `Content-Length` is added unless the
    /// caller set `Content-Length` or `Transfer-Encoding` (then `body` must be framed already).
    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let fresh = self.conn.is_none();
        match self.exchange(method, path, headers, body) {
            // Seen once in CI on a busy machine: a GET on a brand-new connection to a freshly
            // started proxy was reset before any answer, with nothing in the proxy's log
            // (the output is now captured in full, see `Proc::final_output`). A GET is safe
            // to send again, as client-go's retrying callers would; say so in the output.
            Err(e) if fresh && method == "GET" && e.kind() == io::ErrorKind::ConnectionReset => {
                eprintln!(
                    "GET {path}: new connection to port {} reset ({e}); trying once more",
                    self.port
                );
                std::thread::sleep(Duration::from_millis(100));
                self.exchange(method, path, headers, body)
            }
            result => result,
        }
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connection()?;
        let sent = conn.send_request(method, path, self.port, headers, body);
        // A server may answer early (e.g. an error) and close while the body is still being
        // written: report its answer rather than the broken pipe, as curl does.
        let head = match conn.read_final_head(deadline) {
            Ok(head) => head,
            Err(read_error) => return Err(sent.err().unwrap_or(read_error)),
        };
        let framing = framing(&head, method)?;
        let body = conn.read_body(framing, deadline)?;
        let client_closes = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("connection") && v.contains("close"));
        let reusable =
            framing != Framing::UntilClose && !head.headers.has_token("connection", "close");
        if reusable && !client_closes && sent.is_ok() {
            self.conn = Some(conn);
        }
        Ok(Response { status: head.status, headers: head.headers, body })
    }

    /// Opens a watch on `path` (which should carry `watch=true`); panics unless it answers 200.
    pub fn watch(&mut self, path: &str) -> WatchStream {
        self.try_watch(path, &[]).unwrap_or_else(|e| panic!("watch {path} failed: {e}"))
    }

    /// Sends a GET and reads only the response head, leaving the body to be read
    /// incrementally (e.g. to play a client that stops reading); panics unless 200.
    pub fn stream(&mut self, path: &str) -> WatchStream {
        self.try_watch(path, &[]).unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
    }

    /// Opens a watch (or any streamed GET); a non-200 answer is returned as `Err` with the
    /// status and body.
    pub fn try_watch(&mut self, path: &str, headers: &[(&str, &str)]) -> io::Result<WatchStream> {
        let deadline = Instant::now() + self.timeout;
        let mut conn = self.connection()?;
        conn.send_request("GET", path, self.port, headers, b"")?;
        let head = conn.read_final_head(deadline)?;
        let framing = framing(&head, "GET")?;
        if head.status != 200 {
            let body = conn.read_body(framing, deadline).unwrap_or_default();
            return Err(io::Error::other(format!(
                "watch answered {}: {}",
                head.status,
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(WatchStream {
            conn,
            head,
            framing,
            decoder: ChunkDecoder::default(),
            lines: Vec::new(),
            end: None,
        })
    }

    /// Takes back the connection of a stream that ended cleanly and may be kept alive, so
    /// the next request (a re-watch) goes on it, as Go's transport does; false otherwise.
    pub fn take_back(&mut self, stream: WatchStream) -> bool {
        let reusable = stream.end == Some(StreamEnd::Clean)
            && stream.framing != Framing::UntilClose
            && !stream.head.headers.has_token("connection", "close");
        if reusable {
            self.conn = Some(stream.conn);
        }
        reusable
    }

    /// Sends an upgrade request; returns the response head (with any body it had, for a
    /// refusal) and, on `101`, the connection as a raw tunnel.
    pub fn upgrade(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (Response, Option<Tunnel>) {
        let deadline = Instant::now() + self.timeout;
        let result: io::Result<_> = (|| {
            let mut conn = self.connection()?;
            conn.send_request(method, path, self.port, headers, b"")?;
            let head = conn.read_head(deadline)?;
            if head.status == 101 {
                let response = Response { status: 101, headers: head.headers, body: Vec::new() };
                return Ok((response, Some(Tunnel { conn })));
            }
            let body = conn.read_body(framing(&head, method)?, deadline)?;
            Ok((Response { status: head.status, headers: head.headers, body }, None))
        })();
        result.unwrap_or_else(|e| panic!("upgrade {method} {path} failed: {e}"))
    }

    /// Writes `bytes` as-is on a new connection and reads one response.
    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<Response> {
        let deadline = Instant::now() + self.timeout;
        self.conn = None;
        let mut conn = self.connection()?;
        conn.send(bytes)?;
        let head = conn.read_final_head(deadline)?;
        let body = conn.read_body(framing(&head, "GET")?, deadline)?;
        Ok(Response { status: head.status, headers: head.headers, body })
    }

    /// Opens a connection and completes the TLS handshake without sending a request.
    pub fn connect(&mut self) -> io::Result<()> {
        self.conn = None;
        let conn = self.connection()?;
        self.conn = Some(conn);
        Ok(())
    }

    /// The kept-alive connection, or a new one.
    fn connection(&mut self) -> io::Result<Conn> {
        if let Some(conn) = self.conn.take() {
            return Ok(conn);
        }
        self.connections_opened += 1;
        Conn::open(self.config.clone(), self.port, self.timeout)
    }
}

/// A response body read incrementally: a watch, one newline-delimited JSON event at a time,
/// or any streamed body.
pub struct WatchStream {
    conn: Conn,
    pub head: Head,
    framing: Framing,
    decoder: ChunkDecoder,
    /// Decoded payload not yet returned as events.
    lines: Vec<u8>,
    /// How the stream ended, once it has.
    end: Option<StreamEnd>,
}

/// How a streamed body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The framing said so: the terminating chunk, all of a Content-Length, or the close
    /// that ends a body read until close. The connection may carry another request.
    Clean,
    /// The connection closed or broke before the framing ended (a chunked body without
    /// its terminating chunk): what an informer reports as a premature close.
    Abrupt(String),
}

impl WatchStream {
    /// The next event, or `None` if none arrives within `timeout` or the stream ended
    /// (see [`WatchStream::is_closed`]).
    pub fn next_event(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let line = self.next_taken(timeout, WatchStream::take_line)?;
        Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
            panic!("watch line is not JSON ({e}): {}", String::from_utf8_lossy(&line))
        }))
    }

    /// The next message of the payload as `whole` delimits it — the length of a complete
    /// message at the start of the bytes given, or `None` while more are needed (e.g. a
    /// length-prefixed protobuf watch frame) — or `None` if none is whole within `timeout`
    /// or the stream ended. Nothing is consumed until a message is whole.
    pub fn next_message(
        &mut self,
        timeout: Duration,
        whole: impl Fn(&[u8]) -> Option<usize>,
    ) -> Option<Vec<u8>> {
        self.next_taken(timeout, |stream| {
            let len = whole(&stream.lines)?;
            Some(stream.lines.drain(..len).collect())
        })
    }

    /// Reads until `take` finds a message in what arrived; `None` on timeout or the end.
    fn next_taken(
        &mut self,
        timeout: Duration,
        mut take: impl FnMut(&mut WatchStream) -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = take(self) {
                return Some(message);
            }
            if self.end.is_some() {
                return None;
            }
            match self.pump(deadline) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return None,
                Err(e) => self.end = Some(StreamEnd::Abrupt(e.to_string())),
            }
        }
    }

    /// The next event that is not a BOOKMARK; panics (saying whether the stream ended) if
    /// none arrives within `timeout`.
    pub fn next_change(&mut self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self
                .next_event(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|| {
                    panic!(
                        "no event other than BOOKMARK within {timeout:?} (stream end: {:?})",
                        self.end
                    )
                });
            if event["type"] != "BOOKMARK" {
                return event;
            }
        }
    }

    /// The next change, checked to be a `kind` event (ADDED, MODIFIED, DELETED) of `name`.
    pub fn expect_change(
        &mut self,
        timeout: Duration,
        kind: &str,
        name: &str,
    ) -> serde_json::Value {
        let event = self.next_change(timeout);
        assert_eq!(
            (event["type"].as_str(), super::kube::event_name(&event)),
            (Some(kind), name),
            "unexpected event: {event}"
        );
        event
    }

    /// True once the server ended the response or dropped the connection.
    pub fn is_closed(&self) -> bool {
        self.end.is_some()
    }

    /// How the stream ended, or `None` while it is open.
    pub fn end(&self) -> Option<&StreamEnd> {
        self.end.as_ref()
    }

    /// Waits `quiet` and panics if the stream ends meanwhile (events that arrive are kept).
    pub fn assert_open_for(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        while !self.is_closed() && Instant::now() < deadline {
            match self.pump(deadline) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                Err(e) => self.end = Some(StreamEnd::Abrupt(e.to_string())),
            }
        }
        assert!(!self.is_closed(), "watch stream ended ({:?}), expected it open", self.end);
    }

    /// Reads the rest of the body (raw bytes, not events) until it ends.
    pub fn read_to_end(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while !self.is_closed() {
            self.pump(deadline).map_err(|e| {
                io::Error::new(e.kind(), format!("{e} after {} bytes", self.lines.len()))
            })?;
        }
        Ok(std::mem::take(&mut self.lines))
    }

    /// Waits up to `timeout` for the stream to end; returns whether it did.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_closed() {
            match self.pump(deadline) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return false,
                Err(e) => self.end = Some(StreamEnd::Abrupt(e.to_string())),
            }
        }
        true
    }

    /// A complete line from the decoded payload; at the end of the stream also a last line
    /// without its newline. Blank lines are skipped.
    fn take_line(&mut self) -> Option<Vec<u8>> {
        loop {
            let end = match self.lines.iter().position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if self.is_closed() && !self.lines.is_empty() => self.lines.len(),
                None => return None,
            };
            let line: Vec<u8> = self.lines.drain(..end).collect();
            if !line.trim_ascii().is_empty() {
                return Some(line.trim_ascii().to_vec());
            }
        }
    }

    /// Moves bytes from the socket through the body framing into `lines` (`framing` counts
    /// down what is left of a Content-Length body); sets `end` at the end of the body.
    /// Errors with `TimedOut` when nothing arrives before `deadline`.
    fn pump(&mut self, deadline: Instant) -> io::Result<()> {
        if matches!(self.framing, Framing::None | Framing::Length(0)) {
            self.end = Some(StreamEnd::Clean);
            return Ok(());
        }
        if self.conn.buf.is_empty() && self.conn.fill(deadline)? == 0 {
            self.end = Some(match self.framing {
                Framing::UntilClose => StreamEnd::Clean,
                _ => StreamEnd::Abrupt("connection closed before the end of the body".into()),
            });
            return Ok(());
        }
        match self.framing {
            Framing::Chunked => {
                let used = self.decoder.feed(&self.conn.buf, &mut self.lines)?;
                self.conn.buf.drain(..used);
                if self.decoder.is_done() {
                    self.end = Some(StreamEnd::Clean);
                }
            }
            Framing::Length(remaining) => {
                let take = remaining.min(self.conn.buf.len());
                self.lines.extend(self.conn.buf.drain(..take));
                self.framing = Framing::Length(remaining - take);
                if remaining == take {
                    self.end = Some(StreamEnd::Clean);
                }
            }
            Framing::UntilClose => self.lines.append(&mut self.conn.buf),
            Framing::None => self.end = Some(StreamEnd::Clean),
        }
        Ok(())
    }
}

/// The raw byte stream left after a `101 Switching Protocols`.
pub struct Tunnel {
    conn: Conn,
}

impl Tunnel {
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.send(bytes)
    }

    /// Reads exactly `len` bytes, failing if they do not all arrive within `timeout`.
    pub fn recv_exact(&mut self, len: usize, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while self.conn.buf.len() < len {
            if self.conn.fill(deadline)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tunnel closed"));
            }
        }
        Ok(self.conn.buf.drain(..len).collect())
    }
}

/// One TLS connection plus the bytes read from it but not yet consumed. Tests that speak
/// raw bytes (malformed requests, stalls) use it directly.
pub struct Conn {
    tls: StreamOwned<ClientConnection, TcpStream>,
    pub buf: Vec<u8>,
}

impl Conn {
    /// A connection to the proxy on `port`, presenting `<cert>.crt` from the PKI, or none.
    pub fn open_as(pki: &Pki, port: u16, cert: Option<&str>) -> io::Result<Conn> {
        Conn::open(tls_config(pki, cert), port, DEFAULT_TIMEOUT)
    }

    fn open(config: Arc<ClientConfig>, port: u16, timeout: Duration) -> io::Result<Conn> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let name = ServerName::try_from(SERVER_NAME).expect("valid server name");
        let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)?;
        }
        Ok(Conn { tls: StreamOwned::new(tls, sock), buf: Vec::new() })
    }

    fn send_request(
        &mut self,
        method: &str,
        path: &str,
        port: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !has("host") {
            head.push_str(&format!("Host: localhost:{port}\r\n"));
        }
        if !has("user-agent") {
            head.push_str("User-Agent: lite-apiserver-tests\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has_body_method =
            ["POST", "PUT", "PATCH"].iter().any(|m| m.eq_ignore_ascii_case(method));
        if !has("content-length")
            && !has("transfer-encoding")
            && (has_body_method || !body.is_empty())
        {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes)
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Reads more bytes into `buf`; `Ok(0)` at end of stream (with or without close_notify),
    /// `TimedOut` at the deadline. Never writes: after the proxy hung up on a request still
    /// being sent, what it answered before must stay readable, not be hidden behind a failed
    /// write of the rest.
    pub fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.tls.conn.reader().read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            self.tls.sock.set_read_timeout(Some(remaining))?;
            match self.tls.conn.read_tls(&mut self.tls.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    self.tls.conn.process_new_packets().map_err(io::Error::other)?;
                }
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no data before the deadline",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one complete response to a request with `method`.
    pub fn response(&mut self, method: &str) -> io::Result<Response> {
        let deadline = Instant::now() + DEFAULT_TIMEOUT;
        let head = self.read_final_head(deadline)?;
        let body = self.read_body(framing(&head, method)?, deadline)?;
        Ok(Response { status: head.status, headers: head.headers, body })
    }

    /// Whether the server ends the connection within `timeout` (anything it sends meanwhile
    /// is kept in `buf`). A reset counts as closed.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
    }

    fn read_head(&mut self, deadline: Instant) -> io::Result<Head> {
        loop {
            if let Some((head, len)) = parse_head(&self.buf)? {
                self.buf.drain(..len);
                return Ok(head);
            }
            if self.fill(deadline)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a response head ({} bytes read)",
                        self.buf.len()
                    ),
                ));
            }
        }
    }

    /// The first non-interim head (skips `100 Continue` and the like, but not `101`).
    fn read_final_head(&mut self, deadline: Instant) -> io::Result<Head> {
        loop {
            let head = self.read_head(deadline)?;
            if !(100..200).contains(&head.status) || head.status == 101 {
                return Ok(head);
            }
        }
    }

    fn read_body(&mut self, framing: Framing, deadline: Instant) -> io::Result<Vec<u8>> {
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(len) => {
                while self.buf.len() < len {
                    if self.fill(deadline)? == 0 {
                        return Err(truncated(self.buf.len(), len));
                    }
                }
                let rest = self.buf.split_off(len);
                Ok(std::mem::replace(&mut self.buf, rest))
            }
            Framing::Chunked => {
                let mut decoder = ChunkDecoder::default();
                let mut body = Vec::new();
                loop {
                    let used = decoder.feed(&self.buf, &mut body)?;
                    self.buf.drain(..used);
                    if decoder.is_done() {
                        return Ok(body);
                    }
                    if self.fill(deadline)? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("chunked body cut after {} bytes", body.len()),
                        ));
                    }
                }
            }
            Framing::UntilClose => {
                while self.fill(deadline)? > 0 {}
                Ok(std::mem::take(&mut self.buf))
            }
        }
    }
}

fn truncated(got: usize, expected: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("body cut after {got} of {expected} bytes"),
    )
}

/// A client TLS config (ring provider) trusting the PKI's CA, with an optional client cert.
pub fn tls_config(pki: &Pki, cert_name: Option<&str>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&pki.path("ca.crt")) {
        roots.add(cert).expect("add CA to root store");
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_root_certificates(roots);
    let config = match cert_name {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let certs = load_certs(&pki.path(&format!("{name}.crt")));
            let key = load_key(&pki.path(&format!("{name}.key")));
            builder.with_client_auth_cert(certs, key).expect("client certificate and key match")
        }
    };
    Arc::new(config)
}

fn load_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn load_key(path: &Path) -> PrivateKeyDer<'static> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
        .unwrap_or_else(|| panic!("no private key in {}", path.display()))
}
