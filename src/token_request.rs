//! TokenRequest (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`) bodies in JSON and
//! protobuf: the cache key of a request ([`TokenRequestKey`]), the token a `201` answer carries
//! ([`IssuedToken`]), and the offline answer made from a cached one ([`offline_answer`]): the
//! cloud's own token, never invented or re-signed, with only kubelet's refresh hint
//! (`status.expirationTimestamp`) moved.
//!
//! Field numbers are those of `k8s.io/api` `authentication/v1/generated.proto` (TokenRequest:
//! metadata 1, spec 2, status 3; spec: audiences 1, boundObjectRef 3, expirationSeconds 4;
//! boundObjectRef: kind 1, apiVersion 2, name 3, uid 4; status: token 1, expirationTimestamp 2)
//! and apimachinery's `meta/v1` Time (seconds 1, nanos 2).
//!
//! Tokens are secrets: [`Token`] has no `Display` and a redacting `Debug`, and no error text
//! here ever contains one.

use std::fmt;

use serde_json::{Map, Value as Json, json};

use crate::jwt::decode_base64url;
use crate::protobuf::{self, ProtoError, Reader, Unknown, Writer};
use crate::x509::format_unix;

pub const API_VERSION: &str = "authentication.k8s.io/v1";
pub const KIND: &str = "TokenRequest";
/// What kube-apiserver assumes for an absent `spec.expirationSeconds`
/// (`SetDefaults_TokenRequestSpec`).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Kubelet refreshes a token once 80% of its lifetime has passed...
const KUBELET_REFRESH_PERCENT: i64 = 80;
/// ...or once it is a day old (`maxTTL` of kubelet's token manager).
const KUBELET_MAX_TTL: i64 = 24 * 3600;

const REQUEST_SPEC: u32 = 2;
const REQUEST_STATUS: u32 = 3;
const SPEC_AUDIENCES: u32 = 1;
const SPEC_BOUND_OBJECT_REF: u32 = 3;
const SPEC_EXPIRATION_SECONDS: u32 = 4;
const BOUND_KIND: u32 = 1;
const BOUND_API_VERSION: u32 = 2;
const BOUND_NAME: u32 = 3;
const BOUND_UID: u32 = 4;
const STATUS_TOKEN: u32 = 1;
const STATUS_EXPIRATION_TIMESTAMP: u32 = 2;
const TIME_SECONDS: u32 = 1;

/// The two representations of a TokenRequest body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    /// From a `Content-Type`; none means JSON, as kube-apiserver decides. `None` for media
    /// types this module does not read (YAML, CBOR).
    pub fn from_content_type(content_type: Option<&str>) -> Option<Format> {
        let media_type = content_type.unwrap_or_default().split(';').next().unwrap_or_default();
        match media_type.trim().to_ascii_lowercase().as_str() {
            "" | "application/json" => Some(Format::Json),
            protobuf::MEDIA_TYPE => Some(Format::Protobuf),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Protobuf => protobuf::MEDIA_TYPE,
        }
    }
}

/// The namespace and service account named by a TokenRequest path (a query is ignored).
pub fn path_target(path: &str) -> Option<(&str, &str)> {
    let path = path.split('?').next().unwrap_or_default();
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(ns), Some("serviceaccounts"), Some(sa), Some("token"), None)
            if !ns.is_empty() && !sa.is_empty() =>
        {
            Some((ns, sa))
        }
        _ => None,
    }
}

/// `spec.boundObjectRef`: the object (a Pod, a Secret, a Node) the token lives and dies with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BoundRef {
    pub kind: String,
    pub api_version: String,
    pub name: String,
    pub uid: String,
}

/// What a TokenRequest asks for: everything that makes two requests get different tokens.
/// The caller adds the requesting identity to its cache key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequestKey {
    pub namespace: String,
    pub service_account: String,
    /// In the order given: kube-apiserver copies it into the token's `aud` as is, and a
    /// client asks in the same order each time. Empty means the apiserver's own audiences.
    pub audiences: Vec<String>,
    /// [`DEFAULT_EXPIRATION_SECONDS`] when the request has none, as kube defaults it.
    pub expiration_seconds: i64,
    pub bound: Option<BoundRef>,
}

impl TokenRequestKey {
    /// Decodes a request body. Spec fields this module does not know (a newer API's, such as
    /// `attestations`) are an error rather than ignored: ignoring one could hand a cached
    /// token to a request that asked for something else.
    pub fn from_request(
        path_namespace: &str,
        path_service_account: &str,
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<TokenRequestKey, TokenRequestError> {
        let parsed = parse(body, content_type)?;
        if let Some(field) = parsed.unknown_spec_field {
            return Err(TokenRequestError::UnsupportedField(field));
        }
        let spec = parsed.spec;
        Ok(TokenRequestKey {
            namespace: path_namespace.to_string(),
            service_account: path_service_account.to_string(),
            audiences: spec.audiences,
            expiration_seconds: spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            bound: spec.bound,
        })
    }

    /// A stable text for a cache key: the same for the JSON and the protobuf form of one
    /// request, different whenever any field differs (a JSON array, so no field can run into
    /// the next).
    pub fn canonical(&self) -> String {
        let bound = self.bound.as_ref().map(|b| json!([b.kind, b.api_version, b.name, b.uid]));
        json!([
            "TokenRequest/v1",
            self.namespace,
            self.service_account,
            self.audiences,
            self.expiration_seconds,
            bound
        ])
        .to_string()
    }
}

/// A bearer token. Deliberately no `Display`; `Debug` prints its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} bytes redacted>)", self.0.len())
    }
}

/// What a `201` answer to a TokenRequest carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: Token,
    /// `status.expirationTimestamp` (Unix seconds): when kubelet considers the token expired.
    pub expiration_timestamp: i64,
    /// The JWT's own `exp` claim: when the cloud stops accepting it (a year later than
    /// `expiration_timestamp` for kube's extended `kube-api-access` tokens).
    pub jwt_exp: i64,
    /// `spec.expirationSeconds` as the cloud answered it (it may cap the request's).
    pub expiration_seconds: Option<i64>,
}

impl IssuedToken {
    pub fn from_answer(
        body: &[u8],
        content_type: Option<&str>,
    ) -> Result<IssuedToken, AnswerError> {
        let parsed = parse(body, content_type)?;
        issued(&parsed)
    }
}

fn issued(parsed: &Parsed) -> Result<IssuedToken, AnswerError> {
    let token =
        parsed.status.token.clone().filter(|t| !t.0.is_empty()).ok_or(AnswerError::NoToken)?;
    let expiration_timestamp =
        parsed.status.expiration_timestamp.ok_or(AnswerError::NoExpirationTimestamp)?;
    let jwt_exp = jwt_expiry(token.expose())?;
    Ok(IssuedToken {
        token,
        expiration_timestamp,
        jwt_exp,
        expiration_seconds: parsed.spec.expiration_seconds,
    })
}

/// The answer to give offline for `key` from the cached `201` body `cached_body` (of
/// `content_type`), at `now_unix`, or why there is none.
///
/// The token must stay valid (its JWT `exp`) for at least `min_remaining` seconds. When
/// kubelet would already refresh the cached answer (80% of `spec.expirationSeconds` past, or
/// a day since issue, judged by `status.expirationTimestamp`), the timestamp becomes
/// `min(exp, now + expirationSeconds)`, so kubelet takes it as fresh instead of asking again
/// at every sync; the body is re-encoded in its own representation. The token itself is
/// never changed.
pub fn offline_answer(
    cached_body: &[u8],
    content_type: Option<&str>,
    key: &TokenRequestKey,
    now_unix: i64,
    min_remaining: i64,
) -> Result<Vec<u8>, OfflineTokenError> {
    let parsed = parse(cached_body, content_type).map_err(AnswerError::from)?;
    if !parsed.spec.answers(key) {
        return Err(OfflineTokenError::OtherRequest);
    }
    let issued = issued(&parsed)?;
    let remaining = issued.jwt_exp.saturating_sub(now_unix);
    if remaining < min_remaining {
        return Err(OfflineTokenError::ExpiresTooSoon { remaining, min_remaining });
    }
    let lifetime = issued.expiration_seconds.unwrap_or(key.expiration_seconds).max(1);
    if !kubelet_would_refresh(issued.expiration_timestamp, lifetime, now_unix) {
        return Ok(cached_body.to_vec());
    }
    let hint = issued.jwt_exp.min(now_unix.saturating_add(lifetime));
    let rewritten = match parsed.format {
        Format::Json => rewrite_json(cached_body, hint),
        Format::Protobuf => rewrite_protobuf(cached_body, hint),
    };
    rewritten.map_err(|e| OfflineTokenError::Unparsable(AnswerError::Body(e)))
}

/// kubelet's `requiresRefresh` without its jitter of up to 10 s.
fn kubelet_would_refresh(expiration_timestamp: i64, lifetime: i64, now: i64) -> bool {
    let issued_at = expiration_timestamp.saturating_sub(lifetime);
    let refresh_at = issued_at.saturating_add(lifetime * KUBELET_REFRESH_PERCENT / 100);
    now >= refresh_at || now >= issued_at.saturating_add(KUBELET_MAX_TTL)
}

fn rewrite_json(body: &[u8], hint: i64) -> Result<Vec<u8>, TokenRequestError> {
    let mut object: Json = serde_json::from_slice(body).map_err(json_error)?;
    let status = object
        .as_object_mut()
        .ok_or(TokenRequestError::NotAnObject)?
        .entry("status")
        .or_insert_with(|| Json::Object(Map::new()));
    let status = status.as_object_mut().ok_or(TokenRequestError::WrongType("status"))?;
    status.insert("expirationTimestamp".into(), json!(format_unix(hint)));
    serde_json::to_vec(&object).map_err(|_| TokenRequestError::NotAnObject)
}

fn rewrite_protobuf(body: &[u8], hint: i64) -> Result<Vec<u8>, TokenRequestError> {
    let envelope = protobuf::decode_envelope(body)?;
    let mut time = Writer::new();
    time.int64(TIME_SECONDS, hint);
    let status = last_message_field(envelope.raw, REQUEST_STATUS)?.unwrap_or_default();
    let status = replace_field(status, STATUS_EXPIRATION_TIMESTAMP, time.as_bytes())?;
    let raw = replace_field(envelope.raw, REQUEST_STATUS, &status)?;
    Ok(protobuf::encode_envelope(&Unknown { raw: &raw, ..envelope }))
}

/// The last occurrence of length-delimited field `number` in `message`.
fn last_message_field(message: &[u8], number: u32) -> Result<Option<&[u8]>, TokenRequestError> {
    let mut found = None;
    for field in Reader::new(message) {
        let (n, value) = field?;
        if n == number {
            found = Some(value.bytes(n)?);
        }
    }
    Ok(found)
}

/// `message` with every occurrence of field `number` replaced by one length-delimited field
/// holding `replacement`, at the place of the first (or at the end); other fields unchanged.
fn replace_field(message: &[u8], number: u32, replacement: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let mut out = Writer::new();
    let mut placed = false;
    for field in Reader::new(message) {
        let (n, value) = field?;
        match (n == number, placed) {
            (false, _) => {
                out.value(n, value);
            }
            (true, false) => {
                out.bytes(n, replacement);
                placed = true;
            }
            (true, true) => {}
        }
    }
    if !placed {
        out.bytes(number, replacement);
    }
    Ok(out.into_bytes())
}

/// Why a TokenRequest body (a request, or an answer) cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRequestError {
    /// Neither JSON nor Kubernetes protobuf; holds the Content-Type.
    UnsupportedMediaType(String),
    /// Not JSON at all (where it breaks, never what it says).
    Json {
        line: usize,
        column: usize,
    },
    NotAnObject,
    Protobuf(ProtoError),
    /// The envelope or `kind`/`apiVersion` names another type.
    NotATokenRequest {
        api_version: String,
        kind: String,
    },
    /// A field whose value has the wrong type, by its JSON path.
    WrongType(&'static str),
    /// A spec field this proxy does not know (a newer API's).
    UnsupportedField(String),
}

impl fmt::Display for TokenRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRequestError::UnsupportedMediaType(media_type) => write!(
                f,
                "TokenRequest bodies of type {media_type:?} are not understood (JSON and protobuf \
                 are)"
            ),
            TokenRequestError::Json { line, column } => {
                write!(f, "the TokenRequest body is not valid JSON (line {line}, column {column})")
            }
            TokenRequestError::NotAnObject => {
                write!(f, "the TokenRequest body is not a JSON object")
            }
            TokenRequestError::Protobuf(e) => write!(f, "the TokenRequest body is not valid: {e}"),
            TokenRequestError::NotATokenRequest { api_version, kind } => write!(
                f,
                "the body is a {kind:?} of {api_version:?}, not a TokenRequest of {API_VERSION}"
            ),
            TokenRequestError::WrongType(path) => {
                write!(f, "TokenRequest field {path} has the wrong type")
            }
            TokenRequestError::UnsupportedField(path) => {
                write!(f, "TokenRequest field {path} is not understood by lite-apiserver")
            }
        }
    }
}

impl std::error::Error for TokenRequestError {}

impl From<ProtoError> for TokenRequestError {
    fn from(e: ProtoError) -> TokenRequestError {
        TokenRequestError::Protobuf(e)
    }
}

fn json_error(e: serde_json::Error) -> TokenRequestError {
    TokenRequestError::Json { line: e.line(), column: e.column() }
}

/// Why a `201` answer yields no usable token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    Body(TokenRequestError),
    NoToken,
    NoExpirationTimestamp,
    Jwt(JwtError),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Body(e) => e.fmt(f),
            AnswerError::NoToken => write!(f, "the TokenRequest answer has no status.token"),
            AnswerError::NoExpirationTimestamp => {
                write!(f, "the TokenRequest answer has no status.expirationTimestamp")
            }
            AnswerError::Jwt(e) => write!(f, "the issued token is not a readable JWT: {e}"),
        }
    }
}

impl std::error::Error for AnswerError {}

impl From<TokenRequestError> for AnswerError {
    fn from(e: TokenRequestError) -> AnswerError {
        AnswerError::Body(e)
    }
}

impl From<JwtError> for AnswerError {
    fn from(e: JwtError) -> AnswerError {
        AnswerError::Jwt(e)
    }
}

/// Why a cached TokenRequest answer is not given offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfflineTokenError {
    Unparsable(AnswerError),
    /// The cached answer is for another request (its bound object or audiences differ).
    OtherRequest,
    /// The token's `exp` is less than `min_remaining` seconds away (or past: `remaining` ≤ 0).
    ExpiresTooSoon {
        remaining: i64,
        min_remaining: i64,
    },
}

impl fmt::Display for OfflineTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfflineTokenError::Unparsable(e) => write!(f, "the cached TokenRequest answer: {e}"),
            OfflineTokenError::OtherRequest => {
                write!(f, "the cached TokenRequest answer is for another request")
            }
            OfflineTokenError::ExpiresTooSoon { remaining, .. } if *remaining <= 0 => {
                write!(f, "the cached service-account token has expired")
            }
            OfflineTokenError::ExpiresTooSoon { remaining, min_remaining } => write!(
                f,
                "the cached service-account token expires in {remaining}s (less than \
                 {min_remaining}s)"
            ),
        }
    }
}

impl std::error::Error for OfflineTokenError {}

impl From<AnswerError> for OfflineTokenError {
    fn from(e: AnswerError) -> OfflineTokenError {
        OfflineTokenError::Unparsable(e)
    }
}

impl From<JwtError> for OfflineTokenError {
    fn from(e: JwtError) -> OfflineTokenError {
        OfflineTokenError::Unparsable(AnswerError::Jwt(e))
    }
}

/// Why a token's `exp` cannot be read. Never says anything about the token's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Not three dot-separated segments.
    NotAJwt,
    /// The payload segment is not base64url.
    Base64,
    /// The payload is not a JSON object.
    Json,
    /// No numeric `exp` claim.
    NoExp,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtError::NotAJwt => "not three dot-separated segments",
            JwtError::Base64 => "the payload is not base64url",
            JwtError::Json => "the payload is not a JSON object",
            JwtError::NoExp => "no numeric exp claim",
        })
    }
}

impl std::error::Error for JwtError {}

/// The `exp` claim of a JWT, read without checking its signature: the token came from the
/// cloud over TLS; this only learns when it stops working.
pub fn jwt_expiry(token: &str) -> Result<i64, JwtError> {
    let mut segments = token.split('.');
    let payload = match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some(_), Some(payload), Some(_), None) => payload,
        _ => return Err(JwtError::NotAJwt),
    };
    let payload = decode_base64url(payload).map_err(|_| JwtError::Base64)?;
    let claims: Json = serde_json::from_slice(&payload).map_err(|_| JwtError::Json)?;
    let exp = claims.as_object().ok_or(JwtError::Json)?.get("exp").ok_or(JwtError::NoExp)?;
    // NumericDate may be fractional; whole seconds are enough here.
    exp.as_i64().or_else(|| exp.as_f64().map(|f| f as i64)).ok_or(JwtError::NoExp)
}

/// A TokenRequest body decoded far enough for this module.
struct Parsed {
    format: Format,
    spec: Spec,
    status: Status,
    /// The first spec field not understood, by name or number.
    unknown_spec_field: Option<String>,
}

#[derive(Default)]
struct Spec {
    audiences: Vec<String>,
    expiration_seconds: Option<i64>,
    bound: Option<BoundRef>,
}

impl Spec {
    /// Whether an answer with this (defaulted) spec can answer `key`: the same bound object
    /// and, when the request named audiences, the same audiences. (kube fills empty
    /// audiences with its own and may cap expirationSeconds, so those cannot be compared.)
    fn answers(&self, key: &TokenRequestKey) -> bool {
        let bound_matches = match (&self.bound, &key.bound) {
            (None, None) => true,
            (Some(answer), Some(asked)) => {
                answer.kind == asked.kind
                    && answer.name == asked.name
                    && (asked.uid.is_empty() || answer.uid == asked.uid)
            }
            _ => false,
        };
        bound_matches && (key.audiences.is_empty() || key.audiences == self.audiences)
    }
}

#[derive(Default)]
struct Status {
    token: Option<Token>,
    expiration_timestamp: Option<i64>,
}

fn parse(body: &[u8], content_type: Option<&str>) -> Result<Parsed, TokenRequestError> {
    let unsupported =
        || TokenRequestError::UnsupportedMediaType(content_type.unwrap_or_default().to_string());
    match Format::from_content_type(content_type).ok_or_else(unsupported)? {
        Format::Json => parse_json(body),
        Format::Protobuf => parse_protobuf(body),
    }
}

fn parse_json(body: &[u8]) -> Result<Parsed, TokenRequestError> {
    let value: Json = serde_json::from_slice(body).map_err(json_error)?;
    let object = value.as_object().ok_or(TokenRequestError::NotAnObject)?;
    let text = |field: &'static str| match object.get(field) {
        None | Some(Json::Null) => Ok(""),
        Some(Json::String(s)) => Ok(s.as_str()),
        Some(_) => Err(TokenRequestError::WrongType(field)),
    };
    check_type(text("apiVersion")?, text("kind")?)?;
    let mut parsed = Parsed {
        format: Format::Json,
        spec: Spec::default(),
        status: Status::default(),
        unknown_spec_field: None,
    };
    if let Some(spec) = json_object(object.get("spec"), "spec")? {
        json_spec(spec, &mut parsed)?;
    }
    if let Some(status) = json_object(object.get("status"), "status")? {
        parsed.status.token = json_string(status.get("token"), "status.token")?.map(Token);
        parsed.status.expiration_timestamp =
            json_string(status.get("expirationTimestamp"), "status.expirationTimestamp")?
                .map(|t| {
                    parse_rfc3339(&t)
                        .ok_or(TokenRequestError::WrongType("status.expirationTimestamp"))
                })
                .transpose()?;
    }
    Ok(parsed)
}

fn json_spec(spec: &Map<String, Json>, parsed: &mut Parsed) -> Result<(), TokenRequestError> {
    for (name, value) in spec {
        match name.as_str() {
            "audiences" => parsed.spec.audiences = json_strings(value, "spec.audiences")?,
            "expirationSeconds" => {
                parsed.spec.expiration_seconds = match value {
                    Json::Null => None,
                    number => Some(
                        number
                            .as_i64()
                            .ok_or(TokenRequestError::WrongType("spec.expirationSeconds"))?,
                    ),
                }
            }
            "boundObjectRef" => {
                parsed.spec.bound = json_object(Some(value), "spec.boundObjectRef")?
                    .map(|r| json_bound(r, parsed))
                    .transpose()?
            }
            other => {
                parsed.unknown_spec_field.get_or_insert_with(|| format!("spec.{other}"));
            }
        }
    }
    Ok(())
}

fn json_bound(
    object: &Map<String, Json>,
    parsed: &mut Parsed,
) -> Result<BoundRef, TokenRequestError> {
    const PATH: &str = "spec.boundObjectRef";
    let mut bound = BoundRef::default();
    for (name, value) in object {
        let slot = match name.as_str() {
            "kind" => &mut bound.kind,
            "apiVersion" => &mut bound.api_version,
            "name" => &mut bound.name,
            "uid" => &mut bound.uid,
            other => {
                parsed.unknown_spec_field.get_or_insert_with(|| format!("{PATH}.{other}"));
                continue;
            }
        };
        *slot = json_string(Some(value), PATH)?.unwrap_or_default();
    }
    Ok(bound)
}

fn json_object<'a>(
    value: Option<&'a Json>,
    path: &'static str,
) -> Result<Option<&'a Map<String, Json>>, TokenRequestError> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(object)) => Ok(Some(object)),
        Some(_) => Err(TokenRequestError::WrongType(path)),
    }
}

fn json_string(
    value: Option<&Json>,
    path: &'static str,
) -> Result<Option<String>, TokenRequestError> {
    match value {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenRequestError::WrongType(path)),
    }
}

fn json_strings(value: &Json, path: &'static str) -> Result<Vec<String>, TokenRequestError> {
    match value {
        Json::Null => Ok(Vec::new()),
        Json::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or(TokenRequestError::WrongType(path)))
            .collect(),
        _ => Err(TokenRequestError::WrongType(path)),
    }
}

/// Empty fields are accepted: kube-apiserver takes the type from the URL when a body has none.
fn check_type(api_version: &str, kind: &str) -> Result<(), TokenRequestError> {
    let api_version_ok = api_version.is_empty() || api_version == API_VERSION;
    let kind_ok = kind.is_empty() || kind == KIND;
    if api_version_ok && kind_ok {
        return Ok(());
    }
    Err(TokenRequestError::NotATokenRequest {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
    })
}

fn parse_protobuf(body: &[u8]) -> Result<Parsed, TokenRequestError> {
    let envelope = protobuf::decode_envelope(body)?;
    check_type(envelope.api_version, envelope.kind)?;
    let mut parsed = Parsed {
        format: Format::Protobuf,
        spec: Spec::default(),
        status: Status::default(),
        unknown_spec_field: None,
    };
    for field in Reader::new(envelope.raw) {
        match field? {
            (REQUEST_SPEC, value) => proto_spec(value.bytes(REQUEST_SPEC)?, &mut parsed)?,
            (REQUEST_STATUS, value) => {
                parsed.status = proto_status(value.bytes(REQUEST_STATUS)?)?;
            }
            // metadata (1) and anything newer: not part of what a token is for.
            _ => {}
        }
    }
    Ok(parsed)
}

fn proto_spec(message: &[u8], parsed: &mut Parsed) -> Result<(), TokenRequestError> {
    for field in Reader::new(message) {
        match field? {
            (SPEC_AUDIENCES, value) => {
                parsed.spec.audiences.push(value.string(SPEC_AUDIENCES)?.to_string())
            }
            (SPEC_EXPIRATION_SECONDS, value) => {
                parsed.spec.expiration_seconds = Some(value.int64(SPEC_EXPIRATION_SECONDS)?)
            }
            (SPEC_BOUND_OBJECT_REF, value) => {
                parsed.spec.bound = Some(proto_bound(value.bytes(SPEC_BOUND_OBJECT_REF)?, parsed)?)
            }
            (other, _) => {
                parsed.unknown_spec_field.get_or_insert_with(|| format!("spec field {other}"));
            }
        }
    }
    Ok(())
}

fn proto_bound(message: &[u8], parsed: &mut Parsed) -> Result<BoundRef, TokenRequestError> {
    let mut bound = BoundRef::default();
    for field in Reader::new(message) {
        let (number, value) = field?;
        let slot = match number {
            BOUND_KIND => &mut bound.kind,
            BOUND_API_VERSION => &mut bound.api_version,
            BOUND_NAME => &mut bound.name,
            BOUND_UID => &mut bound.uid,
            other => {
                parsed
                    .unknown_spec_field
                    .get_or_insert_with(|| format!("spec.boundObjectRef field {other}"));
                continue;
            }
        };
        *slot = value.string(number)?.to_string();
    }
    Ok(bound)
}

fn proto_status(message: &[u8]) -> Result<Status, TokenRequestError> {
    let mut status = Status::default();
    for field in Reader::new(message) {
        match field? {
            (STATUS_TOKEN, value) => {
                status.token = Some(Token(value.string(STATUS_TOKEN)?.to_string()))
            }
            (STATUS_EXPIRATION_TIMESTAMP, value) => {
                status.expiration_timestamp =
                    Some(proto_time_seconds(value.bytes(STATUS_EXPIRATION_TIMESTAMP)?)?)
            }
            _ => {}
        }
    }
    Ok(status)
}

/// The seconds of a `meta/v1` Time (its nanos are below what matters here).
fn proto_time_seconds(message: &[u8]) -> Result<i64, TokenRequestError> {
    let mut seconds = 0;
    for field in Reader::new(message) {
        if let (TIME_SECONDS, value) = field? {
            seconds = value.int64(TIME_SECONDS)?;
        }
    }
    Ok(seconds)
}

/// An RFC 3339 time as kube writes `metav1.Time` (`2024-05-01T12:34:56Z`); fractional seconds
/// and numeric offsets are accepted too.
fn parse_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.bytes().all(|c| c.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let value = |a: u8, b: u8| i64::from(a - b'0') * 10 + i64::from(b - b'0');
            let minutes = value(*h1, *h2) * 60 + value(*m1, *m2);
            if *sign == b'+' { minutes * 60 } else { -minutes * 60 }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
    use k8s_pb::apimachinery::pkg::runtime as kruntime;
    use prost::Message;

    use super::*;

    const PROTOBUF: Option<&str> = Some("application/vnd.kubernetes.protobuf");
    const JSON: Option<&str> = Some("application/json");
    const NOW: i64 = 1_700_000_000;
    const YEAR: i64 = 365 * 24 * 3600;

    fn base64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let mut padded = [0u8; 3];
            padded[..chunk.len()].copy_from_slice(chunk);
            let bits = u32::from_be_bytes([0, padded[0], padded[1], padded[2]]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// A JWT-shaped token with the given `exp` (signature bytes are not checked here).
    fn jwt(exp: i64) -> String {
        let header = base64url(br#"{"alg":"RS256","kid":"k1"}"#);
        let payload = base64url(
            json!({"iss": "https://kubernetes.default.svc", "exp": exp}).to_string().as_bytes(),
        );
        format!("{header}.{payload}.c2lnbmF0dXJl")
    }

    /// The pod-bound request kubelet sends for a `kube-api-access` volume.
    fn kubelet_spec() -> authn::TokenRequestSpec {
        authn::TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3607),
            bound_object_ref: Some(authn::BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some("web-1".into()),
                u_id: Some("0b5e-uid".into()),
            }),
        }
    }

    fn envelope(raw: Vec<u8>) -> Vec<u8> {
        let unknown = kruntime::Unknown {
            type_meta: Some(kruntime::TypeMeta {
                api_version: Some(API_VERSION.into()),
                kind: Some(KIND.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [b"k8s\0".as_slice(), &unknown.encode_to_vec()].concat()
    }

    fn protobuf_request(spec: authn::TokenRequestSpec) -> Vec<u8> {
        // As client-go sends it: empty metadata and an empty status are written too.
        let request = authn::TokenRequest {
            metadata: Some(meta::ObjectMeta::default()),
            spec: Some(spec),
            status: Some(authn::TokenRequestStatus {
                token: Some(String::new()),
                expiration_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
            }),
        };
        envelope(request.encode_to_vec())
    }

    fn bound_json() -> Json {
        json!({"kind": "Pod", "apiVersion": "v1", "name": "web-1", "uid": "0b5e-uid"})
    }

    fn json_request() -> Vec<u8> {
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {
                "audiences": null,
                "expirationSeconds": 3607,
                "boundObjectRef": bound_json(),
            },
            "status": {"token": "", "expirationTimestamp": null},
        })
        .to_string()
        .into_bytes()
    }

    fn key(body: &[u8], content_type: Option<&str>) -> Result<TokenRequestKey, TokenRequestError> {
        TokenRequestKey::from_request("default", "web", body, content_type)
    }

    fn protobuf_answer(token: &str, expiration_timestamp: i64) -> Vec<u8> {
        let mut spec = kubelet_spec();
        spec.audiences = vec!["https://kubernetes.default.svc".into()];
        let answer = authn::TokenRequest {
            metadata: Some(meta::ObjectMeta::default()),
            spec: Some(spec),
            status: Some(authn::TokenRequestStatus {
                token: Some(token.into()),
                expiration_timestamp: Some(meta::Time {
                    seconds: Some(expiration_timestamp),
                    nanos: Some(0),
                }),
            }),
        };
        envelope(answer.encode_to_vec())
    }

    fn json_answer(token: &str, expiration_timestamp: i64) -> Vec<u8> {
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {
                "audiences": ["https://kubernetes.default.svc"],
                "expirationSeconds": 3607,
                "boundObjectRef": bound_json(),
            },
            "status": {"token": token, "expirationTimestamp": format_unix(expiration_timestamp)},
        })
        .to_string()
        .into_bytes()
    }

    fn decode_protobuf_answer(body: &[u8]) -> authn::TokenRequest {
        let body = body.strip_prefix(b"k8s\0").expect("magic");
        let unknown = kruntime::Unknown::decode(body).expect("runtime.Unknown");
        assert_eq!(unknown.type_meta.as_ref().and_then(|t| t.kind.as_deref()), Some(KIND));
        authn::TokenRequest::decode(unknown.raw.unwrap_or_default().as_slice())
            .expect("TokenRequest")
    }

    #[test]
    fn recognises_the_token_request_path() {
        let path = "/api/v1/namespaces/kube-system/serviceaccounts/flannel/token";
        assert_eq!(path_target(path), Some(("kube-system", "flannel")));
        assert_eq!(path_target(&format!("{path}?dryRun=All")), Some(("kube-system", "flannel")));
        for other in [
            "/api/v1/namespaces/default/serviceaccounts/web",
            "/api/v1/namespaces/default/serviceaccounts/web/token/x",
            "/api/v1/namespaces//serviceaccounts/web/token",
            "/api/v1/namespaces/default/serviceaccounts//token",
            "/api/v1/namespaces/default/secrets/web/token",
            "/apis/v1/namespaces/default/serviceaccounts/web/token",
        ] {
            assert_eq!(path_target(other), None, "{other}");
        }
    }

    #[test]
    fn json_and_protobuf_requests_of_the_same_content_have_the_same_key() {
        let from_protobuf = key(&protobuf_request(kubelet_spec()), PROTOBUF).unwrap();
        let from_json = key(&json_request(), JSON).unwrap();
        assert_eq!(from_protobuf, from_json);
        assert_eq!(from_protobuf.canonical(), from_json.canonical());
        assert_eq!(from_json.expiration_seconds, 3607);
        assert_eq!(from_json.bound.as_ref().map(|b| b.uid.as_str()), Some("0b5e-uid"));
        // No Content-Type is JSON, and media-type parameters are ignored.
        assert_eq!(key(&json_request(), None).unwrap(), from_json);
        let with_params = Some("application/vnd.kubernetes.protobuf; charset=binary");
        assert_eq!(key(&protobuf_request(kubelet_spec()), with_params).unwrap(), from_json);
    }

    #[test]
    fn an_absent_expiration_is_the_apiserver_default() {
        let absent = key(br#"{"spec":{"audiences":["vault"]}}"#, JSON).unwrap();
        let explicit =
            key(br#"{"spec":{"audiences":["vault"],"expirationSeconds":3600}}"#, JSON).unwrap();
        assert_eq!(absent.canonical(), explicit.canonical());
        let spec =
            authn::TokenRequestSpec { audiences: vec!["vault".into()], ..Default::default() };
        assert_eq!(key(&protobuf_request(spec), PROTOBUF).unwrap(), absent);
        // An empty body asks for the defaults.
        assert_eq!(
            key(b"{}", JSON).unwrap().canonical(),
            key(&envelope(vec![]), PROTOBUF).unwrap().canonical()
        );
    }

    #[test]
    fn every_field_of_the_request_changes_the_key() {
        let base = key(&protobuf_request(kubelet_spec()), PROTOBUF).unwrap();
        let mut variants = Vec::new();
        let mut spec = kubelet_spec();
        spec.audiences = vec!["vault".into()];
        variants.push(key(&protobuf_request(spec.clone()), PROTOBUF).unwrap());
        spec.audiences = vec!["vault".into(), "mesh".into()];
        variants.push(key(&protobuf_request(spec.clone()), PROTOBUF).unwrap());
        spec.audiences = vec!["mesh".into(), "vault".into()];
        variants.push(key(&protobuf_request(spec), PROTOBUF).unwrap());
        let mut spec = kubelet_spec();
        spec.expiration_seconds = Some(600);
        variants.push(key(&protobuf_request(spec), PROTOBUF).unwrap());
        for change in 0..4 {
            let mut spec = kubelet_spec();
            let bound = spec.bound_object_ref.as_mut().unwrap();
            let field = [&mut bound.kind, &mut bound.api_version, &mut bound.name, &mut bound.u_id];
            *field.into_iter().nth(change).unwrap() = Some("other".into());
            variants.push(key(&protobuf_request(spec), PROTOBUF).unwrap());
        }
        let mut spec = kubelet_spec();
        spec.bound_object_ref = None;
        variants.push(key(&protobuf_request(spec), PROTOBUF).unwrap());
        variants
            .push(TokenRequestKey::from_request("default", "db", &json_request(), JSON).unwrap());
        variants.push(TokenRequestKey::from_request("edge", "web", &json_request(), JSON).unwrap());
        // Names that would collide if fields were simply joined with a separator.
        variants.push(
            TokenRequestKey::from_request("default\",\"web", "", &json_request(), JSON).unwrap(),
        );

        let mut seen = vec![base.canonical()];
        for variant in variants {
            let canonical = variant.canonical();
            assert!(!seen.contains(&canonical), "duplicate key {canonical}");
            seen.push(canonical);
        }
    }

    #[test]
    fn malformed_requests_are_errors() {
        let cases: Vec<(Vec<u8>, Option<&str>, TokenRequestError)> = vec![
            (b"{\"spec\":".to_vec(), JSON, TokenRequestError::Json { line: 1, column: 8 }),
            (b"[1]".to_vec(), JSON, TokenRequestError::NotAnObject),
            (b"{\"spec\":[]}".to_vec(), JSON, TokenRequestError::WrongType("spec")),
            (
                br#"{"spec":{"audiences":"vault"}}"#.to_vec(),
                JSON,
                TokenRequestError::WrongType("spec.audiences"),
            ),
            (
                br#"{"spec":{"audiences":[1]}}"#.to_vec(),
                JSON,
                TokenRequestError::WrongType("spec.audiences"),
            ),
            (
                br#"{"spec":{"expirationSeconds":"3600"}}"#.to_vec(),
                JSON,
                TokenRequestError::WrongType("spec.expirationSeconds"),
            ),
            (
                br#"{"spec":{"expirationSeconds":1.5}}"#.to_vec(),
                JSON,
                TokenRequestError::WrongType("spec.expirationSeconds"),
            ),
            (
                br#"{"spec":{"boundObjectRef":{"uid":7}}}"#.to_vec(),
                JSON,
                TokenRequestError::WrongType("spec.boundObjectRef"),
            ),
            (
                br#"{"kind":"Pod","apiVersion":"v1"}"#.to_vec(),
                JSON,
                TokenRequestError::NotATokenRequest {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                },
            ),
            (
                br#"{"spec":{"attestations":{"x":{"items":[]}}}}"#.to_vec(),
                JSON,
                TokenRequestError::UnsupportedField("spec.attestations".into()),
            ),
            (
                br#"{"spec":{"boundObjectRef":{"kind":"Pod","extra":""}}}"#.to_vec(),
                JSON,
                TokenRequestError::UnsupportedField("spec.boundObjectRef.extra".into()),
            ),
            (json_request(), PROTOBUF, TokenRequestError::Protobuf(ProtoError::MissingMagic)),
            (
                b"k8s\0\x12\x04\x12\x02\x08".to_vec(),
                PROTOBUF,
                TokenRequestError::Protobuf(ProtoError::Truncated),
            ),
            (
                envelope(vec![0x12, 0x02, 0x20, 0x05, 0x12]),
                PROTOBUF,
                TokenRequestError::Protobuf(ProtoError::Truncated),
            ),
            (
                envelope(vec![0x12, 0x02, 0x0a, 0x00, 0x10]),
                PROTOBUF,
                TokenRequestError::Protobuf(ProtoError::Truncated),
            ),
            (
                envelope(vec![0x12, 0x02, 0x20, 0x00, 0x10, 0x01]),
                PROTOBUF,
                TokenRequestError::Protobuf(ProtoError::WrongWireType { field: 2 }),
            ),
            (
                // spec.audiences as a varint.
                envelope(vec![0x12, 0x02, 0x08, 0x01]),
                PROTOBUF,
                TokenRequestError::Protobuf(ProtoError::WrongWireType { field: 1 }),
            ),
            (
                // spec field 5 (attestations), one entry.
                envelope(vec![0x12, 0x04, 0x2a, 0x02, 0x0a, 0x00]),
                PROTOBUF,
                TokenRequestError::UnsupportedField("spec field 5".into()),
            ),
            (
                b"spec: {}".to_vec(),
                Some("application/yaml"),
                TokenRequestError::UnsupportedMediaType("application/yaml".into()),
            ),
        ];
        for (body, content_type, expected) in cases {
            assert_eq!(
                key(&body, content_type),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn error_texts_never_carry_the_body() {
        let secret = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.c2ln";
        let body = format!(r#"{{"spec":{{"audiences":[{{"token":"{secret}"}}]}}}}"#);
        let error = key(body.as_bytes(), JSON).unwrap_err();
        assert!(!error.to_string().contains(secret), "{error}");
        let garbage = format!(r#"{{"status":{{"token":"{secret}"}}"#);
        let error = IssuedToken::from_answer(garbage.as_bytes(), JSON).unwrap_err();
        assert!(!error.to_string().contains(secret), "{error}");
    }

    #[test]
    fn reads_the_issued_token_from_both_representations() {
        let token = jwt(NOW + YEAR);
        for (body, content_type) in [
            (json_answer(&token, NOW + 3607), JSON),
            (protobuf_answer(&token, NOW + 3607), PROTOBUF),
        ] {
            let issued = IssuedToken::from_answer(&body, content_type).unwrap();
            assert_eq!(issued.token.expose(), token);
            assert_eq!(issued.expiration_timestamp, NOW + 3607);
            assert_eq!(issued.jwt_exp, NOW + YEAR);
            assert_eq!(issued.expiration_seconds, Some(3607));
            assert!(!format!("{issued:?}").contains(&token), "Debug shows the token");
        }
    }

    #[test]
    fn an_answer_without_a_usable_token_is_an_error() {
        let cases = [
            (json_answer("", NOW), AnswerError::NoToken),
            (json_answer("opaque-not-a-jwt", NOW), AnswerError::Jwt(JwtError::NotAJwt)),
            (json_answer("a.b!.c", NOW), AnswerError::Jwt(JwtError::Base64)),
            (
                json_answer(&format!("a.{}.c", base64url(b"[1]")), NOW),
                AnswerError::Jwt(JwtError::Json),
            ),
            (
                json_answer(&format!("a.{}.c", base64url(b"{\"exp\":\"x\"}")), NOW),
                AnswerError::Jwt(JwtError::NoExp),
            ),
            (br#"{"status":{"token":"a.b.c"}}"#.to_vec(), AnswerError::NoExpirationTimestamp),
            (
                br#"{"status":{"token":"a.b.c","expirationTimestamp":"yesterday"}}"#.to_vec(),
                AnswerError::Body(TokenRequestError::WrongType("status.expirationTimestamp")),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                IssuedToken::from_answer(&body, JSON),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn a_fresh_cached_answer_is_given_unchanged() {
        let token = jwt(NOW + YEAR);
        let request = key(&json_request(), JSON).unwrap();
        for (body, content_type) in [
            (json_answer(&token, NOW + 3000), JSON),
            (protobuf_answer(&token, NOW + 3000), PROTOBUF),
        ] {
            assert_eq!(offline_answer(&body, content_type, &request, NOW, 300).unwrap(), body);
        }
    }

    #[test]
    fn a_stale_hint_is_moved_in_json() {
        let token = jwt(NOW + YEAR);
        let request = key(&json_request(), JSON).unwrap();
        let body = json_answer(&token, NOW - 60);
        let answer = offline_answer(&body, JSON, &request, NOW, 300).unwrap();
        let issued = IssuedToken::from_answer(&answer, JSON).unwrap();
        assert_eq!(issued.token.expose(), token);
        assert_eq!(issued.expiration_timestamp, NOW + 3607);
        let value: Json = serde_json::from_slice(&answer).unwrap();
        assert_eq!(value["status"]["expirationTimestamp"], format_unix(NOW + 3607));
        assert_eq!(value["spec"]["boundObjectRef"]["uid"], "0b5e-uid");
        assert_eq!(value["kind"], "TokenRequest");
    }

    #[test]
    fn a_stale_hint_is_moved_in_protobuf_and_the_answer_decodes_with_the_real_schema() {
        let token = jwt(NOW + YEAR);
        let request = key(&protobuf_request(kubelet_spec()), PROTOBUF).unwrap();
        let body = protobuf_answer(&token, NOW - 60);
        let answer = offline_answer(&body, PROTOBUF, &request, NOW, 300).unwrap();
        let decoded = decode_protobuf_answer(&answer);
        let original = decode_protobuf_answer(&body);
        let status = decoded.status.clone().unwrap();
        assert_eq!(status.token.as_deref(), Some(token.as_str()));
        assert_eq!(status.expiration_timestamp.and_then(|t| t.seconds), Some(NOW + 3607));
        assert_eq!(decoded.spec, original.spec);
        assert_eq!(decoded.metadata, original.metadata);
    }

    #[test]
    fn the_moved_hint_never_passes_the_tokens_own_expiry() {
        // A Vault token: not extended, one hour; its hint passed 10 min ago, exp is 20 min away.
        let token = jwt(NOW + 1200);
        let request = key(&json_request(), JSON).unwrap();
        let answer =
            offline_answer(&json_answer(&token, NOW - 600), JSON, &request, NOW, 300).unwrap();
        assert_eq!(
            IssuedToken::from_answer(&answer, JSON).unwrap().expiration_timestamp,
            NOW + 1200
        );
    }

    #[test]
    fn a_hint_inside_kubelets_refresh_window_is_moved_too() {
        // 3607 s lifetime: kubelet refreshes 20% (721 s) before the hint.
        let token = jwt(NOW + YEAR);
        let request = key(&json_request(), JSON).unwrap();
        let due =
            offline_answer(&json_answer(&token, NOW + 700), JSON, &request, NOW, 300).unwrap();
        assert_eq!(IssuedToken::from_answer(&due, JSON).unwrap().expiration_timestamp, NOW + 3607);
        let body = json_answer(&token, NOW + 800);
        assert_eq!(offline_answer(&body, JSON, &request, NOW, 300).unwrap(), body);
    }

    #[test]
    fn an_expired_or_expiring_token_is_refused() {
        let request = key(&json_request(), JSON).unwrap();
        for (exp, remaining) in [(NOW - 1, -1), (NOW + 299, 299)] {
            let body = protobuf_answer(&jwt(exp), NOW - 10);
            assert_eq!(
                offline_answer(&body, PROTOBUF, &request, NOW, 300),
                Err(OfflineTokenError::ExpiresTooSoon { remaining, min_remaining: 300 })
            );
        }
        let body = protobuf_answer(&jwt(NOW + 300), NOW - 10);
        assert!(offline_answer(&body, PROTOBUF, &request, NOW, 300).is_ok());
    }

    #[test]
    fn an_answer_for_another_request_is_refused() {
        let body = json_answer(&jwt(NOW + YEAR), NOW + 3000);
        let mut spec = kubelet_spec();
        spec.bound_object_ref.as_mut().unwrap().u_id = Some("recreated-pod".into());
        let other_pod = key(&protobuf_request(spec), PROTOBUF).unwrap();
        let vault =
            key(br#"{"spec":{"audiences":["vault"],"expirationSeconds":3607}}"#, JSON).unwrap();
        for request in [other_pod, vault] {
            assert_eq!(
                offline_answer(&body, JSON, &request, NOW, 300),
                Err(OfflineTokenError::OtherRequest),
                "{request:?}"
            );
        }
    }

    #[test]
    fn an_unparsable_cached_answer_is_an_error() {
        let request = key(&json_request(), JSON).unwrap();
        let token = jwt(NOW + YEAR);
        let mut truncated = protobuf_answer(&token, NOW);
        truncated.truncate(truncated.len() - 5);
        for (body, content_type) in [
            (b"not json".to_vec(), JSON),
            (truncated, PROTOBUF),
            (json_answer(&token, NOW), PROTOBUF),
            (json_answer("", NOW), JSON),
        ] {
            let result = offline_answer(&body, content_type, &request, NOW, 300);
            assert!(matches!(result, Err(OfflineTokenError::Unparsable(_))), "{result:?}");
        }
    }

    #[test]
    fn replacing_a_field_keeps_the_others_and_their_order() {
        let mut message = Writer::new();
        message.string(1, "a").bytes(2, b"old").varint(3, 9).bytes(2, b"older");
        let replaced = replace_field(message.as_bytes(), 2, b"new").unwrap();
        let fields: Vec<_> = Reader::new(&replaced).collect::<Result<_, _>>().unwrap();
        use crate::protobuf::Value;
        assert_eq!(
            fields,
            vec![(1, Value::Bytes(b"a")), (2, Value::Bytes(b"new")), (3, Value::Varint(9))]
        );
        let appended = replace_field(b"", 2, b"new").unwrap();
        assert_eq!(appended, b"\x12\x03new");
    }

    #[test]
    fn rfc3339_times_as_kube_writes_them() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339(&format_unix(NOW)), Some(NOW));
        assert_eq!(parse_rfc3339("2023-11-14T22:13:20.123456Z"), Some(NOW));
        assert_eq!(parse_rfc3339("2023-11-15T00:13:20+02:00"), Some(NOW));
        assert_eq!(parse_rfc3339("2023-11-14T21:13:20-01:00"), Some(NOW));
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-11-14T22:13:20+0200",
            "2023-1a-14T22:13:20Z",
            "2023-11-14T22:13:20Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn jwt_expiry_reads_integer_and_fractional_exp() {
        assert_eq!(jwt_expiry(&jwt(NOW)), Ok(NOW));
        let fractional = format!("h.{}.s", base64url(b"{\"exp\":1700000000.9}"));
        assert_eq!(jwt_expiry(&fractional), Ok(NOW));
        assert_eq!(jwt_expiry("h.e30.s.x"), Err(JwtError::NotAJwt));
        assert_eq!(jwt_expiry("h.e30.s"), Err(JwtError::NoExp));
    }
}
