//! HTTP/1.1 response framing for the test client: head parsing (httparse), body framing
//! rules and an incremental chunked-transfer decoder that works across read boundaries.

use std::io;

/// Response headers in arrival order, looked up case-insensitively.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// True when a comma-separated header such as `Connection` lists `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body text when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("response {} body is not JSON ({e}): {}", self.status, self.text())
        })
    }

    /// Panics (showing the body) unless the status is `expected`.
    pub fn expect_status(self, expected: u16) -> Response {
        assert_eq!(
            self.status,
            expected,
            "unexpected status; headers {:?}; body: {}",
            self.headers,
            self.text()
        );
        self
    }
}

/// A parsed status line and header block.
#[derive(Clone, Debug)]
pub struct Head {
    pub status: u16,
    pub headers: Headers,
}

/// Parses a response head from the start of `buf`: `Ok(None)` when incomplete, otherwise the
/// head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> io::Result<Option<(Head, usize)>> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut response = httparse::Response::new(&mut slots);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let headers = response
                .headers
                .iter()
                .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            let status = response.code.unwrap_or(0);
            Ok(Some((Head { status, headers: Headers(headers) }, len)))
        }
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "bad response head ({e}): {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(200)])
            ),
        )),
    }
}

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

pub fn framing(head: &Head, request_method: &str) -> io::Result<Framing> {
    if request_method.eq_ignore_ascii_case("HEAD")
        || head.status < 200
        || head.status == 204
        || head.status == 304
    {
        return Ok(Framing::None);
    }
    if head.headers.has_token("transfer-encoding", "chunked") {
        return Ok(Framing::Chunked);
    }
    match head.headers.get("content-length") {
        Some(value) => value.trim().parse().map(Framing::Length).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, format!("bad Content-Length {value:?}"))
        }),
        None => Ok(Framing::UntilClose),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
}

/// Decodes `Transfer-Encoding: chunked` incrementally: feed it whatever arrived, it appends
/// the payload it could decode and says how many input bytes it used.
#[derive(Debug)]
pub struct ChunkDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

impl Default for ChunkDecoder {
    fn default() -> Self {
        ChunkDecoder { state: ChunkState::Size, line: Vec::new() }
    }
}

impl ChunkDecoder {
    /// True once the last chunk and the trailer section were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input` into `out`; returns the number of input bytes consumed (less than
    /// `input.len()` only when the body ended and the rest belongs to the next message).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut used = 0;
        while used < input.len() && !self.is_done() {
            let rest = &input[used..];
            used += match self.state {
                ChunkState::Data(remaining) => {
                    let take = remaining.min(rest.len());
                    out.extend_from_slice(&rest[..take]);
                    self.state = if take == remaining {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(remaining - take)
                    };
                    take
                }
                _ => self.feed_line(rest)?,
            };
        }
        Ok(used)
    }

    /// Accumulates one CRLF-terminated line of the framing and acts on it once complete.
    fn feed_line(&mut self, rest: &[u8]) -> io::Result<usize> {
        let Some(newline) = rest.iter().position(|&b| b == b'\n') else {
            self.line.extend_from_slice(rest);
            return Ok(rest.len());
        };
        self.line.extend_from_slice(&rest[..newline]);
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches('\r');
        self.state = match self.state {
            ChunkState::Size => match chunk_size(line)? {
                0 => ChunkState::Trailer,
                size => ChunkState::Data(size),
            },
            ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
            ChunkState::DataEnd => {
                return Err(invalid(format!("chunk not followed by CRLF: {line:?}")));
            }
            ChunkState::Trailer if line.is_empty() => ChunkState::Done,
            state => state,
        };
        Ok(newline + 1)
    }
}

fn chunk_size(line: &str) -> io::Result<usize> {
    let digits = line.split(';').next().unwrap_or("").trim();
    usize::from_str_radix(digits, 16).map_err(|_| invalid(format!("bad chunk size line {line:?}")))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Encodes `data` as a chunked body with chunks of at most `chunk_size` bytes.
pub fn encode_chunked(data: &[u8], chunk_size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / chunk_size.max(1) * 8 + 8);
    for chunk in data.chunks(chunk_size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
