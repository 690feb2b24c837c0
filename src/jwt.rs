//! Service-account token verification with the cloud issuer's keys: strict parsing of a
//! compact JWS, the issuer's key set (JWKS: RSA, EC P-256 and P-384) and discovery
//! document, the signature and claim checks kube-apiserver makes (RS256, ES256, ES384;
//! `iss`, `aud`, `exp`/`nbf`/`iat` with a leeway, `sub` and the `kubernetes.io` claims),
//! and a verdict cache keyed by the token's SHA-256 so a token is verified once, not on
//! every request.
//!
//! Claims are read only after the signature checks out. Nothing here keeps, logs or
//! prints a token: verdicts carry only the account a token proves.

use std::collections::HashMap;
use std::fmt;

use ring::digest::{SHA256, digest};
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// Longer bearer tokens are not verified (kube-apiserver's are about 1 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat` (go-jose's default, as kube-apiserver).
pub const LEEWAY_SECS: i64 = 60;
/// How long a verdict other than a good one is remembered.
pub const NEGATIVE_TTL_SECS: i64 = 60;
/// Verdicts the cache holds by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;
/// Audiences a policy holds at most (the issuer plus learned ones).
pub const MAX_AUDIENCES: usize = 16;
/// A `kid` longer than this is not one kube-apiserver wrote (its are 43 characters).
const MAX_KID_LEN: usize = 256;
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Why a base64url segment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base64Error {
    /// A character outside `A-Z a-z 0-9 - _` (padding `=` included).
    InvalidChar,
    /// A length no encoding produces (one character past a multiple of four).
    InvalidLength,
    /// Unused trailing bits are set: not the canonical encoding.
    NonCanonical,
}

/// Decodes unpadded base64url (RFC 7515 section 2), refusing padding and non-canonical text.
pub fn decode_base64url(text: &str) -> Result<Vec<u8>, Base64Error> {
    let input = text.as_bytes();
    if input.len() % 4 == 1 {
        return Err(Base64Error::InvalidLength);
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        acc = (acc << 6) | u32::from(sextet(c).ok_or(Base64Error::InvalidChar)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if acc != 0 {
        return Err(Base64Error::NonCanonical);
    }
    Ok(out)
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// What checking a bearer token concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by the issuer, meant for the cloud, in date: the token proves this account.
    ServiceAccount { namespace: String, name: String, expires_at: i64 },
    /// Everything checks out but `exp` passed more than the leeway ago: the cloud
    /// refuses it too, so offline it gets 401.
    Expired { namespace: String, name: String, expired_at: i64 },
    /// No key has the token's `kid`: the caller may refetch the issuer's keys.
    UnknownKey { kid: String },
    /// Not proven: the token keeps an identity of its own (the hash of its bytes).
    Unverified(Reason),
}

/// Why a token proves nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Not a compact JWS: segments, base64url, size or header.
    NotAJwt,
    /// A JWS whose header or (signed) claims have the wrong shape.
    Malformed,
    /// `alg` is not RS256, ES256 or ES384 (`none`, HS256, ES512, PS256...).
    UnsupportedAlg,
    /// No issuer keys are known yet.
    NoKeys,
    /// The key named by `kid` is not of the kind `alg` needs.
    WrongKeyType,
    BadSignature,
    WrongIssuer,
    /// No audience the cloud accepts; the token's own audiences, for `Policy::learn_from`.
    WrongAudience {
        audiences: Vec<String>,
    },
    /// Signed, but without an `exp`.
    NoExpiry,
    /// `nbf` or `iat` lies further in the future than the leeway.
    NotYetValid,
    /// `sub` is not `system:serviceaccount:<namespace>:<name>` with valid names.
    NotAServiceAccount,
    /// The `kubernetes.io` claims name another account than `sub`.
    ClaimsMismatch,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::NotAJwt => "not a JWT",
            Reason::Malformed => "malformed JWT",
            Reason::UnsupportedAlg => "unsupported signature algorithm",
            Reason::NoKeys => "no issuer keys known",
            Reason::WrongKeyType => "key does not fit the algorithm",
            Reason::BadSignature => "bad signature",
            Reason::WrongIssuer => "wrong issuer",
            Reason::WrongAudience { .. } => "no accepted audience",
            Reason::NoExpiry => "no expiry",
            Reason::NotYetValid => "not yet valid",
            Reason::NotAServiceAccount => "not a service account",
            Reason::ClaimsMismatch => "kubernetes.io claims disagree with sub",
        })
    }
}

/// The cache identity a verdict earns: `sa:<namespace>/<name>` for a verified token,
/// None when the token must keep an identity of its own.
pub fn cache_identity(verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::ServiceAccount { namespace, name, .. } => Some(format!("sa:{namespace}/{name}")),
        _ => None,
    }
}

/// The issuer's discovery document (`/.well-known/openid-configuration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    /// Where the issuer publishes its keys; kube-apiserver also serves them at
    /// `/openid/v1/jwks` whatever this says, which is what the fetcher asks.
    pub jwks_uri: Option<String>,
}

/// Why a discovery document or key set was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentError {
    /// The discovery document has no non-empty `issuer` string.
    NoIssuer,
    /// The key set has no `keys` array.
    NoKeysArray,
}

impl Discovery {
    pub fn from_value(document: &Value) -> Result<Discovery, DocumentError> {
        let issuer = document.get("issuer").and_then(Value::as_str).filter(|i| !i.is_empty());
        Ok(Discovery {
            issuer: issuer.ok_or(DocumentError::NoIssuer)?.to_string(),
            jwks_uri: document.get("jwks_uri").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// The signature algorithms kube-apiserver signs service-account tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
    Es384,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "ES384" => Some(Alg::Es384),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn from_name(name: &str) -> Option<Curve> {
        match name {
            "P-256" => Some(Curve::P256),
            "P-384" => Some(Curve::P384),
            _ => None,
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

#[derive(Clone)]
enum PublicKey {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// The uncompressed point `04 || x || y`.
    Ec { curve: Curve, point: Vec<u8> },
}

impl PublicKey {
    fn from_jwk(jwk: &Value) -> Option<PublicKey> {
        let member = |name: &str| jwk.get(name).and_then(Value::as_str);
        let bytes = |name: &str| member(name).and_then(|m| decode_base64url(m).ok());
        match member("kty")? {
            "RSA" => {
                let n = strip_leading_zeros(bytes("n")?);
                let e = strip_leading_zeros(bytes("e")?);
                // What RSA_PKCS1_2048_8192_SHA256 accepts; smaller keys are not kept.
                (256..=1024).contains(&n.len()).then_some(PublicKey::Rsa { n, e })
            }
            "EC" => {
                let curve = Curve::from_name(member("crv")?)?;
                let (x, y) = (bytes("x")?, bytes("y")?);
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return None;
                }
                let point = [&[4u8][..], &x, &y].concat();
                Some(PublicKey::Ec { curve, point })
            }
            _ => None,
        }
    }

    fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (PublicKey::Rsa { .. }, Alg::Rs256)
                | (PublicKey::Ec { curve: Curve::P256, .. }, Alg::Es256)
                | (PublicKey::Ec { curve: Curve::P384, .. }, Alg::Es384)
        )
    }

    /// Checks `signature` over `message`; the caller made sure the key fits `alg`.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            PublicKey::Ec { curve, point } => {
                let algorithm = match curve {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                UnparsedPublicKey::new(algorithm, point).verify(message, signature).is_ok()
            }
        }
    }

    /// The key material, for the key set's fingerprint.
    fn material(&self) -> Vec<u8> {
        match self {
            PublicKey::Rsa { n, e } => [b"RSA:", &n[..], b":", e].concat(),
            PublicKey::Ec { curve: Curve::P256, point } => [b"P-256:", &point[..]].concat(),
            PublicKey::Ec { curve: Curve::P384, point } => [b"P-384:", &point[..]].concat(),
        }
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

#[derive(Clone)]
struct Jwk {
    kid: Option<String>,
    /// The JWK's own `alg`, which then is the only algorithm it may verify.
    alg: Option<String>,
    key: PublicKey,
}

/// The issuer's signing keys, from its JWKS document.
#[derive(Clone)]
pub struct KeySet {
    keys: Vec<Jwk>,
    /// Identifies the key material, so verdicts reached with other keys are redone.
    fingerprint: u64,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("kids", &self.kids().collect::<Vec<_>>()).finish()
    }
}

/// How a token's signature fared against the key set.
enum SignatureCheck {
    Good,
    UnknownKey(String),
    Bad(Reason),
}

impl KeySet {
    /// A set without keys: every token is `Unverified(NoKeys)`.
    pub fn empty() -> KeySet {
        KeySet::from_keys(Vec::new())
    }

    /// Reads a JWKS document (`{"keys":[...]}`). Keys of other types or curves, keys for
    /// encryption and keys that do not decode are skipped, as a verifier must.
    pub fn from_value(jwks: &Value) -> Result<KeySet, DocumentError> {
        let keys = jwks.get("keys").and_then(Value::as_array).ok_or(DocumentError::NoKeysArray)?;
        let usable = keys.iter().filter(|jwk| jwk.get("use").is_none_or(|u| u == "sig"));
        Ok(KeySet::from_keys(usable.filter_map(Jwk::from_value).collect()))
    }

    fn from_keys(keys: Vec<Jwk>) -> KeySet {
        let mut material = Vec::new();
        for jwk in &keys {
            for part in [jwk.kid.as_deref(), jwk.alg.as_deref()] {
                material.extend_from_slice(part.unwrap_or("").as_bytes());
                material.push(0);
            }
            material.extend_from_slice(&jwk.key.material());
            material.push(0);
        }
        KeySet { keys, fingerprint: fingerprint(&material) }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids held (keys without one are left out).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|jwk| jwk.kid.as_deref())
    }

    /// The keys named by `kid` (all of them when the token names none) that fit `alg`
    /// are tried in turn.
    fn check(&self, jws: &Jws<'_>, alg: Alg) -> SignatureCheck {
        if self.keys.is_empty() {
            return SignatureCheck::Bad(Reason::NoKeys);
        }
        let kid = jws.kid.as_deref();
        let named: Vec<&Jwk> =
            self.keys.iter().filter(|jwk| kid.is_none() || jwk.kid.as_deref() == kid).collect();
        if let (Some(kid), true) = (kid, named.is_empty()) {
            return SignatureCheck::UnknownKey(kid.to_string());
        }
        let fitting: Vec<&Jwk> = named.into_iter().filter(|jwk| jwk.fits(alg)).collect();
        if fitting.is_empty() {
            return SignatureCheck::Bad(Reason::WrongKeyType);
        }
        if fitting.iter().any(|jwk| jwk.key.verifies(jws.signing_input, &jws.signature)) {
            SignatureCheck::Good
        } else {
            SignatureCheck::Bad(Reason::BadSignature)
        }
    }
}

impl Jwk {
    fn from_value(jwk: &Value) -> Option<Jwk> {
        let text = |name: &str| jwk.get(name).and_then(Value::as_str).map(str::to_string);
        Some(Jwk { kid: text("kid"), alg: text("alg"), key: PublicKey::from_jwk(jwk)? })
    }

    fn fits(&self, alg: Alg) -> bool {
        self.key.fits(alg) && self.alg.as_deref().is_none_or(|a| a == alg.name())
    }
}

/// First 8 bytes of a SHA-256, as a cheap identity for cache entries.
fn fingerprint(bytes: &[u8]) -> u64 {
    let hash = digest(&SHA256, bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_ref()[..8]);
    u64::from_be_bytes(first)
}

/// What a verified token must also say: the issuer, and one accepted audience.
#[derive(Debug, Clone)]
pub struct Policy {
    issuer: String,
    audiences: Vec<String>,
    /// Identifies issuer and audiences, so verdicts reached under others are redone.
    fingerprint: u64,
}

impl Policy {
    /// Accepts tokens of `issuer` meant for the issuer itself (kube-apiserver's default
    /// `--api-audiences`).
    pub fn new(issuer: &str) -> Policy {
        let mut policy = Policy {
            issuer: issuer.to_string(),
            audiences: vec![issuer.to_string()],
            fingerprint: 0,
        };
        policy.refingerprint();
        policy
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Accepts `audience` too. False when it already was, or the policy is full.
    pub fn add_audience(&mut self, audience: &str) -> bool {
        if audience.is_empty()
            || self.audiences.len() >= MAX_AUDIENCES
            || self.audiences.iter().any(|a| a == audience)
        {
            return false;
        }
        self.audiences.push(audience.to_string());
        self.refingerprint();
        true
    }

    /// The cloud accepted a request with a token judged `verdict`: if that verdict was
    /// only a wrong audience and the token names exactly one, the cloud accepts that
    /// audience. A token naming several proves only that one of them is accepted, so it
    /// teaches nothing (learning all would give tokens for another audience the cache).
    pub fn learn_from(&mut self, verdict: &Verdict) -> bool {
        match verdict {
            Verdict::Unverified(Reason::WrongAudience { audiences }) if audiences.len() == 1 => {
                self.add_audience(&audiences[0])
            }
            _ => false,
        }
    }

    fn refingerprint(&mut self) {
        let mut material = self.issuer.as_bytes().to_vec();
        for audience in &self.audiences {
            material.push(0);
            material.extend_from_slice(audience.as_bytes());
        }
        self.fingerprint = fingerprint(&material);
    }
}

/// A token split into its parts; the signature is not checked yet.
struct Jws<'t> {
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'t [u8],
    alg: String,
    kid: Option<String>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

impl<'t> Jws<'t> {
    fn parse(token: &'t str) -> Result<Jws<'t>, Reason> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Reason::NotAJwt);
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(Reason::NotAJwt);
        };
        let decode = |segment: &str| decode_base64url(segment).map_err(|_| Reason::NotAJwt);
        let header_json: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| Reason::NotAJwt)?;
        let text = |name: &str| header_json.get(name).map(|v| v.as_str().ok_or(Reason::Malformed));
        let alg = text("alg").ok_or(Reason::NotAJwt)??.to_string();
        let kid = text("kid").transpose()?.map(str::to_string);
        let typ = text("typ").transpose()?;
        // Critical extensions are ones this verifier cannot honour (RFC 7515 4.1.11).
        if kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN)
            || typ.is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
            || header_json.get("crit").is_some()
        {
            return Err(Reason::Malformed);
        }
        Ok(Jws {
            signing_input: &token.as_bytes()[..header.len() + 1 + payload.len()],
            alg,
            kid,
            payload: decode(payload)?,
            signature: decode(signature)?,
        })
    }
}

/// The claims a service-account token carries, read once the signature is good.
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    /// `kubernetes.io.namespace` and `kubernetes.io.serviceaccount.name`, when present.
    /// Pod and UIDs are not read: offline they cannot be checked against the cloud, and
    /// the cache identity is the account's name.
    kube_namespace: Option<String>,
    kube_account: Option<String>,
}

impl Claims {
    fn parse(payload: &[u8]) -> Result<Claims, Reason> {
        let json: Value = serde_json::from_slice(payload).map_err(|_| Reason::Malformed)?;
        if !json.is_object() {
            return Err(Reason::Malformed);
        }
        let kube = json.get("kubernetes.io");
        Ok(Claims {
            iss: optional_string(json.get("iss"))?.unwrap_or_default(),
            sub: optional_string(json.get("sub"))?.unwrap_or_default(),
            aud: audiences(json.get("aud"))?,
            exp: numeric_date(json.get("exp"))?,
            nbf: numeric_date(json.get("nbf"))?,
            iat: numeric_date(json.get("iat"))?,
            kube_namespace: optional_string(kube.and_then(|k| k.get("namespace")))?,
            kube_account: optional_string(
                kube.and_then(|k| k.get("serviceaccount")).and_then(|s| s.get("name")),
            )?,
        })
    }

    /// The checks after the signature, in kube-apiserver's spirit: issuer, audience,
    /// account, then dates.
    fn judge(self, policy: &Policy, now: i64) -> Result<Verdict, Reason> {
        if self.iss != policy.issuer {
            return Err(Reason::WrongIssuer);
        }
        if !self.aud.iter().any(|a| policy.audiences.contains(a)) {
            return Err(Reason::WrongAudience { audiences: self.aud });
        }
        let (namespace, name) = service_account(&self.sub).ok_or(Reason::NotAServiceAccount)?;
        let disagrees =
            |claim: &Option<String>, value: &str| claim.as_deref().is_some_and(|c| c != value);
        if disagrees(&self.kube_namespace, namespace) || disagrees(&self.kube_account, name) {
            return Err(Reason::ClaimsMismatch);
        }
        let exp = self.exp.ok_or(Reason::NoExpiry)?;
        if [self.nbf, self.iat].into_iter().flatten().any(|t| t > now + LEEWAY_SECS) {
            return Err(Reason::NotYetValid);
        }
        let (namespace, name) = (namespace.to_string(), name.to_string());
        if now > exp + LEEWAY_SECS {
            return Ok(Verdict::Expired { namespace, name, expired_at: exp });
        }
        Ok(Verdict::ServiceAccount { namespace, name, expires_at: exp })
    }
}

fn optional_string(value: Option<&Value>) -> Result<Option<String>, Reason> {
    value.map(|v| v.as_str().map(str::to_string).ok_or(Reason::Malformed)).transpose()
}

/// `aud` is a string or an array of strings (RFC 7519 4.1.3).
fn audiences(value: Option<&Value>) -> Result<Vec<String>, Reason> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one.clone()]),
        Some(Value::Array(many)) => {
            many.iter().map(|a| a.as_str().map(str::to_string).ok_or(Reason::Malformed)).collect()
        }
        Some(_) => Err(Reason::Malformed),
    }
}

/// A NumericDate: seconds since the epoch, possibly fractional (truncated here).
fn numeric_date(value: Option<&Value>) -> Result<Option<i64>, Reason> {
    let Some(value) = value else { return Ok(None) };
    let seconds = value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64));
    seconds.map(Some).ok_or(Reason::Malformed)
}

/// `system:serviceaccount:<namespace>:<name>` split, with names as Kubernetes allows
/// them, so `sa:<namespace>/<name>` cannot be spelt two ways.
fn service_account(sub: &str) -> Option<(&str, &str)> {
    let (namespace, name) = sub.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')?;
    (is_dns_subdomain(namespace) && is_dns_subdomain(name)).then_some((namespace, name))
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, alphanumeric at both
/// ends, at most 253 characters.
fn is_dns_subdomain(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    name.len() <= 253
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(b))
}

/// Verifies `token` against the issuer's keys and `policy` at `now` (Unix seconds).
pub fn verify(token: &str, keys: &KeySet, policy: &Policy, now: i64) -> Verdict {
    match judge(token, keys, policy, now) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::Unverified(reason),
    }
}

fn judge(token: &str, keys: &KeySet, policy: &Policy, now: i64) -> Result<Verdict, Reason> {
    let jws = Jws::parse(token)?;
    let alg = Alg::from_name(&jws.alg).ok_or(Reason::UnsupportedAlg)?;
    match keys.check(&jws, alg) {
        SignatureCheck::Good => Claims::parse(&jws.payload)?.judge(policy, now),
        SignatureCheck::UnknownKey(kid) => Ok(Verdict::UnknownKey { kid }),
        SignatureCheck::Bad(reason) => Err(reason),
    }
}

/// Verdicts by SHA-256 of the token, so a token is verified once: a good verdict until
/// the token expires, a bad one for `NEGATIVE_TTL_SECS`. Verdicts that new keys could
/// change (unknown key, no keys) are not kept, and an entry reached with other keys or
/// another policy is redone.
pub struct VerdictCache {
    entries: HashMap<[u8; 32], Entry>,
    capacity: usize,
    /// Insertion counter: the lower, the older.
    next_seq: u64,
    stats: CacheStats,
}

struct Entry {
    verdict: Verdict,
    /// The entry is good while `now < until`.
    until: i64,
    keys: u64,
    policy: u64,
    seq: u64,
}

impl Entry {
    fn holds_for(&self, keys: &KeySet, policy: &Policy, now: i64) -> bool {
        now < self.until && self.keys == keys.fingerprint && self.policy == policy.fingerprint
    }
}

/// How the cache has been used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Tokens that had to be verified.
    pub verifications: u64,
}

impl Default for VerdictCache {
    fn default() -> VerdictCache {
        VerdictCache::new(DEFAULT_CACHE_CAPACITY)
    }
}

impl VerdictCache {
    pub fn new(capacity: usize) -> VerdictCache {
        VerdictCache {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            stats: CacheStats::default(),
        }
    }

    /// The verdict on `token`, from the cache or verified now (and then remembered).
    pub fn verify_cached(
        &mut self,
        token: &str,
        keys: &KeySet,
        policy: &Policy,
        now: i64,
    ) -> Verdict {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        if let Some(entry) = self.entries.get(&hash)
            && entry.holds_for(keys, policy, now)
        {
            self.stats.hits += 1;
            return entry.verdict.clone();
        }
        self.stats.verifications += 1;
        let verdict = verify(token, keys, policy, now);
        if let Some(until) = keep_until(&verdict, now) {
            self.insert(hash, verdict.clone(), until, keys, policy, now);
        }
        verdict
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn insert(
        &mut self,
        hash: [u8; 32],
        verdict: Verdict,
        until: i64,
        keys: &KeySet,
        policy: &Policy,
        now: i64,
    ) {
        if !self.entries.contains_key(&hash) && self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry =
            Entry { verdict, until, keys: keys.fingerprint, policy: policy.fingerprint, seq };
        self.entries.insert(hash, entry);
    }

    /// Drops expired entries; if that frees too little, the oldest down to 7/8 of the
    /// capacity, so a flood of new tokens pays one scan per many insertions.
    fn make_room(&mut self, now: i64) {
        self.entries.retain(|_, entry| now < entry.until);
        let target = self.capacity - (self.capacity / 8).max(1);
        if self.entries.len() <= target {
            return;
        }
        let excess = self.entries.len() - target;
        let mut seqs: Vec<u64> = self.entries.values().map(|entry| entry.seq).collect();
        let (_, &mut cutoff, _) = seqs.select_nth_unstable(excess - 1);
        self.entries.retain(|_, entry| entry.seq > cutoff);
    }
}

/// Until when a verdict may be reused (None: not at all).
fn keep_until(verdict: &Verdict, now: i64) -> Option<i64> {
    match verdict {
        Verdict::ServiceAccount { expires_at, .. } => Some(expires_at + LEEWAY_SECS + 1),
        Verdict::UnknownKey { .. } | Verdict::Unverified(Reason::NoKeys) => None,
        Verdict::Expired { .. } | Verdict::Unverified(_) => Some(now + NEGATIVE_TTL_SECS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
    const NOW: i64 = 1_700_000_000;
    /// A 2048-bit RSA key made with openssl for these tests only; it signs nothing real.
    const TEST_ONLY_RSA_PKCS8: &[u8] = include_bytes!("testdata/jwt_test_only_rsa2048.pk8");

    fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    fn encode_json(value: &Value) -> String {
        encode(value.to_string().as_bytes())
    }

    struct Signers {
        rng: SystemRandom,
        rsa: RsaKeyPair,
        p256: EcdsaKeyPair,
        p384: EcdsaKeyPair,
    }

    impl Signers {
        fn new() -> Signers {
            let rng = SystemRandom::new();
            let ec = |alg| {
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
                EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
            };
            let p256 = ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING);
            let p384 = ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING);
            let rsa = RsaKeyPair::from_pkcs8(TEST_ONLY_RSA_PKCS8).unwrap();
            Signers { rng, rsa, p256, p384 }
        }

        fn jwks(&self) -> Value {
            let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(self.rsa.public());
            json!({"keys": [
                {"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256",
                 "n": encode(&rsa.n), "e": encode(&rsa.e)},
                ec_jwk("p256", "P-256", &self.p256),
                ec_jwk("p384", "P-384", &self.p384),
            ]})
        }

        fn keys(&self) -> KeySet {
            KeySet::from_value(&self.jwks()).unwrap()
        }

        /// A token with `header` (its `alg` picks the key) and `claims`.
        fn sign(&self, header: Value, claims: &Value) -> String {
            let input = format!("{}.{}", encode_json(&header), encode_json(claims));
            let signature = match header["alg"].as_str().unwrap() {
                "RS256" => {
                    let mut sig = vec![0; self.rsa.public().modulus_len()];
                    let padding = &signature::RSA_PKCS1_SHA256;
                    self.rsa.sign(padding, &self.rng, input.as_bytes(), &mut sig).unwrap();
                    sig
                }
                "ES256" => self.p256.sign(&self.rng, input.as_bytes()).unwrap().as_ref().to_vec(),
                "ES384" => self.p384.sign(&self.rng, input.as_bytes()).unwrap().as_ref().to_vec(),
                other => other.as_bytes().to_vec(),
            };
            format!("{input}.{}", encode(&signature))
        }

        fn token(&self, alg: &str, claims: &Value) -> String {
            let kid = match alg {
                "RS256" => "rsa",
                "ES256" => "p256",
                _ => "p384",
            };
            self.sign(json!({"alg": alg, "kid": kid}), claims)
        }
    }

    fn ec_jwk(kid: &str, crv: &str, key: &EcdsaKeyPair) -> Value {
        let point = key.public_key().as_ref();
        let (x, y) = point[1..].split_at((point.len() - 1) / 2);
        json!({"kty": "EC", "kid": kid, "crv": crv, "x": encode(x), "y": encode(y)})
    }

    fn claims(namespace: &str, name: &str) -> Value {
        json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{namespace}:{name}"),
            "aud": [ISSUER],
            "exp": NOW + 3600,
            "nbf": NOW - 10,
            "iat": NOW - 10,
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": "7c1a2c1e-0000-4000-8000-000000000001"},
                "pod": {"name": "web-0", "uid": "7c1a2c1e-0000-4000-8000-000000000002"},
            },
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn good(namespace: &str, name: &str) -> Verdict {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Verdict::ServiceAccount { namespace, name, expires_at: NOW + 3600 }
    }

    fn expired(expired_at: i64) -> Verdict {
        Verdict::Expired { namespace: "a".into(), name: "b".into(), expired_at }
    }

    fn unverified(reason: Reason) -> Verdict {
        Verdict::Unverified(reason)
    }

    #[test]
    fn base64url_decodes_rfc4648_vectors_and_url_characters() {
        let vectors = [
            ("", ""),
            ("Zg", "f"),
            ("Zm8", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg", "foob"),
            ("Zm9vYmE", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ];
        for (text, plain) in vectors {
            assert_eq!(decode_base64url(text).unwrap(), plain.as_bytes(), "{text}");
        }
        assert_eq!(decode_base64url("-_8").unwrap(), [0xfb, 0xff]);
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            assert_eq!(decode_base64url(&encode(&all[..len])).unwrap(), &all[..len]);
        }
    }

    #[test]
    fn base64url_refuses_padding_other_alphabets_and_impossible_text() {
        assert_eq!(decode_base64url("Zg=="), Err(Base64Error::InvalidChar));
        assert_eq!(decode_base64url("Zm9v+w"), Err(Base64Error::InvalidChar));
        assert_eq!(decode_base64url("Zm9v/w"), Err(Base64Error::InvalidChar));
        assert_eq!(decode_base64url("Zm 9"), Err(Base64Error::InvalidChar));
        assert_eq!(decode_base64url("Zm9vY"), Err(Base64Error::InvalidLength));
        assert_eq!(decode_base64url("Zh"), Err(Base64Error::NonCanonical));
        assert_eq!(decode_base64url("Zm9"), Err(Base64Error::NonCanonical));
    }

    #[test]
    fn rs256_es256_and_es384_tokens_verify() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        for alg in ["RS256", "ES256", "ES384"] {
            let token = signers.token(alg, &claims("team-a", "builder"));
            assert_eq!(verify(&token, &keys, &policy, NOW), good("team-a", "builder"), "{alg}");
        }
    }

    #[test]
    fn a_token_without_kid_is_tried_against_every_fitting_key() {
        let signers = Signers::new();
        let token = signers.sign(json!({"alg": "ES384"}), &claims("team-a", "builder"));
        let verdict = verify(&token, &signers.keys(), &Policy::new(ISSUER), NOW);
        assert_eq!(verdict, good("team-a", "builder"));
    }

    #[test]
    fn a_flipped_signature_byte_fails() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        for alg in ["RS256", "ES256", "ES384"] {
            let token = signers.token(alg, &claims("team-a", "builder"));
            let (input, signature) = token.rsplit_once('.').unwrap();
            let mut signature = decode_base64url(signature).unwrap();
            signature[7] ^= 1;
            let flipped = format!("{input}.{}", encode(&signature));
            let verdict = verify(&flipped, &keys, &policy, NOW);
            assert_eq!(verdict, unverified(Reason::BadSignature), "{alg}");
        }
    }

    #[test]
    fn alg_none_hmac_and_other_algorithms_are_unsupported() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let claims = encode_json(&claims("team-a", "builder"));
        let none = format!("{}.{claims}.", encode_json(&json!({"alg": "none"})));
        assert_eq!(verify(&none, &keys, &policy, NOW), unverified(Reason::UnsupportedAlg));
        // HS256 "signed" with the public RSA key: the classic algorithm confusion.
        let header = encode_json(&json!({"alg": "HS256", "kid": "rsa"}));
        let input = format!("{header}.{claims}");
        let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(signers.rsa.public());
        let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &rsa.n);
        let tag = ring::hmac::sign(&hmac_key, input.as_bytes());
        let hs256 = format!("{input}.{}", encode(tag.as_ref()));
        assert_eq!(verify(&hs256, &keys, &policy, NOW), unverified(Reason::UnsupportedAlg));
        for alg in ["ES512", "PS256", "RS512", "EdDSA"] {
            let token = signers.sign(json!({"alg": alg, "kid": "rsa"}), &json!({}));
            let verdict = verify(&token, &keys, &policy, NOW);
            assert_eq!(verdict, unverified(Reason::UnsupportedAlg), "{alg}");
        }
    }

    #[test]
    fn another_accounts_claims_under_a_real_signature_fail() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let real = signers.token("ES256", &claims("team-a", "builder"));
        let (header, rest) = real.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged =
            format!("{header}.{}.{signature}", encode_json(&claims("kube-system", "admin")));
        assert_eq!(verify(&forged, &keys, &policy, NOW), unverified(Reason::BadSignature));
        // Claims are not read before the signature: a wrong issuer under a bad signature
        // is a bad signature.
        let other_issuer = with(claims("team-a", "builder"), "iss", json!("https://evil"));
        let forged = format!("{header}.{}.{signature}", encode_json(&other_issuer));
        assert_eq!(verify(&forged, &keys, &policy, NOW), unverified(Reason::BadSignature));
    }

    #[test]
    fn a_key_of_the_wrong_kind_does_not_verify() {
        let signers = Signers::new();
        let token = signers.sign(json!({"alg": "ES256", "kid": "rsa"}), &claims("a", "b"));
        let verdict = verify(&token, &signers.keys(), &Policy::new(ISSUER), NOW);
        assert_eq!(verdict, unverified(Reason::WrongKeyType));
        // A P-384 key that its JWK restricts to another algorithm.
        let mut jwks = signers.jwks();
        jwks["keys"][2]["alg"] = json!("ES512");
        let keys = KeySet::from_value(&jwks).unwrap();
        let token = signers.token("ES384", &claims("a", "b"));
        let verdict = verify(&token, &keys, &Policy::new(ISSUER), NOW);
        assert_eq!(verdict, unverified(Reason::WrongKeyType));
    }

    #[test]
    fn issuer_and_audience_must_be_the_clouds() {
        let signers = Signers::new();
        let (keys, mut policy) = (signers.keys(), Policy::new(ISSUER));
        let token = signers.token("RS256", &with(claims("a", "b"), "iss", json!("https://other")));
        assert_eq!(verify(&token, &keys, &policy, NOW), unverified(Reason::WrongIssuer));
        let vault = signers.token("ES256", &with(claims("a", "b"), "aud", json!("vault")));
        let verdict = verify(&vault, &keys, &policy, NOW);
        let wrong_audience = unverified(Reason::WrongAudience { audiences: vec!["vault".into()] });
        assert_eq!(verdict, wrong_audience);
        // The cloud accepted it online: its one audience is the cloud's too.
        assert!(policy.learn_from(&verdict));
        assert!(!policy.learn_from(&verdict), "learnt once");
        assert_eq!(verify(&vault, &keys, &policy, NOW), good("a", "b"));
    }

    #[test]
    fn a_token_with_several_audiences_teaches_none() {
        let signers = Signers::new();
        let (keys, mut policy) = (signers.keys(), Policy::new(ISSUER));
        let mesh = signers.token("ES256", &with(claims("a", "b"), "aud", json!(["mesh", "api"])));
        let verdict = verify(&mesh, &keys, &policy, NOW);
        assert!(!policy.learn_from(&verdict));
        assert_eq!(policy.audiences(), [ISSUER.to_string()]);
        assert!(policy.add_audience("api"));
        assert_eq!(verify(&mesh, &keys, &policy, NOW), good("a", "b"));
    }

    #[test]
    fn dates_are_checked_with_the_leeway() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let token = signers.token("ES256", &claims("a", "b"));
        let exp = NOW + 3600;
        assert_eq!(verify(&token, &keys, &policy, exp + LEEWAY_SECS), good("a", "b"));
        assert_eq!(verify(&token, &keys, &policy, exp + LEEWAY_SECS + 1), expired(exp));
        let early = NOW - 10 - LEEWAY_SECS - 1;
        assert_eq!(verify(&token, &keys, &policy, early), unverified(Reason::NotYetValid));
        assert_eq!(verify(&token, &keys, &policy, early + 1), good("a", "b"));
        let future_iat = signers.token("ES256", &with(claims("a", "b"), "iat", json!(NOW + 600)));
        assert_eq!(verify(&future_iat, &keys, &policy, NOW), unverified(Reason::NotYetValid));
        let half_second = json!(NOW as f64 + 0.5);
        let fractional = signers.token("ES256", &with(claims("a", "b"), "exp", half_second));
        let verdict = verify(&fractional, &keys, &policy, NOW);
        assert_eq!(
            verdict,
            Verdict::ServiceAccount { namespace: "a".into(), name: "b".into(), expires_at: NOW }
        );
        let mut endless = claims("a", "b");
        endless.as_object_mut().unwrap().remove("exp");
        let endless = signers.token("ES256", &endless);
        assert_eq!(verify(&endless, &keys, &policy, NOW), unverified(Reason::NoExpiry));
    }

    #[test]
    fn the_subject_must_be_a_service_account_the_kubernetes_claims_agree_with() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let check = |claims: Value| verify(&signers.token("ES256", &claims), &keys, &policy, NOW);
        let not_an_account = unverified(Reason::NotAServiceAccount);
        for sub in [
            "alice",
            "system:serviceaccount:a",
            "system:serviceaccount:a:b:c",
            "system:serviceaccount:A:b",
            "system:serviceaccount:a/x:b",
            "system:serviceaccount::b",
        ] {
            assert_eq!(check(with(claims("a", "b"), "sub", json!(sub))), not_an_account, "{sub}");
        }
        let mut other_namespace = claims("a", "b");
        other_namespace["kubernetes.io"]["namespace"] = json!("kube-system");
        assert_eq!(check(other_namespace), unverified(Reason::ClaimsMismatch));
        let mut other_name = claims("a", "b");
        other_name["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
        assert_eq!(check(other_name), unverified(Reason::ClaimsMismatch));
        let mut no_kube_claims = claims("a", "b");
        no_kube_claims.as_object_mut().unwrap().remove("kubernetes.io");
        assert_eq!(check(no_kube_claims), good("a", "b"));
        assert_eq!(check(with(claims("a", "b"), "aud", json!(7))), unverified(Reason::Malformed));
        assert_eq!(check(json!(["not", "an", "object"])), unverified(Reason::Malformed));
    }

    #[test]
    fn unknown_kid_and_missing_keys_are_told_apart() {
        let signers = Signers::new();
        let policy = Policy::new(ISSUER);
        let token = signers.sign(json!({"alg": "ES256", "kid": "rotated"}), &claims("a", "b"));
        let verdict = verify(&token, &signers.keys(), &policy, NOW);
        assert_eq!(verdict, Verdict::UnknownKey { kid: "rotated".into() });
        let verdict = verify(&token, &KeySet::empty(), &policy, NOW);
        assert_eq!(verdict, unverified(Reason::NoKeys));
    }

    #[test]
    fn what_is_not_a_compact_jws_is_not_a_jwt() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let token = signers.token("ES256", &claims("a", "b"));
        let (header, rest) = token.split_once('.').unwrap();
        let padded_header = format!("{header}{}.{rest}", "=".repeat(4 - header.len() % 4));
        let oversize = format!("{token}{}", "A".repeat(MAX_TOKEN_LEN));
        let not_json = format!("{}.{rest}", encode(b"alg:ES256"));
        for bad in
            ["", "opaque-token", "a.b", &format!("{token}.x"), &padded_header, &oversize, &not_json]
        {
            assert_eq!(verify(bad, &keys, &policy, NOW), unverified(Reason::NotAJwt));
        }
        let critical = signers
            .sign(json!({"alg": "ES256", "kid": "p256", "crit": ["b64"]}), &claims("a", "b"));
        assert_eq!(verify(&critical, &keys, &policy, NOW), unverified(Reason::Malformed));
        let typed = signers
            .sign(json!({"alg": "ES256", "kid": "p256", "typ": "at+jwt"}), &claims("a", "b"));
        assert_eq!(verify(&typed, &keys, &policy, NOW), unverified(Reason::Malformed));
        let jwt =
            signers.sign(json!({"alg": "ES256", "kid": "p256", "typ": "JWT"}), &claims("a", "b"));
        assert_eq!(verify(&jwt, &keys, &policy, NOW), good("a", "b"));
    }

    #[test]
    fn a_jwks_with_keys_this_verifier_cannot_use_is_tolerated() {
        let signers = Signers::new();
        let mut jwks = signers.jwks();
        let keys = jwks["keys"].as_array_mut().unwrap();
        keys.push(json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "AAAA"}));
        keys.push(json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}));
        keys.push(json!({"kty": "EC", "crv": "P-256", "kid": "short", "x": "AAAA", "y": "AAAA"}));
        keys.push(json!({"kty": "RSA", "kid": "padded", "n": "AA==", "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "weak", "n": encode(&[0xc5; 128]), "e": "AQAB"}));
        keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AA", "e": "AQAB"}));
        keys.push(json!("not an object"));
        let keys = KeySet::from_value(&jwks).unwrap();
        assert_eq!(keys.kids().collect::<Vec<_>>(), ["rsa", "p256", "p384"]);
        let token = signers.token("RS256", &claims("a", "b"));
        assert_eq!(verify(&token, &keys, &Policy::new(ISSUER), NOW), good("a", "b"));
        assert_eq!(
            KeySet::from_value(&json!({"keys": {}})).err(),
            Some(DocumentError::NoKeysArray)
        );
        assert_eq!(KeySet::from_value(&json!([])).err(), Some(DocumentError::NoKeysArray));
    }

    #[test]
    fn an_rsa_modulus_with_a_leading_zero_byte_is_accepted() {
        let signers = Signers::new();
        let mut jwks = signers.jwks();
        let rsa = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(signers.rsa.public());
        jwks["keys"][0]["n"] = json!(encode(&[&[0u8][..], &rsa.n].concat()));
        let keys = KeySet::from_value(&jwks).unwrap();
        assert_eq!(keys.fingerprint, signers.keys().fingerprint);
        let token = signers.token("RS256", &claims("a", "b"));
        assert_eq!(verify(&token, &keys, &Policy::new(ISSUER), NOW), good("a", "b"));
    }

    #[test]
    fn discovery_names_the_issuer() {
        let document =
            json!({"issuer": ISSUER, "jwks_uri": "https://10.0.0.1:6443/openid/v1/jwks"});
        let discovery = Discovery::from_value(&document).unwrap();
        assert_eq!(discovery.issuer, ISSUER);
        assert_eq!(discovery.jwks_uri.as_deref(), Some("https://10.0.0.1:6443/openid/v1/jwks"));
        for bad in [json!({}), json!({"issuer": ""}), json!({"issuer": 1}), json!("x")] {
            assert_eq!(Discovery::from_value(&bad), Err(DocumentError::NoIssuer));
        }
    }

    #[test]
    fn the_cache_verifies_a_token_once_until_it_expires() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let mut cache = VerdictCache::default();
        let token = signers.token("RS256", &claims("a", "b"));
        assert_eq!(cache.verify_cached(&token, &keys, &policy, NOW), good("a", "b"));
        let later = NOW + 3600 + LEEWAY_SECS;
        assert_eq!(cache.verify_cached(&token, &keys, &policy, later), good("a", "b"));
        assert_eq!(cache.stats(), CacheStats { hits: 1, verifications: 1 });
        let verdict = cache.verify_cached(&token, &keys, &policy, later + 1);
        assert_eq!(verdict, expired(NOW + 3600));
        assert_eq!(cache.stats(), CacheStats { hits: 1, verifications: 2 });
    }

    #[test]
    fn the_cache_keeps_a_bad_verdict_for_a_while() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let mut cache = VerdictCache::default();
        let token = signers.token("RS256", &with(claims("a", "b"), "iss", json!("https://x")));
        let wrong = unverified(Reason::WrongIssuer);
        assert_eq!(cache.verify_cached(&token, &keys, &policy, NOW), wrong);
        assert_eq!(cache.verify_cached(&token, &keys, &policy, NOW + NEGATIVE_TTL_SECS - 1), wrong);
        assert_eq!(cache.stats(), CacheStats { hits: 1, verifications: 1 });
        assert_eq!(cache.verify_cached(&token, &keys, &policy, NOW + NEGATIVE_TTL_SECS), wrong);
        assert_eq!(cache.stats(), CacheStats { hits: 1, verifications: 2 });
    }

    #[test]
    fn the_cache_redoes_verdicts_when_keys_or_policy_change() {
        let signers = Signers::new();
        let (keys, mut policy) = (signers.keys(), Policy::new(ISSUER));
        let mut cache = VerdictCache::default();
        let token = signers.sign(json!({"alg": "ES256", "kid": "new"}), &claims("a", "b"));
        assert_eq!(
            cache.verify_cached(&token, &keys, &policy, NOW),
            Verdict::UnknownKey { kid: "new".into() }
        );
        assert!(cache.is_empty(), "an unknown key is not remembered");
        let mut jwks = signers.jwks();
        jwks["keys"][1]["kid"] = json!("new");
        let rotated = KeySet::from_value(&jwks).unwrap();
        assert_eq!(cache.verify_cached(&token, &rotated, &policy, NOW), good("a", "b"));
        assert_eq!(cache.verify_cached(&token, &rotated, &policy, NOW), good("a", "b"));
        assert_eq!(cache.stats(), CacheStats { hits: 1, verifications: 2 });
        // Same keys parsed again: same fingerprint, still a hit.
        let reparsed = KeySet::from_value(&jwks).unwrap();
        cache.verify_cached(&token, &reparsed, &policy, NOW);
        assert_eq!(cache.stats(), CacheStats { hits: 2, verifications: 2 });
        assert_eq!(
            cache.verify_cached(&token, &keys, &policy, NOW),
            Verdict::UnknownKey { kid: "new".into() }
        );
        assert_eq!(cache.stats(), CacheStats { hits: 2, verifications: 3 });
        // The good verdict reached with the rotated keys is still there for them.
        cache.verify_cached(&token, &rotated, &policy, NOW);
        assert_eq!(cache.stats(), CacheStats { hits: 3, verifications: 3 });
        policy.add_audience("vault");
        cache.verify_cached(&token, &rotated, &policy, NOW);
        assert_eq!(cache.stats(), CacheStats { hits: 3, verifications: 4 });
    }

    #[test]
    fn the_cache_is_bounded_and_evicts_expired_then_oldest() {
        let (keys, policy) = (KeySet::empty(), Policy::new(ISSUER));
        let mut cache = VerdictCache::new(8);
        let tokens: Vec<String> = (0..20).map(|i| format!("opaque-{i}")).collect();
        for token in &tokens[..8] {
            cache.verify_cached(token, &keys, &policy, NOW);
        }
        assert_eq!(cache.len(), 8);
        // Past the negative TTL all are expired: one insertion clears them.
        cache.verify_cached(&tokens[8], &keys, &policy, NOW + NEGATIVE_TTL_SECS);
        assert_eq!(cache.len(), 1);
        for token in &tokens[9..20] {
            cache.verify_cached(token, &keys, &policy, NOW + NEGATIVE_TTL_SECS);
        }
        assert!(cache.len() <= 8);
        let before = cache.stats().verifications;
        cache.verify_cached(&tokens[19], &keys, &policy, NOW + NEGATIVE_TTL_SECS);
        cache.verify_cached(&tokens[9], &keys, &policy, NOW + NEGATIVE_TTL_SECS);
        assert_eq!(cache.stats().verifications, before + 1, "the newest kept, an old one gone");
    }

    #[test]
    fn only_a_verified_token_earns_an_account_identity() {
        assert_eq!(
            cache_identity(&good("team-a", "builder")).as_deref(),
            Some("sa:team-a/builder")
        );
        assert_eq!(cache_identity(&expired(NOW)), None);
        assert_eq!(cache_identity(&Verdict::UnknownKey { kid: "k".into() }), None);
        assert_eq!(cache_identity(&unverified(Reason::BadSignature)), None);
    }

    #[test]
    fn debug_output_never_holds_the_token() {
        let signers = Signers::new();
        let (keys, policy) = (signers.keys(), Policy::new(ISSUER));
        let token = signers.token("ES256", &claims("a", "b"));
        let signature = token.rsplit('.').next().unwrap();
        let mut flipped = token.clone();
        flipped.push('A');
        for verdict in [verify(&token, &keys, &policy, NOW), verify(&flipped, &keys, &policy, NOW)]
        {
            let printed = format!("{verdict:?} {keys:?} {policy:?}");
            assert!(!printed.contains(signature) && !printed.contains(&token[..20]), "{printed}");
        }
    }
}
