//! Who is calling: the CN of a verified client certificate, else a known bearer token, else
//! `system:anonymous`, as kube's authenticator chain decides. Includes the minimal DER walk
//! that finds a certificate's serial number and subject CN.

use rustls::ServerConnection;

use crate::http::Request;
use crate::pki::serial_hex;
use crate::server::Server;
use crate::status::ApiError;
use crate::tokens;

#[derive(Clone)]
pub struct Identity {
    pub user: String,
    /// The client certificate's serial ([`serial_hex`] format), if one was presented.
    pub serial: Option<String>,
}

impl Identity {
    /// `X-Fake-User` and, with a client certificate, `X-Fake-Serial`.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![("X-Fake-User".to_string(), self.user.clone())];
        if let Some(serial) = &self.serial {
            headers.push(("X-Fake-Serial".to_string(), serial.clone()));
        }
        headers
    }
}

/// The identity of the TLS peer, from the client certificate rustls already verified.
pub fn from_certificate(tls: &ServerConnection) -> Option<Identity> {
    let leaf = tls.peer_certificates()?.first()?;
    let (serial, common_name) = serial_and_common_name(leaf.as_ref())?;
    Some(Identity { user: common_name.unwrap_or_default(), serial: Some(serial_hex(serial)) })
}

/// A certificate wins; otherwise `Authorization: Bearer` must name a `--token` token or be
/// a service-account JWT this fake signed that is still valid (`tokens::authenticate`).
pub fn authenticate(
    certificate: Option<&Identity>,
    request: &Request,
    server: &Server,
) -> Result<Identity, ApiError> {
    if let Some(identity) = certificate {
        return Ok(identity.clone());
    }
    let bearer =
        request.header("Authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    match bearer {
        None => Ok(Identity { user: "system:anonymous".into(), serial: None }),
        Some(token) => server
            .tokens
            .get(token)
            .cloned()
            .or_else(|| tokens::authenticate(token, server))
            .map(|user| Identity { user, serial: None })
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized")),
    }
}

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_INTEGER: u8 = 0x02;
const TAG_OID: u8 = 0x06;
const TAG_EXPLICIT_VERSION: u8 = 0xa0;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// Splits one DER TLV off `input`: `(tag, contents, rest)`.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[count..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = tlv(input)?;
    (found == tag).then_some((contents, rest))
}

/// The serial number bytes and the first subject CN of an X.509 certificate.
fn serial_and_common_name(der: &[u8]) -> Option<(&[u8], Option<String>)> {
    let (certificate, _) = expect(der, TAG_SEQUENCE)?;
    let (mut tbs, _) = expect(certificate, TAG_SEQUENCE)?;
    if let Some((_, rest)) = expect(tbs, TAG_EXPLICIT_VERSION) {
        tbs = rest;
    }
    let (serial, rest) = expect(tbs, TAG_INTEGER)?;
    let (_signature, rest) = expect(rest, TAG_SEQUENCE)?;
    let (_issuer, rest) = expect(rest, TAG_SEQUENCE)?;
    let (_validity, rest) = expect(rest, TAG_SEQUENCE)?;
    let (subject, _) = expect(rest, TAG_SEQUENCE)?;
    Some((serial, common_name(subject)))
}

/// Walks `SEQUENCE OF SET OF SEQUENCE { OID, value }` for the CN attribute.
fn common_name(mut name: &[u8]) -> Option<String> {
    while !name.is_empty() {
        let (mut rdn, rest) = expect(name, TAG_SET)?;
        name = rest;
        while !rdn.is_empty() {
            let (attribute, rest) = expect(rdn, TAG_SEQUENCE)?;
            rdn = rest;
            let (oid, value) = expect(attribute, TAG_OID)?;
            if oid == OID_COMMON_NAME {
                let (_string_tag, text, _) = tlv(value)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    None
}
