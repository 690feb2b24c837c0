//! Test endpoints that exercise a proxy's plumbing rather than the Kubernetes API:
//! - `GET /debug/blob?bytes=N[&chunked=1]`: N deterministic printable bytes (byte `i` is
//!   always the same), with Content-Length or in 16 KiB chunks;
//! - `ANY /debug/echo`: the request as JSON (method, path, query, headers with lowercase
//!   names, body_len, body_sha256 hex, body when UTF-8 and under 1 MiB);
//! - `GET /debug/slow?ms=N`: answers after N ms;
//! - `GET /debug/hang-body`: promises 1000 bytes, sends 10, stalls 60 s, closes;
//! - `ANY /debug/garbage`: non-HTTP bytes, then close;
//! - protocol upgrades (exec/attach/portforward): `101` then echo every byte back.

use std::collections::BTreeMap;
use std::io;
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{Conn, Request, Response};
use crate::status::ApiError;

const BLOB_PIECE: usize = 16 * 1024;
const BLOB_PATTERN_LEN: usize = 1 << 20;
const MAX_ECHOED_BODY: usize = 1 << 20;
const HANG_TIME: Duration = Duration::from_secs(60);
const MAX_SLOW_MS: u64 = 10 * 60 * 1000;

/// What the router should do with the connection after a debug endpoint.
pub enum After {
    KeepAlive,
    Close,
}

/// Serves `/debug/...`; `None` for other paths.
pub fn handle(request: &Request, conn: &mut Conn, include_body: bool) -> Option<io::Result<After>> {
    let result = match request.path.as_str() {
        "/debug/blob" => blob(request, conn, include_body),
        "/debug/echo" => send(conn, &Response::json(200, &echo(request)), include_body),
        "/debug/slow" => slow(request, conn, include_body),
        "/debug/hang-body" => hang_body(conn),
        "/debug/garbage" => {
            conn.write_all(b"\x00\x01garbage, not HTTP\xff\xfe\r\n\r\n").map(|()| After::Close)
        }
        _ => return None,
    };
    Some(result)
}

fn send(conn: &mut Conn, response: &Response, include_body: bool) -> io::Result<After> {
    conn.send(response, include_body).map(|()| After::KeepAlive)
}

fn query_number(request: &Request, name: &str) -> Result<u64, ApiError> {
    let text = request.query_param(name).unwrap_or("0");
    text.parse().map_err(|_| ApiError::bad_request(format!("invalid {name}: {text:?}")))
}

/// A 1 MiB printable pattern from a fixed-seed xorshift; blob byte `i` is `pattern[i % len]`.
static BLOB_PATTERN: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..BLOB_PATTERN_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ALPHABET[(state % 64) as usize]
        })
        .collect()
});

/// The bytes of the blob at `[offset, offset + len)`.
fn blob_piece(offset: u64, len: usize) -> Vec<u8> {
    let mut piece = Vec::with_capacity(len);
    let mut position = (offset % BLOB_PATTERN_LEN as u64) as usize;
    while piece.len() < len {
        let take = (len - piece.len()).min(BLOB_PATTERN_LEN - position);
        piece.extend_from_slice(&BLOB_PATTERN[position..position + take]);
        position = 0;
    }
    piece
}

fn blob(request: &Request, conn: &mut Conn, include_body: bool) -> io::Result<After> {
    let total = match query_number(request, "bytes") {
        Ok(total) => total,
        Err(error) => return send(conn, &error.to_response(), include_body),
    };
    let content_type = [("Content-Type".to_string(), "application/octet-stream".to_string())];
    let chunked = request.query_flag("chunked");
    if chunked {
        conn.start_chunked(200, "application/octet-stream")?;
    } else {
        let mut head = conn.head(200, &content_type);
        head.push_str(&format!("Content-Length: {total}\r\n\r\n"));
        conn.write_all(head.as_bytes())?;
    }
    let mut offset = 0u64;
    while include_body && offset < total {
        let len = (total - offset).min(BLOB_PIECE as u64) as usize;
        let piece = blob_piece(offset, len);
        if chunked {
            conn.write_chunk(&piece)?
        } else {
            conn.write_all(&piece)?
        }
        offset += len as u64;
    }
    if chunked {
        conn.finish_chunked()?;
    }
    Ok(After::KeepAlive)
}

fn echo(request: &Request) -> Value {
    let mut headers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, value) in &request.headers {
        headers.entry(name.to_ascii_lowercase()).or_default().push(value);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &request.body);
    let mut echoed = json!({
        "method": request.method,
        "path": request.path,
        "query": request.raw_query,
        "headers": headers,
        "body_len": request.body.len(),
        "body_sha256": digest.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>(),
    });
    if request.body.len() < MAX_ECHOED_BODY
        && let Ok(text) = std::str::from_utf8(&request.body)
    {
        echoed["body"] = json!(text);
    }
    echoed
}

fn slow(request: &Request, conn: &mut Conn, include_body: bool) -> io::Result<After> {
    let ms = match query_number(request, "ms") {
        Ok(ms) => ms,
        Err(error) => return send(conn, &error.to_response(), include_body),
    };
    thread::sleep(Duration::from_millis(ms.min(MAX_SLOW_MS)));
    send(conn, &Response::json(200, &json!({ "slept_ms": ms })), include_body)
}

fn hang_body(conn: &mut Conn) -> io::Result<After> {
    let mut head = conn.head(200, &[("Content-Type".into(), "text/plain".into())]);
    head.push_str("Content-Length: 1000\r\n\r\n0123456789");
    conn.write_all(head.as_bytes())?;
    let until = Instant::now() + HANG_TIME;
    while Instant::now() < until && !conn.peer_closed() {
        thread::sleep(Duration::from_millis(200));
    }
    Ok(After::Close)
}

/// Switches protocols (echoing the `Upgrade` header) and echoes bytes until EOF.
pub fn upgrade_echo(request: &Request, conn: &mut Conn) -> io::Result<After> {
    let protocol = request.header("Upgrade").unwrap_or("SPDY/3.1").to_string();
    let mut head =
        conn.head(101, &[("Connection".into(), "Upgrade".into()), ("Upgrade".into(), protocol)]);
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    let early = conn.take_pending();
    if !early.is_empty() {
        conn.write_all(&early)?;
    }
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read_some(&mut buf)? {
            0 => return Ok(After::Close),
            n => conn.write_all(&buf[..n])?,
        }
    }
}
