//! Just enough X.509 DER reading to name a certificate: subject Common Name, serial
//! number and expiry. rustls verifies certificates but does not expose their
//! contents, and a full X.509 parser would be the largest dependency in the binary
//! for three fields.

use std::fmt;

/// The fields lite-apiserver needs from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The last Common Name in the subject (Kubernetes uses it as the user name).
    pub common_name: Option<String>,
    /// The serial number as lowercase hex, leading zero bytes removed.
    pub serial_hex: String,
    /// notAfter as seconds since the Unix epoch.
    pub not_after_unix: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(&'static str);

impl fmt::Display for DerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed certificate: {}", self.0)
    }
}

impl std::error::Error for DerError {}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const EXPLICIT_VERSION: u8 = 0xa0;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Reads the summary of one DER-encoded certificate.
pub fn summarize(der: &[u8]) -> Result<CertSummary, DerError> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&EXPLICIT_VERSION) {
        rest = element(rest)?.2;
    }
    let (serial, rest) = expect(rest, INTEGER)?;
    let (_signature_algorithm, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (subject, _) = expect(rest, SEQUENCE)?;
    Ok(CertSummary {
        common_name: common_name(subject)?,
        serial_hex: serial_hex(serial),
        not_after_unix: not_after(validity)?,
    })
}

/// Splits one TLV element: (tag, contents, rest).
fn element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DerError> {
    let (&tag, after_tag) = input.split_first().ok_or(DerError("truncated"))?;
    let (&first, mut after_len) = after_tag.split_first().ok_or(DerError("truncated"))?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || after_len.len() < count {
            return Err(DerError("bad length"));
        }
        let (bytes, tail) = after_len.split_at(count);
        after_len = tail;
        bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if after_len.len() < length {
        return Err(DerError("truncated"));
    }
    let (contents, rest) = after_len.split_at(length);
    Ok((tag, contents, rest))
}

fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), DerError> {
    let (found, contents, rest) = element(input)?;
    if found != tag {
        return Err(DerError("unexpected field"));
    }
    Ok((contents, rest))
}

/// Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
fn common_name(mut name: &[u8]) -> Result<Option<String>, DerError> {
    let mut found = None;
    while !name.is_empty() {
        let (mut set, rest) = expect(name, SET)?;
        name = rest;
        while !set.is_empty() {
            let (attribute, rest) = expect(set, SEQUENCE)?;
            set = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid == OID_COMMON_NAME {
                let (_string_tag, text, _) = element(value)?;
                found = Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    Ok(found)
}

fn serial_hex(serial: &[u8]) -> String {
    let significant: Vec<u8> = serial.iter().copied().skip_while(|&b| b == 0).collect();
    if significant.is_empty() {
        return "0".to_string();
    }
    significant.iter().map(|b| format!("{b:02x}")).collect()
}

fn not_after(validity: &[u8]) -> Result<i64, DerError> {
    let (_, _not_before, rest) = element(validity)?;
    let (tag, text, _) = element(rest)?;
    let text = std::str::from_utf8(text).map_err(|_| DerError("bad time"))?;
    match tag {
        UTC_TIME => parse_time(text, 2),
        GENERALIZED_TIME => parse_time(text, 4),
        _ => Err(DerError("bad time")),
    }
}

/// Parses `YYMMDDHHMMSSZ` (UTCTime) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn parse_time(text: &str, year_digits: usize) -> Result<i64, DerError> {
    let bad = DerError("bad time");
    let digits = text.strip_suffix('Z').ok_or(bad.clone())?;
    if digits.len() != year_digits + 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    let field = |start: usize, len: usize| -> i64 {
        digits[start..start + len].parse().unwrap_or(0) // all ASCII digits: cannot fail
    };
    let mut year = field(0, year_digits);
    if year_digits == 2 {
        year += if year < 50 { 2000 } else { 1900 };
    }
    let at = year_digits;
    let days = days_from_civil(year, field(at, 2), field(at + 2, 2));
    Ok(days * 86_400 + field(at + 4, 2) * 3600 + field(at + 6, 2) * 60 + field(at + 8, 2))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Formats seconds since the epoch as RFC 3339 UTC, for logs and diagnostics.
pub fn format_unix(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
        params.distinguished_name.push(rcgen::DnType::CommonName, "system:node:edge-1");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x00, 0x1f, 0xa0]));
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let summary = summarize(cert.der()).expect("summary");
        assert_eq!(summary.common_name.as_deref(), Some("system:node:edge-1"));
        assert_eq!(summary.serial_hex, "1fa0");
        assert_eq!(format_unix(summary.not_after_unix), "2031-03-04T00:00:00Z");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for input in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x02\x01"] {
            assert!(summarize(input).is_err());
        }
    }

    #[test]
    fn time_round_trip() {
        assert_eq!(parse_time("700101000000Z", 2), Ok(0));
        assert_eq!(
            format_unix(parse_time("20491231235959Z", 4).expect("time")),
            "2049-12-31T23:59:59Z"
        );
    }
}
