//! Message body tracking: finds where a body ends in a byte stream and yields its
//! payload (de-chunked) without buffering it.
//!
//! The proxy passes body bytes through unchanged; this tracker runs over the same
//! bytes so the proxy knows where the message ends (for keep-alive) and can tee the
//! payload to the cache or the watch-event parser.

use crate::http1::{Framing, HttpError};

const MAX_CHUNK_SIZE_DIGITS: usize = 16;
const MAX_LINE_EXTRA: usize = 4096;
const MAX_TRAILER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `digits` read so far.
    Size {
        size: u64,
        digits: usize,
    },
    /// After the size: extension bytes up to the line end.
    Extension {
        size: u64,
        seen: usize,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerEndLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// Tracks one body.
#[derive(Debug, Clone)]
pub struct BodyTracker {
    state: State,
    trailer_bytes: usize,
}

/// What one `feed` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the input that belong to this body.
    pub consumed: usize,
    /// The body ended within those bytes.
    pub done: bool,
}

impl BodyTracker {
    pub fn new(framing: Framing) -> BodyTracker {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size { size: 0, digits: 0 }),
            Framing::UntilClose => State::UntilClose,
        };
        BodyTracker { state, trailer_bytes: 0 }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the body ends only when the connection closes.
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// Consumes body bytes from `input`, handing payload slices to `payload`.
    pub fn feed(
        &mut self,
        input: &[u8],
        payload: &mut dyn FnMut(&[u8]),
    ) -> Result<Progress, HttpError> {
        match self.state {
            State::Done => Ok(Progress { consumed: 0, done: true }),
            State::UntilClose => {
                payload(input);
                Ok(Progress { consumed: input.len(), done: false })
            }
            State::Length(remaining) => {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len());
                payload(&input[..take]);
                let left = remaining - take as u64;
                self.state = if left == 0 { State::Done } else { State::Length(left) };
                Ok(Progress { consumed: take, done: left == 0 })
            }
            State::Chunked(_) => self.feed_chunked(input, payload),
        }
    }

    fn feed_chunked(
        &mut self,
        input: &[u8],
        payload: &mut dyn FnMut(&[u8]),
    ) -> Result<Progress, HttpError> {
        let mut at = 0;
        while at < input.len() {
            let State::Chunked(chunk) = self.state else { break };
            if let Chunk::Data { remaining } = chunk {
                let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(input.len() - at);
                payload(&input[at..at + take]);
                at += take;
                let left = remaining - take as u64;
                self.state = State::Chunked(if left == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data { remaining: left }
                });
                continue;
            }
            self.state = self.chunk_step(chunk, input[at])?;
            at += 1;
        }
        Ok(Progress { consumed: at, done: self.state == State::Done })
    }

    /// One byte of chunk framing (everything but data).
    fn chunk_step(&mut self, chunk: Chunk, byte: u8) -> Result<State, HttpError> {
        let bad = |why| Err(HttpError::BadFraming(why));
        let next = match chunk {
            Chunk::Size { size, digits } => match (byte as char).to_digit(16) {
                Some(d) if digits < MAX_CHUNK_SIZE_DIGITS => {
                    Chunk::Size { size: (size << 4) | u64::from(d), digits: digits + 1 }
                }
                Some(_) => return bad("chunk size too large"),
                None if digits == 0 => return bad("missing chunk size"),
                None => match byte {
                    b';' | b' ' | b'\t' => Chunk::Extension { size, seen: 0 },
                    b'\r' => Chunk::SizeLf { size },
                    b'\n' => return Ok(self.after_size_line(size)),
                    _ => return bad("invalid chunk size"),
                },
            },
            Chunk::Extension { size, seen } => match byte {
                b'\r' => Chunk::SizeLf { size },
                b'\n' => return Ok(self.after_size_line(size)),
                _ if seen >= MAX_LINE_EXTRA => return bad("chunk extension too long"),
                _ => Chunk::Extension { size, seen: seen + 1 },
            },
            Chunk::SizeLf { size } if byte == b'\n' => return Ok(self.after_size_line(size)),
            Chunk::SizeLf { .. } => return bad("expected LF after chunk size"),
            Chunk::DataCr if byte == b'\r' => Chunk::DataLf,
            Chunk::DataLf if byte == b'\n' => Chunk::Size { size: 0, digits: 0 },
            Chunk::DataCr | Chunk::DataLf => return bad("expected CRLF after chunk data"),
            Chunk::TrailerStart => match byte {
                b'\r' => Chunk::TrailerEndLf,
                b'\n' => return Ok(State::Done),
                _ => self.trailer_byte(Chunk::TrailerLine)?,
            },
            Chunk::TrailerLine => match byte {
                b'\n' => Chunk::TrailerStart,
                _ => self.trailer_byte(Chunk::TrailerLine)?,
            },
            Chunk::TrailerEndLf if byte == b'\n' => return Ok(State::Done),
            Chunk::TrailerEndLf => return bad("expected LF after trailers"),
            Chunk::Data { .. } => chunk, // handled by the caller
        };
        Ok(State::Chunked(next))
    }

    fn after_size_line(&self, size: u64) -> State {
        State::Chunked(if size == 0 {
            Chunk::TrailerStart
        } else {
            Chunk::Data { remaining: size }
        })
    }

    fn trailer_byte(&mut self, next: Chunk) -> Result<Chunk, HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(HttpError::BadFraming("trailers too large"));
        }
        Ok(next)
    }
}

/// Frames `payload` as one HTTP/1.1 chunk.
pub fn encode_chunk(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// The chunk that ends a chunked body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn run(framing: Framing, input: &[u8], split: usize) -> Result<(Vec<u8>, Progress), HttpError> {
        let mut tracker = BodyTracker::new(framing);
        let mut payload = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for piece in input.chunks(split.max(1)) {
            let progress = tracker.feed(piece, &mut |p| payload.extend_from_slice(p))?;
            consumed += progress.consumed;
            done = progress.done;
            if done {
                break;
            }
        }
        Ok((payload, Progress { consumed, done }))
    }

    #[test]
    fn chunked_decodes_at_any_split() {
        let body = b"5;name=v\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for split in 1..body.len() {
            let (payload, progress) = run(Framing::Chunked, body, split).expect("valid");
            assert_eq!(payload, b"hello, world", "split {split}");
            assert!(progress.done);
            assert_eq!(
                &body[progress.consumed..],
                b"NEXT".get(..body.len() - progress.consumed).unwrap_or(b"")
            );
        }
    }

    #[test]
    fn length_stops_at_the_end() {
        let (payload, progress) = run(Framing::Length(3), b"abcdef", 100).expect("valid");
        assert_eq!((payload.as_slice(), progress.consumed, progress.done), (&b"abc"[..], 3, true));
    }

    #[test]
    fn bad_chunks_are_errors() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"11111111111111111\r\n"] {
            assert!(run(Framing::Chunked, bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoded_chunks_decode() {
        let mut stream = encode_chunk(b"{\"type\":\"ADDED\"}\n");
        stream.extend_from_slice(LAST_CHUNK);
        let (payload, progress) = run(Framing::Chunked, &stream, 3).expect("valid");
        assert_eq!(payload, b"{\"type\":\"ADDED\"}\n");
        assert!(progress.done);
    }
}
