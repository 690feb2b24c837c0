//! gzip (RFC 1952) on the cloud link: a streaming decoder with a bounded output — member
//! header, raw deflate through `miniz_oxide`, trailer with its CRC-32 and length checked —
//! and a one-shot encoder for answers served from the cache.
//!
//! The decoder never holds a body: each `feed` hands decompressed bytes to a sink as they
//! come, at most `limit` in all (a decompression bomb is an error, not an allocation).

use std::fmt;

use miniz_oxide::inflate::stream::{InflateState, inflate};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// kube-apiserver compresses answers larger than this when the client accepts gzip.
pub const COMPRESS_ABOVE: usize = 128 * 1024;

/// Decompressed bytes produced per inflate call, handed on before the next.
const OUTPUT_STEP: usize = 8 * 1024;

const MAGIC: [u8; 2] = [0x1f, 0x8b];
const METHOD_DEFLATE: u8 = 8;
const FLAG_HEADER_CRC: u8 = 0x02;
const FLAG_EXTRA: u8 = 0x04;
const FLAG_NAME: u8 = 0x08;
const FLAG_COMMENT: u8 = 0x10;
const FLAGS_RESERVED: u8 = 0xe0;
const FIXED_HEADER: usize = 10;
const TRAILER: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GzipError {
    /// The member header is not gzip with deflate.
    BadHeader(&'static str),
    /// The deflate data is invalid.
    Corrupt,
    /// The trailer's CRC-32 does not match the data.
    Checksum,
    /// The trailer's length does not match the data.
    Length,
    /// More than the decoder's limit would come out.
    TooLarge,
    /// Past its floor, more would come out per byte in than the decoder's `RatioLimit`
    /// allows: a decompression bomb.
    RatioTooHigh,
    /// The stream ended inside a member.
    Truncated,
}

impl fmt::Display for GzipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GzipError::BadHeader(why) => write!(f, "bad gzip header: {why}"),
            GzipError::Corrupt => f.write_str("corrupt deflate data"),
            GzipError::Checksum => f.write_str("gzip CRC-32 mismatch"),
            GzipError::Length => f.write_str("gzip length mismatch"),
            GzipError::TooLarge => f.write_str("gzip body decompresses past the limit"),
            GzipError::RatioTooHigh => f.write_str("gzip body inflates like a decompression bomb"),
            GzipError::Truncated => f.write_str("gzip stream cut short"),
        }
    }
}

impl std::error::Error for GzipError {}

/// The optional header fields, in the order RFC 1952 puts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Fixed,
    ExtraLength,
    Extra,
    Name,
    Comment,
    HeaderCrc,
}

#[derive(Debug, Clone, Copy)]
struct HeaderState {
    field: Field,
    flags: u8,
    /// Bytes of the current field read so far.
    have: usize,
    /// Length of the extra field (read from its two length bytes).
    extra: usize,
}

enum Stage {
    Header(HeaderState),
    Body,
    Trailer([u8; TRAILER], usize),
    /// Between members: at least one is complete; another may follow.
    Ended,
}

/// A guard against decompression bombs for a decoder that must hold what it inflates:
/// once more than `floor` bytes came out, at most `ratio` bytes may come out per deflate
/// byte in. Kubernetes answers inflate about 5–10:1; a bomb a thousand to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatioLimit {
    pub ratio: usize,
    pub floor: usize,
}

impl RatioLimit {
    /// Whether `produced` bytes out of `consumed` deflate bytes break the limit.
    pub fn exceeded(self, produced: usize, consumed: usize) -> bool {
        produced > self.floor && produced > consumed.saturating_mul(self.ratio)
    }
}

/// A streaming gzip decoder (concatenated members allowed, as Go's reader allows them).
pub struct GzipDecoder {
    stage: Stage,
    inflater: Box<InflateState>,
    crc: u32,
    /// Bytes of the current member (mod 2^32, as the trailer counts them).
    member_size: u32,
    produced: usize,
    limit: usize,
    /// Deflate bytes taken in, for `ratio_limit`.
    consumed: usize,
    ratio_limit: Option<RatioLimit>,
}

impl GzipDecoder {
    /// A decoder whose sink gets at most `limit` bytes in all.
    pub fn new(limit: usize) -> GzipDecoder {
        GzipDecoder {
            stage: Stage::Header(header_start()),
            inflater: InflateState::new_boxed(DataFormat::Raw),
            crc: 0,
            member_size: 0,
            produced: 0,
            limit,
            consumed: 0,
            ratio_limit: None,
        }
    }

    /// The same decoder, refusing bombs (see [`RatioLimit`]).
    pub fn with_ratio_limit(self, ratio_limit: RatioLimit) -> GzipDecoder {
        GzipDecoder { ratio_limit: Some(ratio_limit), ..self }
    }

    /// Decompressed bytes so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    /// Decodes `input`, handing what it decompresses to `sink`. After an error the
    /// decoder is spent: every later call fails the same way.
    pub fn feed(&mut self, mut input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(), GzipError> {
        while !input.is_empty() {
            let used = match self.stage {
                Stage::Ended => {
                    self.start_member();
                    0
                }
                Stage::Header(state) => self.header(state, input)?,
                Stage::Body => self.body(input, sink)?,
                Stage::Trailer(bytes, have) => self.trailer(bytes, have, input)?,
            };
            input = &input[used..];
        }
        Ok(())
    }

    /// The stream is over: fine only at the end of a member.
    pub fn finish(&self) -> Result<(), GzipError> {
        match self.stage {
            Stage::Ended => Ok(()),
            _ => Err(GzipError::Truncated),
        }
    }

    fn inflates_like_a_bomb(&self, produced: usize) -> bool {
        self.ratio_limit.is_some_and(|limit| limit.exceeded(produced, self.consumed))
    }

    /// Whether what came out so far breaks `limit` (for a caller that holds the output).
    pub fn breaks(&self, limit: RatioLimit) -> bool {
        limit.exceeded(self.produced, self.consumed)
    }

    fn start_member(&mut self) {
        self.stage = Stage::Header(header_start());
        self.inflater = InflateState::new_boxed(DataFormat::Raw);
        self.crc = 0;
        self.member_size = 0;
    }

    /// Header bytes, one at a time (headers are a few bytes); returns bytes used.
    fn header(&mut self, mut state: HeaderState, input: &[u8]) -> Result<usize, GzipError> {
        for (used, &byte) in input.iter().enumerate() {
            match header_byte(&mut state, byte)? {
                Some(next) => state = next,
                None => {
                    self.stage = Stage::Body;
                    return Ok(used + 1);
                }
            }
        }
        self.stage = Stage::Header(state);
        Ok(input.len())
    }

    fn body(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<usize, GzipError> {
        let mut out = [0u8; OUTPUT_STEP];
        let mut used = 0;
        loop {
            let result = inflate(&mut self.inflater, &input[used..], &mut out, MZFlush::None);
            used += result.bytes_consumed;
            self.consumed += result.bytes_consumed;
            let written = &out[..result.bytes_written];
            if self.produced + written.len() > self.limit {
                self.stage = Stage::Header(spent());
                return Err(GzipError::TooLarge);
            }
            if self.inflates_like_a_bomb(self.produced + written.len()) {
                self.stage = Stage::Header(spent());
                return Err(GzipError::RatioTooHigh);
            }
            self.produced += written.len();
            self.crc = crc32(self.crc, written);
            self.member_size = self.member_size.wrapping_add(written.len() as u32);
            sink(written);
            match result.status {
                Ok(MZStatus::StreamEnd) => {
                    self.stage = Stage::Trailer([0; TRAILER], 0);
                    return Ok(used);
                }
                // No progress: all input taken (more is needed), or stuck on input left.
                Ok(_) | Err(MZError::Buf)
                    if result.bytes_consumed == 0 && result.bytes_written == 0 =>
                {
                    if used < input.len() {
                        self.stage = Stage::Header(spent());
                        return Err(GzipError::Corrupt);
                    }
                    return Ok(used);
                }
                Ok(_) | Err(MZError::Buf) => {}
                Err(_) => {
                    self.stage = Stage::Header(spent());
                    return Err(GzipError::Corrupt);
                }
            }
        }
    }

    fn trailer(
        &mut self,
        mut bytes: [u8; TRAILER],
        have: usize,
        input: &[u8],
    ) -> Result<usize, GzipError> {
        let take = (TRAILER - have).min(input.len());
        bytes[have..have + take].copy_from_slice(&input[..take]);
        if have + take < TRAILER {
            self.stage = Stage::Trailer(bytes, have + take);
            return Ok(take);
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let checked = if word(0) != self.crc {
            Err(GzipError::Checksum)
        } else if word(4) != self.member_size {
            Err(GzipError::Length)
        } else {
            Ok(take)
        };
        self.stage = if checked.is_ok() { Stage::Ended } else { Stage::Header(spent()) };
        checked
    }
}

fn header_start() -> HeaderState {
    HeaderState { field: Field::Fixed, flags: 0, have: 0, extra: 0 }
}

/// A header state that refuses every byte: a decoder after an error stays failed.
fn spent() -> HeaderState {
    HeaderState { field: Field::Fixed, flags: 0, have: FIXED_HEADER, extra: 0 }
}

/// One header byte: the next state, or `None` when the header is complete.
fn header_byte(state: &mut HeaderState, byte: u8) -> Result<Option<HeaderState>, GzipError> {
    let mut next = *state;
    next.have += 1;
    let field_done = match state.field {
        Field::Fixed => {
            match (state.have, byte) {
                (FIXED_HEADER.., _) => return Err(GzipError::BadHeader("decoder already failed")),
                (0, b) | (1, b) if b != MAGIC[state.have] => {
                    return Err(GzipError::BadHeader("not gzip"));
                }
                (2, b) if b != METHOD_DEFLATE => {
                    return Err(GzipError::BadHeader("not deflate"));
                }
                (3, b) if b & FLAGS_RESERVED != 0 => {
                    return Err(GzipError::BadHeader("reserved flags set"));
                }
                (3, b) => next.flags = b,
                _ => {}
            }
            next.have == FIXED_HEADER
        }
        Field::ExtraLength => {
            next.extra |= usize::from(byte) << (8 * state.have);
            next.have == 2
        }
        Field::Extra => next.have >= state.extra,
        Field::Name | Field::Comment => byte == 0,
        Field::HeaderCrc => next.have == 2,
    };
    if !field_done {
        return Ok(Some(next));
    }
    let after = if next.field == Field::ExtraLength && next.extra > 0 {
        Some(Field::Extra)
    } else {
        next_field(next.flags, next.field)
    };
    Ok(after.map(|field| HeaderState { field, have: 0, ..next }))
}

/// The optional field that follows `done`, by the header's flags.
fn next_field(flags: u8, done: Field) -> Option<Field> {
    [
        (Field::ExtraLength, FLAG_EXTRA),
        (Field::Name, FLAG_NAME),
        (Field::Comment, FLAG_COMMENT),
        (Field::HeaderCrc, FLAG_HEADER_CRC),
    ]
    .into_iter()
    .find(|&(field, flag)| field > done && flags & flag != 0)
    .map(|(field, _)| field)
}

/// `body` as one gzip member at level 1 (fastest, as kube-apiserver compresses).
pub fn compress(body: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(body, 1);
    let mut out = Vec::with_capacity(FIXED_HEADER + deflated.len() + TRAILER);
    // No flags, no mtime; XFL 4: fastest; OS 255: unknown.
    out.extend_from_slice(&[MAGIC[0], MAGIC[1], METHOD_DEFLATE, 0, 0, 0, 0, 0, 4, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc32(0, body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out
}

/// Whether an `Accept-Encoding` value accepts gzip (a `gzip` or `*` token not weighted
/// `q=0`).
pub fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    accept_encoding.is_some_and(|value| {
        value.split(',').any(|token| {
            let mut parts = token.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q == 0.0))
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
    })
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE, as gzip uses it) of `bytes`, continuing from `crc`.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &byte in bytes {
        c = CRC_TABLE[((c ^ u32::from(byte)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_limit_stops_a_bomb_near_its_floor_and_passes_real_bodies() {
        let limit = RatioLimit { ratio: 100, floor: 1 << 20 };
        let bomb = compress(&vec![b' '; 64 << 20]);
        let mut decoder = GzipDecoder::new(usize::MAX).with_ratio_limit(limit);
        let mut out = 0;
        assert_eq!(
            decoder.feed(&bomb, &mut |plain| out += plain.len()),
            Err(GzipError::RatioTooHigh)
        );
        assert!(out <= limit.floor + OUTPUT_STEP, "{out} bytes came out of the bomb");
        let body = sample();
        let mut decoder = GzipDecoder::new(usize::MAX).with_ratio_limit(limit);
        let mut plain = Vec::new();
        decoder.feed(&compress(&body), &mut |bytes| plain.extend_from_slice(bytes)).expect("ok");
        assert_eq!(plain, body);
    }

    fn sample() -> Vec<u8> {
        let mut body = Vec::new();
        for i in 0..3000 {
            body.extend_from_slice(
                format!("{{\"name\":\"pod-{i}\",\"uid\":\"{}\"}},", i * 7919).as_bytes(),
            );
        }
        body
    }

    fn decode(stream: &[u8], split: usize, limit: usize) -> Result<Vec<u8>, GzipError> {
        let mut decoder = GzipDecoder::new(limit);
        let mut out = Vec::new();
        for piece in stream.chunks(split.max(1)) {
            decoder.feed(piece, &mut |bytes| out.extend_from_slice(bytes))?;
        }
        decoder.finish()?;
        assert_eq!(decoder.produced(), out.len());
        Ok(out)
    }

    #[test]
    fn crc32_of_the_check_string() {
        assert_eq!(crc32(0, b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xcbf4_3926);
    }

    #[test]
    fn round_trips_and_compresses() {
        let body = sample();
        let stream = compress(&body);
        assert!(stream.len() * 3 < body.len(), "{} of {}", stream.len(), body.len());
        assert_eq!(decode(&stream, stream.len(), usize::MAX).unwrap(), body);
        assert_eq!(decode(&compress(b""), 1, 0).unwrap(), b"");
    }

    #[test]
    fn decodes_what_an_independent_encoder_wrote() {
        use std::io::Write;
        let body = sample();
        for level in [1, 6, 9] {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            encoder.write_all(&body).unwrap();
            let stream = encoder.finish().unwrap();
            assert_eq!(decode(&stream, 1000, usize::MAX).unwrap(), body, "level {level}");
        }
        let ours = compress(&body);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&ours[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, body, "an independent decoder reads ours");
    }

    #[test]
    fn decodes_at_every_split_point() {
        let body = b"hello, gzip world; hello, gzip world; hello again".repeat(20);
        let stream = compress(&body);
        for split in 1..stream.len() {
            assert_eq!(decode(&stream, split, usize::MAX).unwrap(), body, "split {split}");
        }
        // Two pieces, cut at every byte.
        for cut in 0..stream.len() {
            let mut decoder = GzipDecoder::new(usize::MAX);
            let mut out = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                decoder.feed(piece, &mut |b| out.extend_from_slice(b)).unwrap();
            }
            decoder.finish().unwrap();
            assert_eq!(out, body, "cut {cut}");
        }
    }

    #[test]
    fn optional_header_fields_are_skipped() {
        let body = b"with a name, a comment, extra and a header crc";
        let plain = compress(body);
        let mut stream =
            vec![0x1f, 0x8b, 8, FLAG_EXTRA | FLAG_NAME | FLAG_COMMENT | FLAG_HEADER_CRC];
        stream.extend_from_slice(&[0, 0, 0, 0, 0, 255]);
        stream.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        stream.extend_from_slice(b"name.json\0a comment\0");
        stream.extend_from_slice(&[0x12, 0x34]);
        stream.extend_from_slice(&plain[FIXED_HEADER..]);
        for split in [1, 2, 5, stream.len()] {
            assert_eq!(decode(&stream, split, usize::MAX).unwrap(), body, "split {split}");
        }
    }

    #[test]
    fn concatenated_members_decode_as_one_body() {
        let mut stream = compress(b"first ");
        stream.extend_from_slice(&compress(b"second"));
        assert_eq!(decode(&stream, 3, usize::MAX).unwrap(), b"first second");
    }

    #[test]
    fn truncated_streams_are_errors_at_every_length() {
        let stream = compress(&sample()[..4000]);
        for length in 0..stream.len() {
            let result = decode(&stream[..length], 7, usize::MAX);
            assert_eq!(result.unwrap_err(), GzipError::Truncated, "length {length}");
        }
    }

    #[test]
    fn corrupt_data_and_bad_headers_are_errors() {
        let stream = compress(&sample());
        let mut corrupt = stream.clone();
        for byte in &mut corrupt[FIXED_HEADER..FIXED_HEADER + 40] {
            *byte = 0xff;
        }
        assert_eq!(decode(&corrupt, 100, usize::MAX).unwrap_err(), GzipError::Corrupt);
        assert!(matches!(decode(b"{\"kind\":\"Status\"}", 4, 100), Err(GzipError::BadHeader(_))));
        let mut not_deflate = stream.clone();
        not_deflate[2] = 7;
        assert!(matches!(decode(&not_deflate, 100, usize::MAX), Err(GzipError::BadHeader(_))));
        let mut trailing = stream.clone();
        trailing.extend_from_slice(b"junk");
        assert!(matches!(decode(&trailing, 100, usize::MAX), Err(GzipError::BadHeader(_))));
    }

    #[test]
    fn a_wrong_crc_or_length_is_an_error_and_the_decoder_stays_failed() {
        let stream = compress(b"checked at the end");
        let crc_at = stream.len() - TRAILER;
        let mut wrong_crc = stream.clone();
        wrong_crc[crc_at] ^= 1;
        assert_eq!(decode(&wrong_crc, 1, usize::MAX).unwrap_err(), GzipError::Checksum);
        let mut wrong_length = stream.clone();
        wrong_length[crc_at + 4] ^= 1;
        assert_eq!(decode(&wrong_length, 1, usize::MAX).unwrap_err(), GzipError::Length);
        let mut decoder = GzipDecoder::new(usize::MAX);
        assert!(decoder.feed(&wrong_crc, &mut |_| {}).is_err());
        assert!(decoder.feed(&stream, &mut |_| {}).is_err(), "a failed decoder stays failed");
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = compress(&vec![0u8; 8 << 20]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let mut decoder = GzipDecoder::new(1 << 20);
        let mut out = 0;
        let result = decoder.feed(&bomb, &mut |bytes| out += bytes.len());
        assert_eq!(result.unwrap_err(), GzipError::TooLarge);
        assert!(out <= 1 << 20, "{out}");
    }

    #[test]
    fn accept_encoding_tokens() {
        assert!(accepts_gzip(Some("gzip")));
        assert!(accepts_gzip(Some("deflate, GZIP;q=0.5")));
        assert!(accepts_gzip(Some("*")));
        assert!(!accepts_gzip(Some("gzip;q=0")));
        assert!(!accepts_gzip(Some("identity")));
        assert!(!accepts_gzip(Some("")));
        assert!(!accepts_gzip(None));
    }
}
