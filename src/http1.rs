//! HTTP/1.1 message heads: parsing (httparse), validation, and rewriting for the
//! next hop (hop-by-hop headers removed, as RFC 9110 §7.6.1 says).
//!
//! Bodies are never parsed here; `body.rs` tracks where a body ends.

use std::fmt;
use std::io::Write;

/// Largest request or response head we accept (431 beyond).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines we accept in one head.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The bytes are not an HTTP/1.x message.
    Malformed(String),
    HeadTooLarge,
    TooManyHeaders,
    /// Ambiguous framing: a request smuggling attempt or a broken peer.
    BadFraming(&'static str),
    UnsupportedVersion,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed HTTP message: {why}"),
            HttpError::HeadTooLarge => write!(f, "request header fields too large"),
            HttpError::TooManyHeaders => write!(f, "too many header fields"),
            HttpError::BadFraming(why) => write!(f, "invalid message framing: {why}"),
            HttpError::UnsupportedVersion => write!(f, "unsupported HTTP version"),
        }
    }
}

impl std::error::Error for HttpError {}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response body delimited by the connection closing.
    UntilClose,
}

/// The header lines of one head, copied out of the read buffer once: names and values are
/// ranges of one byte buffer, so a head costs two allocations whatever its size. Values
/// are bytes because HTTP allows obs-text; names are tokens (ASCII, httparse checks), kept
/// as bytes too so no line is validated as UTF-8 again.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    bytes: Vec<u8>,
    lines: Vec<HeaderLine>,
}

/// Where one line ends in `Headers::bytes`: its name runs from the previous line's end to
/// `name_end`, its value from there to `value_end`.
#[derive(Debug, Clone, Copy)]
struct HeaderLine {
    name_end: u32,
    value_end: u32,
}

impl Headers {
    fn copied(parsed: &[httparse::Header<'_>]) -> Headers {
        let size = parsed.iter().map(|h| h.name.len() + h.value.len()).sum();
        let mut headers = Headers { bytes: Vec::with_capacity(size), lines: Vec::new() };
        headers.lines.reserve_exact(parsed.len());
        for header in parsed {
            headers.push(header.name.as_bytes(), header.value);
        }
        headers
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        // Heads are at most MAX_HEAD_BYTES, so every offset fits in a u32.
        let offset = |bytes: &Vec<u8>| bytes.len() as u32;
        self.bytes.extend_from_slice(name);
        let name_end = offset(&self.bytes);
        self.bytes.extend_from_slice(value);
        self.lines.push(HeaderLine { name_end, value_end: offset(&self.bytes) });
    }

    /// Every line in order, as (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut name_start = 0;
        self.lines.iter().map(move |line| {
            let (name_end, value_end) = (line.name_end as usize, line.value_end as usize);
            let name = &self.bytes[name_start..name_end];
            name_start = value_end;
            (name, &self.bytes[name_end..value_end])
        })
    }

    /// The values of every line named `name` (any case).
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The first value named `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The first value named `name` as text, if it is valid UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The non-empty comma-separated tokens of every line named `name`, trimmed.
    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.values(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|t| !t.is_empty())
    }

    /// The header names `Connection` lists, read once per head rather than once per line
    /// (no allocation when there is no `Connection` line).
    fn connection_named(&self) -> Vec<&[u8]> {
        self.tokens("connection").collect()
    }

    /// Whether a line named `name` lists `token` (any case).
    fn has_token(&self, name: &str, token: &[u8]) -> bool {
        self.tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// The same lines without those named (any case).
    fn without(&self, names: &[&str]) -> Headers {
        let mut kept = Headers::default();
        for (name, value) in self.iter() {
            if !names.iter().any(|drop| name.eq_ignore_ascii_case(drop.as_bytes())) {
                kept.push(name, value);
            }
        }
        kept
    }
}

#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    pub target: String,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Headers,
}

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

fn map_parse_error(error: httparse::Error) -> HttpError {
    match error {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Version => HttpError::UnsupportedVersion,
        other => HttpError::Malformed(other.to_string()),
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: need more bytes.
/// On success returns the head and its length in bytes.
pub fn parse_request(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage);
    match request.parse(buf).map_err(map_parse_error)? {
        httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => Err(HttpError::HeadTooLarge),
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(_) if buf.len() > MAX_HEAD_BYTES => Err(HttpError::HeadTooLarge),
        httparse::Status::Complete(length) => {
            let head = RequestHead {
                method: request.method.unwrap_or_default().to_string(),
                target: request.path.unwrap_or_default().to_string(),
                minor_version: request.version.unwrap_or(1),
                headers: Headers::copied(request.headers),
            };
            if length > MAX_HEAD_BYTES {
                return Err(HttpError::HeadTooLarge);
            }
            Ok(Some((head, length)))
        }
    }
}

/// Parses a response head from the start of `buf`. `Ok(None)`: need more bytes.
pub fn parse_response(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    match response.parse(buf).map_err(map_parse_error)? {
        httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => Err(HttpError::HeadTooLarge),
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(length) => Ok(Some((
            ResponseHead {
                status: response.code.unwrap_or(0),
                reason: response.reason.unwrap_or_default().to_string(),
                headers: Headers::copied(response.headers),
            },
            length,
        ))),
    }
}

/// Body framing shared by requests and responses (RFC 9112 §6.3): Transfer-Encoding
/// wins only when it is exactly `chunked`; both headers, or disagreeing
/// Content-Length values, are rejected rather than guessed at.
fn message_framing(headers: &Headers) -> Result<Option<Framing>, HttpError> {
    let mut encodings = headers.tokens("transfer-encoding");
    let mut lengths = headers.values("content-length").peekable();
    if let Some(first) = encodings.next() {
        if lengths.peek().is_some() {
            return Err(HttpError::BadFraming("both Transfer-Encoding and Content-Length"));
        }
        if !first.eq_ignore_ascii_case(b"chunked") || encodings.next().is_some() {
            return Err(HttpError::BadFraming("unsupported Transfer-Encoding"));
        }
        return Ok(Some(Framing::Chunked));
    }
    let mut length = None;
    for value in lengths {
        for part in value.split(|&b| b == b',') {
            let parsed = parse_content_length(part)?;
            if length.is_some_and(|known| known != parsed) {
                return Err(HttpError::BadFraming("conflicting Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(length.map(Framing::Length))
}

fn parse_content_length(raw: &[u8]) -> Result<u64, HttpError> {
    let text =
        std::str::from_utf8(raw).map_err(|_| HttpError::BadFraming("bad Content-Length"))?.trim();
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::BadFraming("bad Content-Length"));
    }
    text.parse().map_err(|_| HttpError::BadFraming("bad Content-Length"))
}

impl RequestHead {
    pub fn framing(&self) -> Result<Framing, HttpError> {
        Ok(message_framing(&self.headers)?.unwrap_or(Framing::None))
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    /// Whether the client wants the connection kept open after this exchange.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version == 0 {
            self.headers.has_token("connection", b"keep-alive")
        } else {
            !self.headers.has_token("connection", b"close")
        }
    }

    /// A protocol upgrade (exec/attach/port-forward over SPDY or WebSocket).
    pub fn is_upgrade(&self) -> bool {
        self.headers.has_token("connection", b"upgrade") && self.headers.get("upgrade").is_some()
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Checks what the proxy must refuse before forwarding anything.
    pub fn validate(&self) -> Result<(), HttpError> {
        if !self.target.starts_with('/') {
            return Err(HttpError::Malformed("request target must be an absolute path".into()));
        }
        if self.minor_version == 0 && self.framing()? == Framing::Chunked {
            return Err(HttpError::BadFraming("chunked body in an HTTP/1.0 request"));
        }
        self.framing().map(|_| ())
    }

    /// The head as sent upstream: always HTTP/1.1 and keep-alive, hop-by-hop headers
    /// dropped (except `Connection: Upgrade` + `Upgrade` for an upgrade), `Host` set
    /// to the cloud apiserver, and `replace` applied (name → new value; an empty
    /// value removes the header).
    pub fn to_upstream_bytes(&self, host: &str, replace: &[(&str, &str)]) -> Vec<u8> {
        let upgrade = self.is_upgrade();
        let mut out = Vec::with_capacity(self.target.len() + self.headers.bytes.len() + 256);
        // Formatting into a Vec cannot fail.
        let _ = write!(out, "{} {} HTTP/1.1\r\nHost: {host}\r\n", self.method, self.target);
        let connection_named = self.headers.connection_named();
        for (name, value) in self.headers.iter() {
            // The body is forwarded as framed, so its framing header goes with it.
            let kept = (upgrade && name.eq_ignore_ascii_case(b"upgrade"))
                || name.eq_ignore_ascii_case(b"transfer-encoding");
            if name.eq_ignore_ascii_case(b"host")
                || (is_hop_by_hop(name, &connection_named) && !kept)
                || replace.iter().any(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            {
                continue;
            }
            push_header(&mut out, name, value);
        }
        for (name, value) in replace.iter().filter(|(_, value)| !value.is_empty()) {
            push_header(&mut out, name.as_bytes(), value.as_bytes());
        }
        if upgrade {
            out.extend_from_slice(b"Connection: Upgrade\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

impl ResponseHead {
    /// Response body framing (RFC 9112 §6.3), given the request method.
    pub fn framing(&self, request_method: &str) -> Result<Framing, HttpError> {
        let no_body = request_method == "HEAD"
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304;
        if no_body {
            return Ok(Framing::None);
        }
        Ok(message_framing(&self.headers)?.unwrap_or(Framing::UntilClose))
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    /// Whether the upstream connection can be reused after this response.
    pub fn keep_alive(&self) -> bool {
        !self.headers.has_token("connection", b"close")
    }

    /// The head as sent to the client: hop-by-hop headers dropped except the framing
    /// header we pass through, plus `extra` headers and `Connection: close` when
    /// the client connection ends after it. `dechunk`: the body is sent de-chunked to
    /// an HTTP/1.0 client, so `Transfer-Encoding` goes too.
    pub fn to_client_bytes(
        &self,
        minor_version: u8,
        close: bool,
        dechunk: bool,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.headers.bytes.len() + 256);
        // Formatting into a Vec cannot fail.
        let _ = write!(out, "HTTP/1.{minor_version} {} {}\r\n", self.status, self.reason);
        let switching = self.status == 101;
        let connection_named = self.headers.connection_named();
        for (name, value) in self.headers.iter() {
            let framing_header = name.eq_ignore_ascii_case(b"transfer-encoding") && !dechunk;
            let upgrade_header = switching && name.eq_ignore_ascii_case(b"upgrade");
            if is_hop_by_hop(name, &connection_named) && !framing_header && !upgrade_header {
                continue;
            }
            push_header(&mut out, name, value);
        }
        for (name, value) in extra {
            push_header(&mut out, name.as_bytes(), value.as_bytes());
        }
        if switching {
            out.extend_from_slice(b"Connection: Upgrade\r\n");
        } else if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if minor_version == 0 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

impl ResponseHead {
    /// The same head without the headers named (any case): for a body sent other than
    /// the cloud framed or encoded it.
    pub fn without_headers(&self, names: &[&str]) -> ResponseHead {
        ResponseHead {
            status: self.status,
            reason: self.reason.clone(),
            headers: self.headers.without(names),
        }
    }

    /// The head for a body re-framed with `Content-Length: length` (a rewritten answer):
    /// the cloud's own framing headers are dropped.
    pub fn to_reframed_bytes(&self, minor_version: u8, close: bool, length: usize) -> Vec<u8> {
        let framed = self.without_headers(&["content-length", "transfer-encoding"]);
        let length = length.to_string();
        framed.to_client_bytes(minor_version, close, true, &[("Content-Length", &length)])
    }
}

/// Hop-by-hop headers: the fixed list plus whatever `Connection` names — except
/// `Content-Length`: the body is forwarded as framed, so dropping its length on the peer's
/// say-so would make the next hop read the body as another request (smuggling).
fn is_hop_by_hop(name: &[u8], connection_named: &[&[u8]]) -> bool {
    const HOP_BY_HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP_BY_HOP.iter().any(|hop| name.eq_ignore_ascii_case(hop.as_bytes()))
        || (!name.eq_ignore_ascii_case(b"content-length")
            && connection_named.iter().any(|named| named.eq_ignore_ascii_case(name)))
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The value of one query parameter (not percent-decoded), if present.
pub fn query_param<'a>(target: &'a str, name: &str) -> Option<&'a str> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str) -> RequestHead {
        parse_request(text.as_bytes()).expect("parses").expect("complete").0
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(parse_request(b"GET /api HTTP/1.1\r\nHost: x\r\n").expect("ok").is_none());
    }

    #[test]
    fn smuggling_is_refused() {
        let both =
            request("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(both.validate().is_err());
        let conflicting =
            request("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n");
        assert!(conflicting.validate().is_err());
        let same = request("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(same.framing(), Ok(Framing::Length(3)));
        let gzip = request("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert!(gzip.validate().is_err());
        let signed = request("POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n");
        assert!(signed.validate().is_err());
    }

    #[test]
    fn oversized_head_is_431() {
        let mut big = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 10, b'a');
        assert_eq!(parse_request(&big).err(), Some(HttpError::HeadTooLarge));
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_upstream() {
        let head = request(
            "GET /api HTTP/1.1\r\nHost: me\r\nConnection: close, X-Private\r\nX-Private: 1\r\n\
             Keep-Alive: 5\r\nTE: trailers\r\nAuthorization: Bearer t\r\nImpersonate-User: bob\r\n\r\n",
        );
        let out = String::from_utf8(head.to_upstream_bytes("cloud:6443", &[])).expect("utf8");
        assert!(out.starts_with("GET /api HTTP/1.1\r\nHost: cloud:6443\r\n"), "{out}");
        for gone in ["Connection", "X-Private", "Keep-Alive", "TE:", "Host: me"] {
            assert!(!out.contains(gone), "{gone} leaked: {out}");
        }
        assert!(
            out.contains("Authorization: Bearer t\r\n")
                && out.contains("Impersonate-User: bob\r\n")
        );
    }

    #[test]
    fn connection_cannot_strip_the_content_length() {
        let head =
            request("POST /x HTTP/1.1\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\n");
        let out = head.to_upstream_bytes("c", &[]);
        let (again, _) = parse_request(&out).expect("parses").expect("complete");
        assert_eq!(again.framing(), Ok(Framing::Length(5)));
    }

    #[test]
    fn upgrades_keep_their_headers() {
        let head =
            request("GET /exec HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n");
        assert!(head.is_upgrade());
        let out = String::from_utf8(head.to_upstream_bytes("c", &[])).expect("utf8");
        assert!(out.contains("Upgrade: SPDY/3.1\r\n") && out.contains("Connection: Upgrade\r\n"));
    }

    #[test]
    fn response_framing_rules() {
        let parse = |t: &str| parse_response(t.as_bytes()).expect("ok").expect("complete").0;
        assert_eq!(parse("HTTP/1.1 200 OK\r\n\r\n").framing("GET"), Ok(Framing::UntilClose));
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n").framing("HEAD"),
            Ok(Framing::None)
        );
        assert_eq!(parse("HTTP/1.1 204 No Content\r\n\r\n").framing("GET"), Ok(Framing::None));
        let chunked =
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
        assert_eq!(chunked.framing("GET"), Ok(Framing::Chunked));
        assert!(!chunked.keep_alive());
        let out = String::from_utf8(chunked.to_client_bytes(1, false, false, &[])).expect("utf8");
        assert!(out.contains("Transfer-Encoding: chunked") && !out.contains("Connection: close"));
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param("/api/v1/pods?watch=1&rv=5", "rv"), Some("5"));
        assert_eq!(query_param("/api/v1/pods?watch", "watch"), Some(""));
        assert_eq!(query_param("/api/v1/pods", "watch"), None);
    }
}
