//! Outage modes for the cloud-health tests: one process-wide mode, switched at runtime.
//! - `POST /debug/fault?mode=<m>` sets it (`none` clears it); `GET /debug/fault` reads it;
//!   both answer `{"mode": "<m>"}`. `/debug/*` is never faulty, so a test can always switch.
//! - `etcd-down`: an apiserver that lost etcd, behind a load balancer: `/readyz` answers
//!   `500` with kube's check list (`[-]etcd failed: reason withheld`), everything else `503`
//!   with a `ServiceUnavailable` `Status`.
//! - `lb-dead`: a load balancer with no live backend: every request answers its `503` page.
//! - `throttle`: API priority and fairness rejecting: every request but the health probes
//!   (`/readyz`, `/healthz`, `/livez`) answers `429` `TooManyRequests` with `Retry-After: 1`.
//! - `bad-gzip`: answers are served as usual, but a gzipped one (http.rs) has its deflate
//!   data overwritten right after the gzip header.
//! - `gzip-bomb`: a cloud that compresses a decompression bomb. Every read of a resource
//!   (`GET` of `/api/…` or `/apis/…` that is not a watch; never `/debug`, probes or the
//!   issuer's keys) answers `200` `application/json` with `Content-Encoding: gzip`, whatever
//!   the request's `Accept-Encoding`: one gzip member of about 1 MiB that inflates to 1 GiB
//!   — a list's opening, spaces, its closing; well-formed JSON, only absurdly large. Built
//!   once, on first use (1 MiB of spaces deflated once and its blocks repeated).
//! - `endless-frame`: every watch answers `200`
//!   `application/vnd.kubernetes.protobuf;stream=watch`, chunked, a 4-byte big-endian frame
//!   length of `0xFFFFFFF0`, then 16 KiB chunks of frame bytes every 2 ms — the frame never
//!   ends — until the watcher goes away, which is logged (`endless-frame: the watcher went
//!   away after <n> frame bytes`), and the connection is closed.
//!
//! The mode applies before authentication, as a load balancer in front would.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use serde_json::json;

use crate::debug::After;
use crate::http::{Conn, Request, Response};
use crate::status::ApiError;

const FAULT_PATH: &str = "/debug/fault";
const HEALTH_PATHS: [&str; 3] = ["/readyz", "/healthz", "/livez"];
const RETRY_AFTER_SECONDS: u64 = 1;

/// The readyz body kube-apiserver sends when its etcd check fails.
const ETCD_DOWN_READYZ: &str = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n\
                                [+]informer-sync ok\n\
                                [+]poststarthook/generic-apiserver-start-informers ok\n\
                                readyz check failed\n";
/// What HAProxy says when no backend is up.
const LB_DEAD_PAGE: &str = "<html><body><h1>503 Service Unavailable</h1>\n\
                            No server is available to handle this request.\n</body></html>\n";

/// What the gzip bomb inflates to: this, `BOMB_UNITS` × `BOMB_UNIT` spaces, `BOMB_CLOSE`.
const BOMB_OPEN: &[u8] =
    br#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":["#;
const BOMB_CLOSE: &[u8] = b"]}\n";
const BOMB_UNIT: usize = 1 << 20;
const BOMB_UNITS: usize = 1024;
/// The gzip member header: deflate, no flags, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
/// Bytes the bomb is written in, so a slow reader gets it piece by piece.
const WRITE_PIECE: usize = 64 * 1024;

const ENDLESS_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// The frame length the endless watch announces (just under 4 GiB).
const ENDLESS_FRAME_LENGTH: u32 = 0xFFFF_FFF0;
const ENDLESS_CHUNK: usize = 16 * 1024;
const ENDLESS_PAUSE: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    EtcdDown,
    LbDead,
    Throttle,
    BadGzip,
    GzipBomb,
    EndlessFrame,
}

const FAULTS: [(Fault, &str); 7] = [
    (Fault::None, "none"),
    (Fault::EtcdDown, "etcd-down"),
    (Fault::LbDead, "lb-dead"),
    (Fault::Throttle, "throttle"),
    (Fault::BadGzip, "bad-gzip"),
    (Fault::GzipBomb, "gzip-bomb"),
    (Fault::EndlessFrame, "endless-frame"),
];

static MODE: AtomicU8 = AtomicU8::new(Fault::None as u8);

impl Fault {
    fn current() -> Fault {
        let mode = MODE.load(Ordering::Relaxed);
        FAULTS.iter().map(|(fault, _)| *fault).find(|f| *f as u8 == mode).unwrap_or(Fault::None)
    }

    fn name(self) -> &'static str {
        FAULTS.iter().find(|(fault, _)| *fault == self).map_or("none", |(_, name)| name)
    }

    fn parse(name: &str) -> Option<Fault> {
        FAULTS.iter().find(|(_, n)| *n == name).map(|(fault, _)| *fault)
    }
}

/// Serves `/debug/fault`, or the current mode's answer to `request` on `conn`; `None`
/// when the request is to be served normally.
pub fn serve(request: &Request, conn: &mut Conn, include_body: bool) -> Option<io::Result<After>> {
    let fault = Fault::current();
    let resource_read = !request.path.starts_with("/debug/")
        && request.method == "GET"
        && (request.path.starts_with("/api/") || request.path.starts_with("/apis/"));
    let watch = resource_read && (request.query_flag("watch") || request.path.contains("/watch/"));
    if request.path != FAULT_PATH && fault == Fault::GzipBomb && resource_read && !watch {
        return Some(send_bomb(conn, include_body));
    }
    if request.path != FAULT_PATH && fault == Fault::EndlessFrame && watch {
        return Some(endless_frame(conn));
    }
    let response = answer(request, fault)?;
    Some(conn.send(&response, include_body).map(|()| After::KeepAlive))
}

/// `/debug/fault`, or the answer of a mode that replaces whole responses.
fn answer(request: &Request, fault: Fault) -> Option<Response> {
    if request.path == FAULT_PATH {
        return Some(switch(request));
    }
    if request.path.starts_with("/debug/") {
        return None;
    }
    let health = HEALTH_PATHS.iter().any(|p| request.path == *p);
    match fault {
        Fault::None | Fault::BadGzip | Fault::GzipBomb | Fault::EndlessFrame => None,
        Fault::EtcdDown if request.path == "/readyz" => Some(Response::text(500, ETCD_DOWN_READYZ)),
        Fault::EtcdDown => Some(
            ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            )
            .to_response(),
        ),
        Fault::LbDead => Some(Response::new(503, "text/html", LB_DEAD_PAGE.as_bytes().to_vec())),
        Fault::Throttle if health => None,
        Fault::Throttle => Some(throttled()),
    }
}

fn switch(request: &Request) -> Response {
    if request.method == "POST" {
        let name = request.query_param("mode").unwrap_or_default();
        let Some(fault) = Fault::parse(name) else {
            let known: Vec<&str> = FAULTS.iter().map(|(_, name)| *name).collect();
            let message = format!("unknown fault mode {name:?}; known: {}", known.join(", "));
            return ApiError::bad_request(message).to_response();
        };
        MODE.store(fault as u8, Ordering::Relaxed);
        log::info!("fault mode: {}", fault.name());
    } else if request.method != "GET" {
        return ApiError::method_not_allowed(&request.method).to_response();
    }
    Response::json(200, &json!({ "mode": Fault::current().name() }))
}

/// Whether gzipped answers are to be corrupted (`bad-gzip`).
pub fn corrupts_gzip() -> bool {
    Fault::current() == Fault::BadGzip
}

/// The bomb as an answer: its head, then its bytes a piece at a time (the peer reads as
/// slowly as it likes, within the write timeout).
fn send_bomb(conn: &mut Conn, include_body: bool) -> io::Result<After> {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    let bomb = match BOMB.get() {
        Some(bomb) => bomb,
        None => {
            let built = gzip_bomb(BOMB_UNITS)?;
            log::info!("gzip-bomb: {} bytes inflating to 1 GiB", built.len());
            BOMB.get_or_init(|| built)
        }
    };
    let headers = [
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Encoding".to_string(), "gzip".to_string()),
    ];
    let mut head = conn.head(200, &headers);
    head.push_str(&format!("Content-Length: {}\r\n\r\n", bomb.len()));
    conn.write_all(head.as_bytes())?;
    if include_body {
        for piece in bomb.chunks(WRITE_PIECE) {
            conn.write_all(piece)?;
        }
    }
    Ok(After::KeepAlive)
}

/// One gzip member inflating to `BOMB_OPEN`, `units` MiB of spaces and `BOMB_CLOSE`. Only
/// two MiB are deflated: once the window holds nothing but spaces, the blocks that encode
/// the second MiB of spaces (byte-aligned by a sync flush, their back-references all
/// within the window) decode to spaces after any MiB of spaces, so they are repeated; the
/// trailer's CRC-32 is combined from the parts' CRCs.
fn gzip_bomb(units: usize) -> io::Result<Vec<u8>> {
    let spaces = vec![b' '; BOMB_UNIT];
    let mut deflate = Compress::new(Compression::best(), false);
    let open = deflate_part(&mut deflate, BOMB_OPEN, FlushCompress::Sync)?;
    let first = deflate_part(&mut deflate, &spaces, FlushCompress::Sync)?;
    let steady = deflate_part(&mut deflate, &spaces, FlushCompress::Sync)?;
    let close = deflate_part(&mut deflate, BOMB_CLOSE, FlushCompress::Finish)?;
    let (mut crc, mut unit_crc, mut close_crc) = (Crc::new(), Crc::new(), Crc::new());
    crc.update(BOMB_OPEN);
    unit_crc.update(&spaces);
    close_crc.update(BOMB_CLOSE);
    for _ in 0..units {
        crc.combine(&unit_crc);
    }
    crc.combine(&close_crc);
    let repeats = units.saturating_sub(1);
    let mut gzip = Vec::with_capacity(open.len() + first.len() * 2 + steady.len() * repeats + 64);
    gzip.extend_from_slice(&GZIP_HEADER);
    gzip.extend_from_slice(&open);
    if units > 0 {
        gzip.extend_from_slice(&first);
    }
    for _ in 0..repeats {
        gzip.extend_from_slice(&steady);
    }
    gzip.extend_from_slice(&close);
    gzip.extend_from_slice(&crc.sum().to_le_bytes());
    gzip.extend_from_slice(&crc.amount().to_le_bytes());
    Ok(gzip)
}

/// Raw deflate of `input`, up to and including `flush`.
fn deflate_part(deflate: &mut Compress, input: &[u8], flush: FlushCompress) -> io::Result<Vec<u8>> {
    let start = deflate.total_in();
    let mut out = Vec::with_capacity(4096);
    loop {
        let consumed = usize::try_from(deflate.total_in() - start).map_err(io::Error::other)?;
        let status =
            deflate.compress_vec(&input[consumed..], &mut out, flush).map_err(io::Error::other)?;
        let all_in = deflate.total_in() - start == input.len() as u64;
        let flushed = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            _ => all_in && out.len() < out.capacity(),
        };
        if flushed {
            return Ok(out);
        }
        out.reserve(out.capacity());
    }
}

/// A watch whose first frame never ends: bytes every `ENDLESS_PAUSE` until the peer goes.
fn endless_frame(conn: &mut Conn) -> io::Result<After> {
    conn.start_chunked(200, ENDLESS_CONTENT_TYPE)?;
    conn.write_chunk(&ENDLESS_FRAME_LENGTH.to_be_bytes())?;
    // Frame bytes that look like protobuf: field 1, length-delimited, over and over.
    let chunk: Vec<u8> = [0x0a_u8, 0x7f].iter().copied().cycle().take(ENDLESS_CHUNK).collect();
    let mut sent = 0usize;
    let gone = loop {
        if conn.peer_closed() {
            break None;
        }
        if let Err(e) = conn.write_chunk(&chunk) {
            break Some(e);
        }
        sent += chunk.len();
        std::thread::sleep(ENDLESS_PAUSE);
    };
    let how = gone.map_or_else(|| "closed".to_string(), |e| format!("write failed: {e}"));
    log::info!("endless-frame: the watcher went away after {sent} frame bytes ({how})");
    Ok(After::Close)
}

/// kube-apiserver's API priority and fairness rejection.
fn throttled() -> Response {
    let error = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
    let mut status = error.to_status();
    status["details"] = json!({ "retryAfterSeconds": RETRY_AFTER_SECONDS });
    let mut response = Response::json(429, &status);
    response.headers.push(("Retry-After".into(), RETRY_AFTER_SECONDS.to_string()));
    response
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn the_gzip_bomb_is_one_valid_member_of_a_list_with_spaces() {
        let units = 3;
        let bomb = gzip_bomb(units).unwrap();
        let mut plain = Vec::new();
        // GzDecoder checks the trailer's CRC-32 and length.
        flate2::read::GzDecoder::new(bomb.as_slice()).read_to_end(&mut plain).unwrap();
        let spaces = units * BOMB_UNIT;
        assert_eq!(plain.len(), BOMB_OPEN.len() + spaces + BOMB_CLOSE.len());
        assert!(plain.starts_with(BOMB_OPEN) && plain.ends_with(BOMB_CLOSE));
        assert!(plain[BOMB_OPEN.len()..][..spaces].iter().all(|b| *b == b' '));
        let list: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(list["items"], json!([]));
    }

    #[test]
    fn the_full_bomb_compresses_about_a_thousand_to_one() {
        let bomb = gzip_bomb(BOMB_UNITS).unwrap();
        let plain = BOMB_UNITS * BOMB_UNIT;
        assert!(bomb.len() < plain / 500, "{} bytes for {plain}", bomb.len());
        let trailer = &bomb[bomb.len() - 4..];
        let size = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        assert_eq!(size as usize, (BOMB_OPEN.len() + plain + BOMB_CLOSE.len()) % (1 << 32));
    }
}
