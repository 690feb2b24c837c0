//! Protocol-buffer wire format, as much as a caching proxy needs without generated code: a
//! zero-copy field [`Reader`], a [`Writer`] that appends fields to a buffer, and Kubernetes'
//! protobuf envelope (`k8s\0` followed by a `runtime.Unknown` whose `raw` holds the object).
//!
//! Only what the Kubernetes API uses is accepted: varint, 64-bit, length-delimited and 32-bit
//! fields. Groups (wire types 3 and 4, deprecated and never emitted by Kubernetes), truncated
//! input, over-long varints and field number 0 are errors, never panics.

use std::fmt;

/// The four bytes that open every Kubernetes protobuf body (but not a watch frame).
pub const MAGIC: &[u8; 4] = b"k8s\0";
/// The media type of a Kubernetes protobuf body.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The length prefix of a watch frame: 4 bytes, big-endian.
pub const FRAME_PREFIX: usize = 4;

/// The payload length a watch frame at the start of `stream` announces, once its prefix is in.
pub fn announced_frame_len(stream: &[u8]) -> Option<usize> {
    let prefix = stream.get(..FRAME_PREFIX)?;
    Some(u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize)
}

/// The largest field number protobuf allows (2^29 - 1).
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;
/// A 64-bit varint takes at most 10 bytes.
const MAX_VARINT_BYTES: usize = 10;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_BYTES: u8 = 2;
const WIRE_FIXED32: u8 = 5;

// runtime.Unknown and its runtime.TypeMeta (k8s.io/apimachinery/pkg/runtime/generated.proto).
const UNKNOWN_TYPE_META: u32 = 1;
const UNKNOWN_RAW: u32 = 2;
const UNKNOWN_CONTENT_ENCODING: u32 = 3;
const UNKNOWN_CONTENT_TYPE: u32 = 4;
const TYPE_META_API_VERSION: u32 = 1;
const TYPE_META_KIND: u32 = 2;

/// Why bytes are not the protobuf this module reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// The input ends inside a tag, a varint, a fixed-width value or a length-delimited field.
    Truncated,
    /// A varint runs past 10 bytes or 64 bits.
    VarintTooLong,
    /// Field number 0, or one above 2^29 - 1.
    BadFieldNumber(u64),
    /// Wire types 3 and 4 (groups) and the undefined 6 and 7.
    UnsupportedWireType(u8),
    /// A known field came with another wire type than its schema says.
    WrongWireType { field: u32 },
    /// A string field is not UTF-8.
    InvalidUtf8 { field: u32 },
    /// The body does not start with `k8s\0`.
    MissingMagic,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Truncated => write!(f, "truncated protobuf"),
            ProtoError::VarintTooLong => write!(f, "protobuf varint longer than 10 bytes"),
            ProtoError::BadFieldNumber(n) => write!(f, "invalid protobuf field number {n}"),
            ProtoError::UnsupportedWireType(t) => write!(f, "unsupported protobuf wire type {t}"),
            ProtoError::WrongWireType { field } => {
                write!(f, "protobuf field {field} has an unexpected wire type")
            }
            ProtoError::InvalidUtf8 { field } => {
                write!(f, "protobuf string field {field} is not UTF-8")
            }
            ProtoError::MissingMagic => {
                write!(f, "the body does not start with the k8s protobuf magic")
            }
        }
    }
}

impl std::error::Error for ProtoError {}

/// One field's value, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// A length-delimited value: string, bytes or embedded message.
    pub fn bytes(self, field: u32) -> Result<&'a [u8], ProtoError> {
        match self {
            Value::Bytes(bytes) => Ok(bytes),
            _ => Err(ProtoError::WrongWireType { field }),
        }
    }

    pub fn string(self, field: u32) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| ProtoError::InvalidUtf8 { field })
    }

    pub fn varint(self, field: u32) -> Result<u64, ProtoError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(ProtoError::WrongWireType { field }),
        }
    }

    /// An `int64` (negative values are ten-byte two's-complement varints).
    pub fn int64(self, field: u32) -> Result<i64, ProtoError> {
        self.varint(field).map(|v| v as i64)
    }

    /// An `int32`: protobuf keeps the low 32 bits of the varint.
    pub fn int32(self, field: u32) -> Result<i32, ProtoError> {
        self.varint(field).map(|v| v as i32)
    }
}

/// Iterates over the fields of one message as `(field_number, value)`. After the first
/// error it yields nothing more.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(message: &'a [u8]) -> Reader<'a> {
        Reader { rest: message }
    }

    /// Bytes not read yet: the end of the field just read is `message.len() - remaining()`.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), ProtoError> {
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > MAX_FIELD_NUMBER {
            return Err(ProtoError::BadFieldNumber(number));
        }
        let value = match (tag & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_FIXED64 => Value::Fixed64(u64::from_le_bytes(self.take_array()?)),
            WIRE_BYTES => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            WIRE_FIXED32 => Value::Fixed32(u32::from_le_bytes(self.take_array()?)),
            other => return Err(ProtoError::UnsupportedWireType(other)),
        };
        Ok((number as u32, value))
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(MAX_VARINT_BYTES) {
            // The tenth byte holds bit 63 only; more would overflow 64 bits.
            if i == MAX_VARINT_BYTES - 1 && byte > 1 {
                return Err(ProtoError::VarintTooLong);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        if self.rest.len() >= MAX_VARINT_BYTES {
            Err(ProtoError::VarintTooLong)
        } else {
            Err(ProtoError::Truncated)
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtoError> {
        if len > self.rest.len() {
            return Err(ProtoError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let bytes = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<(u32, Value<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.rest = &[];
        }
        Some(field)
    }
}

/// Appends `value` as a base-128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Builds a message by appending fields in the order called.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Appends to bytes already written (e.g. [`MAGIC`]).
    pub fn from_vec(buf: Vec<u8>) -> Writer {
        Writer { buf }
    }

    fn tag(&mut self, field: u32, wire_type: u8) {
        put_varint(&mut self.buf, (u64::from(field) << 3) | u64::from(wire_type));
    }

    pub fn varint(&mut self, field: u32, value: u64) -> &mut Writer {
        self.tag(field, WIRE_VARINT);
        put_varint(&mut self.buf, value);
        self
    }

    /// An `int64` or `int32` field (negative values take ten bytes, as protobuf says).
    pub fn int64(&mut self, field: u32, value: i64) -> &mut Writer {
        self.varint(field, value as u64)
    }

    pub fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Writer {
        self.tag(field, WIRE_BYTES);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(value);
        self
    }

    pub fn string(&mut self, field: u32, value: &str) -> &mut Writer {
        self.bytes(field, value.as_bytes())
    }

    /// Any value, e.g. one copied unchanged from a [`Reader`].
    pub fn value(&mut self, field: u32, value: Value<'_>) -> &mut Writer {
        match value {
            Value::Varint(v) => self.varint(field, v),
            Value::Bytes(bytes) => self.bytes(field, bytes),
            Value::Fixed64(v) => {
                self.tag(field, WIRE_FIXED64);
                self.buf.extend_from_slice(&v.to_le_bytes());
                self
            }
            Value::Fixed32(v) => {
                self.tag(field, WIRE_FIXED32);
                self.buf.extend_from_slice(&v.to_le_bytes());
                self
            }
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// A Kubernetes `runtime.Unknown`: the type of the object and its encoded bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unknown<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    /// The object itself (for protobuf, the message without any envelope).
    pub raw: &'a [u8],
    pub content_encoding: &'a str,
    pub content_type: &'a str,
}

/// Splits a Kubernetes protobuf body (`k8s\0` + `runtime.Unknown`) into its parts. Unknown
/// fields are skipped; a repeated field keeps its last value, as protobuf says.
pub fn decode_envelope(body: &[u8]) -> Result<Unknown<'_>, ProtoError> {
    let message = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtoError::MissingMagic)?;
    let mut unknown = Unknown::default();
    for field in Reader::new(message) {
        match field? {
            (UNKNOWN_TYPE_META, value) => {
                decode_type_meta(value.bytes(UNKNOWN_TYPE_META)?, &mut unknown)?
            }
            (UNKNOWN_RAW, value) => unknown.raw = value.bytes(UNKNOWN_RAW)?,
            (UNKNOWN_CONTENT_ENCODING, value) => {
                unknown.content_encoding = value.string(UNKNOWN_CONTENT_ENCODING)?
            }
            (UNKNOWN_CONTENT_TYPE, value) => {
                unknown.content_type = value.string(UNKNOWN_CONTENT_TYPE)?
            }
            _ => {}
        }
    }
    Ok(unknown)
}

fn decode_type_meta<'a>(message: &'a [u8], unknown: &mut Unknown<'a>) -> Result<(), ProtoError> {
    for field in Reader::new(message) {
        match field? {
            (TYPE_META_API_VERSION, value) => {
                unknown.api_version = value.string(TYPE_META_API_VERSION)?
            }
            (TYPE_META_KIND, value) => unknown.kind = value.string(TYPE_META_KIND)?,
            _ => {}
        }
    }
    Ok(())
}

/// Encodes `k8s\0` + `runtime.Unknown` with every field written, empty strings included, as
/// kube-apiserver's generated code does.
pub fn encode_envelope(unknown: &Unknown<'_>) -> Vec<u8> {
    let mut type_meta = Writer::new();
    type_meta
        .string(TYPE_META_API_VERSION, unknown.api_version)
        .string(TYPE_META_KIND, unknown.kind);
    let mut body = Writer::from_vec(MAGIC.to_vec());
    body.bytes(UNKNOWN_TYPE_META, type_meta.as_bytes())
        .bytes(UNKNOWN_RAW, unknown.raw)
        .string(UNKNOWN_CONTENT_ENCODING, unknown.content_encoding)
        .string(UNKNOWN_CONTENT_TYPE, unknown.content_type);
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(message: &[u8]) -> Result<Vec<(u32, Value<'_>)>, ProtoError> {
        Reader::new(message).collect()
    }

    #[test]
    fn varints_round_trip_at_every_length() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut writer = Writer::new();
            writer.varint(1, value);
            assert_eq!(fields(writer.as_bytes()), Ok(vec![(1, Value::Varint(value))]), "{value}");
        }
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
    }

    #[test]
    fn reads_every_wire_type() {
        let mut writer = Writer::new();
        writer
            .varint(1, 150)
            .value(2, Value::Fixed64(0x0102_0304_0506_0708))
            .string(3, "testing")
            .value(4, Value::Fixed32(7))
            .int64(536_870_911, -2);
        let got = fields(writer.as_bytes()).unwrap();
        assert_eq!(
            got,
            vec![
                (1, Value::Varint(150)),
                (2, Value::Fixed64(0x0102_0304_0506_0708)),
                (3, Value::Bytes(b"testing")),
                (4, Value::Fixed32(7)),
                (536_870_911, Value::Varint(u64::MAX - 1)),
            ]
        );
        assert_eq!(got[4].1.int64(5), Ok(-2));
        assert_eq!(got[4].1.int32(5), Ok(-2));
        // The canonical example of the protobuf documentation.
        assert_eq!(writer.as_bytes()[..3], [0x08, 0x96, 0x01]);
    }

    #[test]
    fn typed_accessors_name_the_field_on_a_wrong_wire_type() {
        assert_eq!(Value::Varint(1).bytes(7), Err(ProtoError::WrongWireType { field: 7 }));
        assert_eq!(Value::Bytes(b"x").varint(8), Err(ProtoError::WrongWireType { field: 8 }));
        assert_eq!(Value::Bytes(&[0xff]).string(9), Err(ProtoError::InvalidUtf8 { field: 9 }));
    }

    #[test]
    fn malformed_input_is_an_error_and_ends_the_iteration() {
        let cases: [(&[u8], ProtoError); 10] = [
            (&[0x08], ProtoError::Truncated),
            (&[0x08, 0x80], ProtoError::Truncated),
            (&[0x0a, 0x05, b'a'], ProtoError::Truncated),
            (&[0x09, 1, 2, 3], ProtoError::Truncated),
            (&[0x0d, 1, 2], ProtoError::Truncated),
            (
                &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                ProtoError::VarintTooLong,
            ),
            (
                &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
                ProtoError::VarintTooLong,
            ),
            (&[0x00, 0x01], ProtoError::BadFieldNumber(0)),
            (&[0x0b, 0x0c], ProtoError::UnsupportedWireType(3)),
            (&[0x0c], ProtoError::UnsupportedWireType(4)),
        ];
        for (input, expected) in cases {
            let mut reader = Reader::new(input);
            assert_eq!(reader.next(), Some(Err(expected)), "{input:02x?}");
            assert_eq!(reader.next(), None, "{input:02x?}");
        }
        // A field number above 2^29 - 1 in a valid varint.
        let mut too_big = Vec::new();
        put_varint(&mut too_big, (1 << 29) << 3);
        assert_eq!(fields(&too_big), Err(ProtoError::BadFieldNumber(1 << 29)));
        // A length that cannot be a usize on any platform is just truncation.
        let mut huge = vec![0x0a];
        put_varint(&mut huge, u64::MAX);
        assert_eq!(fields(&huge), Err(ProtoError::Truncated));
    }

    #[test]
    fn an_error_after_good_fields_still_yields_the_good_ones_first() {
        let mut reader = Reader::new(&[0x08, 0x01, 0x10]);
        assert_eq!(reader.next(), Some(Ok((1, Value::Varint(1)))));
        assert_eq!(reader.next(), Some(Err(ProtoError::Truncated)));
        assert_eq!(reader.next(), None);
    }

    #[test]
    fn envelope_round_trips() {
        let unknown = Unknown {
            api_version: "authentication.k8s.io/v1",
            kind: "TokenRequest",
            raw: b"\x0a\x00\x12\x02\x08\x01",
            content_encoding: "",
            content_type: "",
        };
        let body = encode_envelope(&unknown);
        assert!(body.starts_with(b"k8s\0"));
        assert_eq!(decode_envelope(&body), Ok(unknown));
    }

    #[test]
    fn envelope_is_byte_for_byte_what_kube_writes() {
        // A v1 Pod with empty raw, as apimachinery's generated Unknown.Marshal writes it:
        // typeMeta {apiVersion "v1", kind "Pod"}, raw, contentEncoding "", contentType "".
        let expected: &[u8] = b"k8s\0\x0a\x09\x0a\x02v1\x12\x03Pod\x12\x00\x1a\x00\x22\x00";
        let unknown = Unknown { api_version: "v1", kind: "Pod", ..Unknown::default() };
        assert_eq!(encode_envelope(&unknown), expected);
    }

    #[test]
    fn envelope_skips_unknown_fields_and_rejects_damage() {
        let mut message = Writer::from_vec(MAGIC.to_vec());
        message.varint(9, 1).bytes(2, b"raw").string(15, "future");
        let unknown = decode_envelope(message.as_bytes()).unwrap();
        assert_eq!(unknown.raw, b"raw");
        assert_eq!(unknown.kind, "");

        assert_eq!(decode_envelope(b"{\"kind\":\"Pod\"}"), Err(ProtoError::MissingMagic));
        assert_eq!(decode_envelope(b"k8s"), Err(ProtoError::MissingMagic));
        assert_eq!(decode_envelope(b"k8s\0\x12\x05ab"), Err(ProtoError::Truncated));
        assert_eq!(decode_envelope(b"k8s\0\x10\x01"), Err(ProtoError::WrongWireType { field: 2 }));
        assert_eq!(
            decode_envelope(b"k8s\0\x0a\x03\x12\x01\xff"),
            Err(ProtoError::InvalidUtf8 { field: 2 })
        );
        // An empty Unknown is valid protobuf (every field is optional).
        assert_eq!(decode_envelope(b"k8s\0"), Ok(Unknown::default()));
    }
}
