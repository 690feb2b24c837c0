//! HTTP/1.1 over one blocking rustls stream: request heads (httparse) and bodies
//! (Content-Length or chunked, with `Expect: 100-continue`), whole responses with
//! Content-Length, chunked streaming responses, and a non-blocking "has the peer gone?" probe.
//! Whole responses over 128 KiB are gzipped (level 1) when the request accepts gzip, as
//! kube-apiserver does; streams (watches) never are.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;

use rustls::{ServerConnection, StreamOwned};

const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// kube-apiserver gzips answers larger than this for a client that accepts gzip.
const GZIP_ABOVE: usize = 128 * 1024;

pub type TlsStream = StreamOwned<ServerConnection, TcpStream>;

/// One parsed request. Header names keep their original spelling; look them up with
/// [`Request::header`], which ignores case.
pub struct Request {
    pub method: String,
    pub path: String,
    pub raw_query: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub keep_alive: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// `true` for `1`/`true` (the forms client-go and kubectl send).
    pub fn query_flag(&self, name: &str) -> bool {
        matches!(self.query_param(name), Some("1" | "true"))
    }

    /// Whether a comma-separated header (e.g. `Connection`) contains `token`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// A complete response, sent with Content-Length.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", json_bytes(value))
    }

    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", text.as_bytes().to_vec())
    }
}

pub fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` to memory cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub enum ReadError {
    /// The peer closed (or timed out) between requests: end the connection quietly.
    Closed,
    /// Malformed or oversized input; answer 400/413 and close.
    Bad { status: u16, message: String },
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> ReadError {
        ReadError::Closed
    }
}

fn bad(message: impl Into<String>) -> ReadError {
    ReadError::Bad { status: 400, message: message.into() }
}

/// A client connection: the TLS stream plus bytes read but not yet consumed (pipelining),
/// and the headers added to every response of the current request (identity, `Connection`).
pub struct Conn {
    stream: TlsStream,
    pending: Vec<u8>,
    common_headers: Vec<(String, String)>,
    /// The current request's `Accept-Encoding` has gzip.
    accepts_gzip: bool,
}

impl Conn {
    pub fn new(stream: TlsStream) -> Conn {
        Conn { stream, pending: Vec::new(), common_headers: Vec::new(), accepts_gzip: false }
    }

    pub fn set_common_headers(&mut self, headers: Vec<(String, String)>) {
        self.common_headers = headers;
    }

    pub fn read_request(&mut self) -> Result<Request, ReadError> {
        let (mut request, head_len, chunked, content_length) = loop {
            if let Some(parsed) = parse_head(&self.pending)? {
                break parsed;
            }
            if self.pending.len() > MAX_HEAD_BYTES {
                return Err(ReadError::Bad {
                    status: 431,
                    message: "request head too large".into(),
                });
            }
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        };
        self.pending.drain(..head_len);
        self.accepts_gzip = request.header("Accept-Encoding").is_some_and(|value| {
            value.split(',').any(|t| t.split(';').next().unwrap_or("").trim() == "gzip")
        });
        if request.header("Expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
            self.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        request.body = if chunked {
            self.read_chunked_body()?
        } else {
            self.take_exact(content_length.unwrap_or(0))?
        };
        Ok(request)
    }

    /// Bytes that arrived after the request head (e.g. the start of an upgraded stream).
    pub fn take_pending(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// Reads whatever arrives next; `Ok(0)` is end of stream (including TLS close_notify).
    pub fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = self.read_some(&mut chunk)?;
        self.pending.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn take_exact(&mut self, len: usize) -> Result<Vec<u8>, ReadError> {
        if len > MAX_BODY_BYTES {
            return Err(ReadError::Bad { status: 413, message: "request body too large".into() });
        }
        while self.pending.len() < len {
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        }
        Ok(self.pending.drain(..len).collect())
    }

    fn take_line(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|w| w == b"\r\n") {
                let line = self.pending.drain(..end + 2).take(end).collect();
                return Ok(line);
            }
            if self.pending.len() > MAX_HEAD_BYTES {
                return Err(bad("chunk line too long"));
            }
            if self.fill()? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    fn read_chunked_body(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut body = Vec::new();
        loop {
            let line = self.take_line()?;
            let size = parse_chunk_size(&line).ok_or_else(|| bad("bad chunk size"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.take_line()?.is_empty() {}
                return Ok(body);
            }
            if size > MAX_BODY_BYTES - body.len() {
                return Err(ReadError::Bad {
                    status: 413,
                    message: "request body too large".into(),
                });
            }
            body.extend(self.take_exact(size)?);
            if !self.take_line()?.is_empty() {
                return Err(bad("chunk not followed by CRLF"));
            }
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    pub fn send(&mut self, response: &Response, include_body: bool) -> io::Result<()> {
        let gzipped = (self.accepts_gzip && response.body.len() > GZIP_ABOVE)
            .then(|| gzip(&response.body))
            .transpose()?;
        let body = gzipped.as_deref().unwrap_or(&response.body);
        let mut head = self.head(response.status, &response.headers);
        if gzipped.is_some() {
            head.push_str("Content-Encoding: gzip\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        if include_body {
            bytes.extend_from_slice(body);
        }
        self.write_all(&bytes)
    }

    /// Writes a head with the given headers plus the common headers, without the final
    /// empty line, so callers add the framing header.
    pub fn head(&self, status: u16, headers: &[(String, String)]) -> String {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
        for (name, value) in headers.iter().chain(&self.common_headers) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head
    }

    pub fn start_chunked(&mut self, status: u16, content_type: &str) -> io::Result<()> {
        let mut head = self.head(status, &[("Content-Type".into(), content_type.into())]);
        head.push_str("Transfer-Encoding: chunked\r\n\r\n");
        self.write_all(head.as_bytes())
    }

    /// Sends `data` as one chunk and flushes it to the socket.
    pub fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(()); // an empty chunk would end the body
        }
        let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
        framed.extend_from_slice(data);
        framed.extend_from_slice(b"\r\n");
        self.write_all(&framed)
    }

    pub fn finish_chunked(&mut self) -> io::Result<()> {
        self.write_all(b"0\r\n\r\n")
    }

    /// Checks without blocking whether the client has closed the connection (TCP EOF, TLS
    /// close_notify or a reset). Any application bytes that arrived stay buffered in rustls.
    pub fn peer_closed(&mut self) -> bool {
        if self.stream.sock.set_nonblocking(true).is_err() {
            return true;
        }
        let closed = self.probe_peer();
        self.stream.sock.set_nonblocking(false).is_err() || closed
    }

    fn probe_peer(&mut self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.sock.peek(&mut probe) {
            Ok(0) => true,
            Ok(_) => match self.stream.conn.read_tls(&mut self.stream.sock) {
                Ok(0) => true,
                Ok(_) => self
                    .stream
                    .conn
                    .process_new_packets()
                    .map_or(true, |state| state.peer_has_closed()),
                Err(e) => !is_transient(&e),
            },
            Err(e) => !is_transient(&e),
        }
    }
}

/// `body` gzipped at level 1, as kube-apiserver compresses; corrupted right after the gzip
/// header in the `bad-gzip` fault mode (faults.rs).
fn gzip(body: &[u8]) -> io::Result<Vec<u8>> {
    const GZIP_HEADER: usize = 10;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body)?;
    let mut gzipped = encoder.finish()?;
    if crate::faults::corrupts_gzip() {
        let end = gzipped.len().min(GZIP_HEADER + 16);
        gzipped[GZIP_HEADER..end].fill(0xff);
    }
    Ok(gzipped)
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

type ParsedHead = (Request, usize, bool, Option<usize>);

/// Parses a complete head from `bytes`, or `None` if more bytes are needed.
fn parse_head(bytes: &[u8]) -> Result<Option<ParsedHead>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(bad(format!("malformed request: {e}"))),
    };
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default();
    let (path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let mut request = Request {
        method,
        path: percent_decode(path),
        raw_query: raw_query.to_string(),
        query: parse_query(raw_query),
        headers,
        body: Vec::new(),
        keep_alive: parsed.version == Some(1),
    };
    if request.header_has_token("Connection", "close") {
        request.keep_alive = false;
    }
    let chunked = request.header_has_token("Transfer-Encoding", "chunked");
    let content_length = match request.header("Content-Length") {
        Some(v) => Some(v.trim().parse::<usize>().map_err(|_| bad("bad Content-Length"))?),
        None => None,
    };
    Ok(Some((request, head_len, chunked, content_length)))
}

fn parse_chunk_size(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let digits = text.split(';').next()?.trim();
    usize::from_str_radix(digits, 16).ok()
}

pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(&name.replace('+', " ")), percent_decode(&value.replace('+', " ")))
        })
        .collect()
}

/// Decodes `%XX` escapes; malformed escapes are kept literally.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}
