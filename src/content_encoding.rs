//! gzip kept on the cloud link for one exchange: what `Accept-Encoding` a cacheable read
//! asks the cloud with, how an answer is encoded, and a gzip answer decompressed on its way
//! to a client that did not ask for gzip (re-framed: chunked to HTTP/1.1, until close to
//! HTTP/1.0, since its plain length is not known before the end).

use crate::body::{LAST_CHUNK, encode_chunk};
use crate::gzip::{self, GzipDecoder, GzipError, RatioLimit};
use crate::http1::ResponseHead;

/// The `Accept-Encoding` a cacheable read asks the cloud with: the client's, with gzip
/// added when it did not ask (the cache tee decompresses; the link stays compressed).
pub fn upstream_accept_encoding(client: Option<&str>) -> String {
    match client.map(str::trim).filter(|value| !value.is_empty()) {
        Some(value) if gzip::accepts_gzip(Some(value)) => value.to_string(),
        Some(value) => format!("{value}, gzip"),
        None => "gzip".to_string(),
    }
}

/// How an answer's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Gzip,
    /// Anything else (never asked for by lite-apiserver): passed on, never cached.
    Other,
}

impl BodyEncoding {
    pub fn of(head: &ResponseHead) -> BodyEncoding {
        match head.header_str("content-encoding").map(str::trim) {
            None => BodyEncoding::Identity,
            Some(e) if e.is_empty() || e.eq_ignore_ascii_case("identity") => BodyEncoding::Identity,
            Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("x-gzip") => {
                BodyEncoding::Gzip
            }
            Some(_) => BodyEncoding::Other,
        }
    }
}

/// A gzip answer decompressed for a client that did not accept gzip. Its head goes out
/// with the first plain bytes, so corrupt data found before them can still be a `502`.
pub struct Decompressing {
    decoder: GzipDecoder,
    /// The re-framed head, until it is sent.
    head: Option<Vec<u8>>,
    /// HTTP/1.1: chunks; HTTP/1.0: raw bytes until close.
    chunked: bool,
    /// Compressed bytes not inflated yet: a call stops once it has put out `room` bytes,
    /// so a small read of a bomb cannot flood the client's queue (backpressure).
    pending: Vec<u8>,
}

/// Compressed bytes inflated at a time, so the output of a call stays near its room:
/// deflate expands at most about 1032 times, so a slice puts out at most ~66 KB.
const INPUT_SLICE: usize = 64;

impl Decompressing {
    /// `close`: the client connection ends after this answer (always for HTTP/1.0).
    pub fn new(head: &ResponseHead, minor_version: u8, close: bool) -> Decompressing {
        let chunked = minor_version > 0;
        let plain = head.without_headers(&["content-encoding", "content-length"]);
        let framing: &[(&str, &str)] =
            if chunked { &[("Transfer-Encoding", "chunked")] } else { &[] };
        // `dechunk`: the cloud's own Transfer-Encoding is not passed on.
        let bytes = plain.to_client_bytes(minor_version, close || !chunked, true, framing);
        let decoder = GzipDecoder::new(usize::MAX);
        Decompressing { decoder, head: Some(bytes), chunked, pending: Vec::new() }
    }

    /// Whether any of the answer went out (after that, an error can only cut it short).
    pub fn head_sent(&self) -> bool {
        self.head.is_none()
    }

    /// Compressed bytes from the cloud (none: go on with what waits): the client's bytes
    /// (head, framed plain bytes) to `out`, the plain bytes to `copy`, until about `room`
    /// plain bytes went out; the rest waits for the next call.
    pub fn feed(
        &mut self,
        compressed: &[u8],
        room: usize,
        out: &mut dyn FnMut(&[u8]),
        copy: &mut dyn FnMut(&[u8]),
    ) -> Result<(), GzipError> {
        self.pending.extend_from_slice(compressed);
        let (head, chunked) = (&mut self.head, self.chunked);
        let (mut used, mut produced) = (0, 0);
        while used < self.pending.len() && produced < room {
            let end = (used + INPUT_SLICE).min(self.pending.len());
            self.decoder.feed(&self.pending[used..end], &mut |plain| {
                if plain.is_empty() {
                    return;
                }
                produced += plain.len();
                if let Some(head) = head.take() {
                    out(&head);
                }
                if chunked {
                    out(&encode_chunk(plain));
                } else {
                    out(plain);
                }
                copy(plain);
            })?;
            used = end;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// Compressed bytes wait to be inflated.
    /// Whether the body inflates past `limit` so far (the cache must not hold a bomb's
    /// output, though the client may read it, with backpressure).
    pub fn breaks(&self, limit: RatioLimit) -> bool {
        self.decoder.breaks(limit)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The cloud's body ended: the stream must be complete; then the answer is closed.
    pub fn finish(&mut self, out: &mut dyn FnMut(&[u8])) -> Result<(), GzipError> {
        self.decoder.finish()?;
        if let Some(head) = self.head.take() {
            out(&head);
        }
        if self.chunked {
            out(LAST_CHUNK);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_head(text: &str) -> ResponseHead {
        match crate::http1::parse_response(text.as_bytes()) {
            Ok(Some((head, _))) => head,
            _ => panic!("test head does not parse"),
        }
    }

    #[test]
    fn gzip_is_asked_for_alongside_what_the_client_accepts() {
        assert_eq!(upstream_accept_encoding(None), "gzip");
        assert_eq!(upstream_accept_encoding(Some(" ")), "gzip");
        assert_eq!(upstream_accept_encoding(Some("gzip")), "gzip");
        assert_eq!(upstream_accept_encoding(Some("br")), "br, gzip");
        assert_eq!(upstream_accept_encoding(Some("gzip;q=0")), "gzip;q=0, gzip");
    }

    #[test]
    fn encodings_of_answers() {
        let with = |value: &str| {
            let text = format!("HTTP/1.1 200 OK\r\nContent-Encoding: {value}\r\n\r\n");
            BodyEncoding::of(&response_head(&text))
        };
        assert_eq!(
            BodyEncoding::of(&response_head("HTTP/1.1 200 OK\r\n\r\n")),
            BodyEncoding::Identity
        );
        assert_eq!(with("identity"), BodyEncoding::Identity);
        assert_eq!(with("GZIP"), BodyEncoding::Gzip);
        assert_eq!(with("br"), BodyEncoding::Other);
    }

    #[test]
    fn a_bomb_is_inflated_only_as_far_as_the_room_and_nothing_is_lost() {
        let head = response_head("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n");
        let plain = vec![b'0'; 4 << 20];
        let compressed = gzip::compress(&plain);
        assert!(compressed.len() < 64 * 1024, "a bomb: {} bytes", compressed.len());
        let mut decompressing = Decompressing::new(&head, 0, true);
        let room = 32 * 1024;
        let (mut out, mut calls) = (Vec::new(), 0);
        let mut input: &[u8] = &compressed;
        while input.len() + usize::from(decompressing.has_pending()) > 0 {
            let piece = &input[..input.len().min(16 * 1024)];
            input = &input[piece.len()..];
            let mut call = Vec::new();
            decompressing
                .feed(piece, room, &mut |b| call.extend_from_slice(b), &mut |_| {})
                .unwrap();
            assert!(call.len() <= room + 72 * 1024, "one call put out {} bytes", call.len());
            out.extend(call);
            calls += 1;
        }
        decompressing.finish(&mut |b| out.extend_from_slice(b)).unwrap();
        assert!(calls > 100, "the bomb was spread over {calls} calls");
        let body_start = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(&out[body_start..], &plain[..], "every byte arrives, in order");
    }

    #[test]
    fn a_gzip_answer_is_re_framed_chunked_for_http_1_1_and_until_close_for_1_0() {
        let head = response_head(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n\
             Content-Length: 99\r\n\r\n",
        );
        let body = b"{\"kind\":\"PodList\",\"items\":[]}".repeat(50);
        let compressed = gzip::compress(&body);
        for minor in [1, 0] {
            let mut decompressing = Decompressing::new(&head, minor, false);
            let (mut out, mut copy) = (Vec::new(), Vec::new());
            for piece in compressed.chunks(5) {
                let mut to_client = |b: &[u8]| out.extend_from_slice(b);
                decompressing
                    .feed(piece, usize::MAX, &mut to_client, &mut |b| copy.extend_from_slice(b))
                    .unwrap();
            }
            decompressing.finish(&mut |b| out.extend_from_slice(b)).unwrap();
            let sent = String::from_utf8(out).unwrap();
            let (head_text, rest) = sent.split_once("\r\n\r\n").unwrap();
            let lower = head_text.to_ascii_lowercase();
            assert!(!lower.contains("content-encoding") && !lower.contains("content-length"));
            assert_eq!(copy, body);
            if minor == 1 {
                assert!(lower.contains("transfer-encoding: chunked"), "{head_text}");
                assert!(rest.ends_with("0\r\n\r\n"));
            } else {
                assert!(lower.contains("connection: close"), "{head_text}");
                assert_eq!(rest.as_bytes(), body.as_slice());
            }
        }
    }

    #[test]
    fn corrupt_data_before_any_plain_byte_sends_nothing() {
        let head = response_head("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n");
        let mut decompressing = Decompressing::new(&head, 1, false);
        let mut out = Vec::new();
        let mut to_client = |b: &[u8]| out.extend_from_slice(b);
        let bad = decompressing.feed(b"not gzip at all", usize::MAX, &mut to_client, &mut |_| {});
        assert!(bad.is_err());
        assert!(!decompressing.head_sent());
        assert!(out.is_empty());
    }
}
