//! Service-account tokens as kube-apiserver issues and checks them: TokenRequest
//! (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`) in JSON and in real protobuf
//! (the generated `k8s-pb` types, in the envelope of `protobuf.rs`), bound to a
//! pod or secret that must exist with the given uid; the issuer discovery document and JWKS;
//! `POST /debug/rotate-signing-key[?alg=RS256|ES256]`; bearer-token authentication of the
//! JWTs it signed; and the `kube-root-ca.crt` ConfigMap of every namespace.

use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use ring::digest::{SHA256, digest};
use serde_json::{Value, json};

use crate::clock;
use crate::http::{Request, Response};
use crate::protobuf::{envelope, open_envelope};
use crate::repr::{PROTOBUF, protobuf_first};
use crate::resources;
use crate::server::Server;
use crate::signing::Alg;
use crate::status::ApiError;
use crate::store::{Key, Shared, random_uid};

/// The issuer, and the one audience the apiserver accepts by default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const API_VERSION: &str = "authentication.k8s.io/v1";
const KIND: &str = "TokenRequest";
/// kube's default when `spec.expirationSeconds` is absent.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// kube-apiserver's validation bounds on `spec.expirationSeconds`.
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The `kube-api-access` request that `--service-account-extend-token-expiration` extends...
const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// ...to a year of JWT validity.
const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
/// go-jose's default leeway, which kube-apiserver uses on `exp` and `nbf`.
const LEEWAY_SECONDS: i64 = 60;
const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// Serves the token endpoints; `None` for other paths.
pub fn handle(request: &Request, server: &Server) -> Option<Response> {
    let path = request.path.as_str();
    let result = match (request.method.as_str(), path) {
        ("GET", "/.well-known/openid-configuration") => Ok(discovery(server)),
        ("GET", "/openid/v1/jwks") => {
            let body = crate::http::json_bytes(&server.signer.jwks());
            Ok(Response::new(200, "application/jwk-set+json", body))
        }
        ("POST", "/debug/rotate-signing-key") => rotate(request, server),
        (method, _) => {
            let (namespace, service_account) = token_path(path)?;
            match method {
                "POST" => token_request(request, server, namespace, service_account),
                _ => Err(ApiError::method_not_allowed(method)),
            }
        }
    };
    Some(result.unwrap_or_else(|e| e.to_response()))
}

fn token_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [ns, "serviceaccounts", sa, "token"] if !ns.is_empty() && !sa.is_empty() => Some((ns, sa)),
        _ => None,
    }
}

fn discovery(server: &Server) -> Response {
    Response::json(
        200,
        &json!({
            "issuer": ISSUER,
            "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": server.signer.algorithms(),
        }),
    )
}

fn rotate(request: &Request, server: &Server) -> Result<Response, ApiError> {
    let alg = match request.query_param("alg") {
        None | Some("") => Alg::Rs256,
        Some(text) => Alg::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!("alg must be RS256 or ES256: {text:?}"))
        })?,
    };
    let kid = server.signer.rotate(alg).map_err(|e| ApiError::new(409, "Conflict", e))?;
    Ok(Response::json(200, &json!({ "kid": kid, "alg": alg.name() })))
}

/// What a TokenRequest asks for, from either representation.
struct Asked {
    audiences: Vec<String>,
    expiration_seconds: i64,
    bound: Option<authn::BoundObjectReference>,
}

fn token_request(
    request: &Request,
    server: &Server,
    namespace: &str,
    service_account: &str,
) -> Result<Response, ApiError> {
    let protobuf_out = answer_in_protobuf(request.header("Accept"))?;
    let asked = decode_request(request)?;
    validate_expiration(asked.expiration_seconds)?;
    if !server.shared.read().contains_namespace(namespace) {
        return Err(ApiError::not_found("namespaces", namespace));
    }
    let bound = bound_object(&server.shared, namespace, service_account, asked.bound.as_ref())?;
    // As kube-apiserver: no audience asked means the apiserver's own.
    let audiences = if asked.audiences.is_empty() {
        server.api_audiences.clone()
    } else {
        asked.audiences.clone()
    };
    let now = clock::unix_now();
    let default_audiences = audiences == server.api_audiences;
    let claims = claims(
        namespace,
        service_account,
        &audiences,
        default_audiences,
        bound.as_ref(),
        &asked,
        now,
    );
    let token = server.signer.sign(&claims).map_err(|e| ApiError::new(500, "InternalError", e))?;
    let answer = Asked { audiences, ..asked };
    let expiration_timestamp = now + answer.expiration_seconds;
    Ok(if protobuf_out {
        Response::new(201, PROTOBUF, encode_protobuf(&answer, token, expiration_timestamp))
    } else {
        Response::json(201, &encode_json(&answer, &token, expiration_timestamp))
    })
}

/// The claims kube-apiserver puts into a service-account token. The `kube-api-access`
/// request (3607 s, the apiserver's audiences, bound to a pod) gets a JWT valid for a year
/// with `warnafter` at the requested lifetime (`--service-account-extend-token-expiration`).
fn claims(
    namespace: &str,
    service_account: &str,
    audiences: &[String],
    default_audiences: bool,
    bound: Option<&Bound>,
    asked: &Asked,
    now: i64,
) -> Value {
    let extended = asked.expiration_seconds == WARN_ONLY_EXPIRATION_SECONDS
        && default_audiences
        && matches!(bound, Some(Bound::Pod { .. }));
    let lifetime = if extended { EXTENDED_EXPIRATION_SECONDS } else { asked.expiration_seconds };
    let account_uid = account_uid(namespace, service_account);
    let mut private = json!({
        "namespace": namespace,
        "serviceaccount": { "name": service_account, "uid": account_uid },
    });
    match bound {
        Some(Bound::Pod { name, uid, node }) => {
            private["pod"] = json!({ "name": name, "uid": uid });
            if let Some((node_name, node_uid)) = node {
                private["node"] = json!({ "name": node_name, "uid": node_uid });
            }
        }
        Some(Bound::Secret { name, uid }) => {
            private["secret"] = json!({ "name": name, "uid": uid })
        }
        None => {}
    }
    if extended {
        private["warnafter"] = json!(now + asked.expiration_seconds);
    }
    json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{namespace}:{service_account}"),
        "aud": audiences,
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "jti": random_uid(),
        "kubernetes.io": private,
    })
}

/// Protobuf if the first acceptable media type is, JSON for JSON or no `Accept`.
fn answer_in_protobuf(accept: Option<&str>) -> Result<bool, ApiError> {
    protobuf_first(accept).ok_or_else(|| {
        ApiError::new(406, "NotAcceptable", "only application/json and protobuf are accepted")
    })
}

fn decode_request(request: &Request) -> Result<Asked, ApiError> {
    let content_type = request.header("Content-Type").unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        "" | "application/json" => decode_json(&request.body),
        PROTOBUF => decode_protobuf(&request.body),
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type:?}"),
        )),
    }
}

fn decode_json(body: &[u8]) -> Result<Asked, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("unable to decode the TokenRequest: {e}")))?;
    let spec = &value["spec"];
    let invalid = |field: &str| ApiError::bad_request(format!("spec.{field}: wrong type"));
    let audiences = match &spec["audiences"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|a| a.as_str().map(str::to_string).ok_or_else(|| invalid("audiences")))
            .collect::<Result<_, _>>()?,
        _ => return Err(invalid("audiences")),
    };
    let expiration_seconds = match &spec["expirationSeconds"] {
        Value::Null => DEFAULT_EXPIRATION_SECONDS,
        number => number.as_i64().ok_or_else(|| invalid("expirationSeconds"))?,
    };
    let bound = match &spec["boundObjectRef"] {
        Value::Null => None,
        Value::Object(_) => {
            let text = |field: &str| spec["boundObjectRef"][field].as_str().map(str::to_string);
            Some(authn::BoundObjectReference {
                kind: text("kind"),
                api_version: text("apiVersion"),
                name: text("name"),
                u_id: text("uid"),
            })
        }
        _ => return Err(invalid("boundObjectRef")),
    };
    Ok(Asked { audiences, expiration_seconds, bound })
}

fn decode_protobuf(body: &[u8]) -> Result<Asked, ApiError> {
    let bad =
        |what: &str| ApiError::bad_request(format!("unable to decode the TokenRequest: {what}"));
    let unknown = open_envelope(body).map_err(|e| bad(&e.to_string()))?;
    let raw = unknown.raw.unwrap_or_default();
    let request = authn::TokenRequest::decode(raw.as_slice()).map_err(|e| bad(&e.to_string()))?;
    let spec = request.spec.unwrap_or_default();
    Ok(Asked {
        audiences: spec.audiences,
        expiration_seconds: spec.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        bound: spec.bound_object_ref,
    })
}

fn validate_expiration(seconds: i64) -> Result<(), ApiError> {
    let problem = if seconds < MIN_EXPIRATION_SECONDS {
        "may not specify a duration less than 10 minutes"
    } else if seconds > MAX_EXPIRATION_SECONDS {
        "may not specify a duration larger than 2^32 seconds"
    } else {
        return Ok(());
    };
    Err(ApiError::new(
        422,
        "Invalid",
        format!(
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: \
             Invalid value: {seconds}: {problem}"
        ),
    ))
}

/// The object a token is bound to, as found in the store.
enum Bound {
    Pod { name: String, uid: String, node: Option<(String, String)> },
    Secret { name: String, uid: String },
}

/// Looks the bound object up as kube-apiserver does: it must exist (404), run as this
/// service account (400, pods) and have the uid given, if one is (409).
fn bound_object(
    shared: &Shared,
    namespace: &str,
    service_account: &str,
    reference: Option<&authn::BoundObjectReference>,
) -> Result<Option<Bound>, ApiError> {
    let Some(reference) = reference else {
        return Ok(None);
    };
    let kind = reference.kind.as_deref().unwrap_or_default();
    let group = reference.api_version.as_deref().unwrap_or_default().rsplit_once('/');
    let plural = match (group, kind) {
        (None, "Pod") => "pods",
        (None, "Secret") => "secrets",
        _ => {
            let api_version = reference.api_version.as_deref().unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {api_version}, Kind={kind}"
            )));
        }
    };
    let name = reference.name.clone().unwrap_or_default();
    let store = shared.read();
    let object = resources::find_by_plural(plural)
        .and_then(|resource| {
            let key = Key { resource, namespace: namespace.to_string(), name: name.clone() };
            store.get(&key).cloned()
        })
        .ok_or_else(|| ApiError::not_found(plural, &name))?;
    let uid = object["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    if kind == "Pod" {
        let runs_as = object["spec"]["serviceAccountName"].as_str().unwrap_or("default");
        if runs_as != service_account {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount {service_account:?} to pod running with \
                 different serviceaccount name."
            )));
        }
    }
    let asked_uid = reference.u_id.as_deref().unwrap_or_default();
    if !asked_uid.is_empty() && asked_uid != uid {
        let message = format!(
            "Operation cannot be fulfilled on {kind} {name:?}: the UID in the bound object \
             reference ({asked_uid}) does not match the UID in record. The object might have \
             been deleted and then recreated"
        );
        return Err(ApiError::new(409, "Conflict", message));
    }
    if kind == "Secret" {
        return Ok(Some(Bound::Secret { name, uid }));
    }
    let node = object["spec"]["nodeName"].as_str().and_then(|node| {
        let resource = resources::find_by_plural("nodes")?;
        let key = Key { resource, namespace: String::new(), name: node.to_string() };
        let uid = store.get(&key)?["metadata"]["uid"].as_str()?.to_string();
        Some((node.to_string(), uid))
    });
    Ok(Some(Bound::Pod { name, uid, node }))
}

/// The fake keeps no ServiceAccount objects; their uid is derived so that it is stable.
fn account_uid(namespace: &str, service_account: &str) -> String {
    let hash = digest(&SHA256, format!("{namespace}/{service_account}").as_bytes());
    let hex: String = hash.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

fn encode_json(answer: &Asked, token: &str, expiration_timestamp: i64) -> Value {
    let mut spec = json!({
        "audiences": answer.audiences,
        "expirationSeconds": answer.expiration_seconds,
    });
    if let Some(bound) = &answer.bound {
        spec["boundObjectRef"] = json!({
            "kind": bound.kind, "apiVersion": bound.api_version,
            "name": bound.name, "uid": bound.u_id,
        });
    }
    json!({
        "kind": KIND,
        "apiVersion": API_VERSION,
        "metadata": { "creationTimestamp": null },
        "spec": spec,
        "status": { "token": token, "expirationTimestamp": clock::rfc3339(expiration_timestamp) },
    })
}

fn encode_protobuf(answer: &Asked, token: String, expiration_timestamp: i64) -> Vec<u8> {
    let object = authn::TokenRequest {
        metadata: Some(meta::ObjectMeta::default()),
        spec: Some(authn::TokenRequestSpec {
            audiences: answer.audiences.clone(),
            expiration_seconds: Some(answer.expiration_seconds),
            bound_object_ref: answer.bound.clone(),
        }),
        status: Some(authn::TokenRequestStatus {
            token: Some(token),
            expiration_timestamp: Some(meta::Time {
                seconds: Some(expiration_timestamp),
                nanos: Some(0),
            }),
        }),
    };
    envelope(API_VERSION, KIND, object.encode_to_vec())
}

/// The user a bearer JWT signed here proves, or `None` for a token that is not one, is
/// expired (beyond the leeway), not yet valid, or bound to an object that is gone.
pub fn authenticate(token: &str, server: &Server) -> Option<String> {
    let claims = server.signer.verify(token).ok()?;
    let now = clock::unix_now();
    let (exp, nbf) = (claims["exp"].as_i64()?, claims["nbf"].as_i64().unwrap_or(i64::MIN));
    if claims["iss"] != ISSUER || now > exp + LEEWAY_SECONDS || now + LEEWAY_SECONDS < nbf {
        return None;
    }
    // As kube-apiserver: a token minted for another audience (Vault, a mesh) is refused.
    let audiences = match &claims["aud"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.iter().any(|aud| server.api_audiences.iter().any(|api| api == aud)) {
        return None;
    }
    let private = &claims["kubernetes.io"];
    let namespace = private["namespace"].as_str()?;
    for (field, plural) in [("pod", "pods"), ("secret", "secrets")] {
        if private[field].is_object()
            && !bound_still_exists(&server.shared, namespace, plural, &private[field])
        {
            return None;
        }
    }
    claims["sub"].as_str().filter(|s| s.starts_with("system:serviceaccount:")).map(str::to_string)
}

fn bound_still_exists(shared: &Shared, namespace: &str, plural: &str, reference: &Value) -> bool {
    let (Some(resource), Some(name)) =
        (resources::find_by_plural(plural), reference["name"].as_str())
    else {
        return false;
    };
    let key = Key { resource, namespace: namespace.to_string(), name: name.to_string() };
    shared.read().get(&key).is_some_and(|o| o["metadata"]["uid"] == reference["uid"])
}

/// Creates `kube-root-ca.crt` (data `ca.crt` = `ca_pem`) in every namespace of the store, as
/// kube-controller-manager's root-CA publisher does.
pub fn publish_root_ca(shared: &Shared, ca_pem: &str) -> Result<(), ApiError> {
    let (Some(namespaces), Some(config_maps)) =
        (resources::find_by_plural("namespaces"), resources::find_by_plural("configmaps"))
    else {
        return Err(ApiError::not_found_path());
    };
    let names: Vec<String> = shared
        .read()
        .list(namespaces, None)
        .filter_map(|ns| ns["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for namespace in names {
        let object = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": ROOT_CA_CONFIG_MAP,
                "namespace": namespace,
                "annotations": {
                    "kubernetes.io/description": "Contains a CA bundle that can be used to verify \
                        the kube-apiserver when using internal endpoints such as the internal \
                        service IP or kubernetes.default.svc. No other usage is guaranteed \
                        across distributions of Kubernetes clusters.",
                },
            },
            "data": { "ca.crt": ca_pem },
        });
        let key = Key { resource: config_maps, namespace, name: ROOT_CA_CONFIG_MAP.to_string() };
        shared.write(|store| store.create(key, object, clock::unix_now()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_the_token_subresource_path() {
        assert_eq!(
            token_path("/api/v1/namespaces/default/serviceaccounts/web/token"),
            Some(("default", "web"))
        );
        assert_eq!(token_path("/api/v1/namespaces/default/serviceaccounts/web"), None);
        assert_eq!(token_path("/api/v1/namespaces/default/serviceaccounts//token"), None);
    }

    #[test]
    fn accept_picks_the_first_acceptable_representation() {
        let kubelet = "application/vnd.kubernetes.protobuf, application/json";
        assert_eq!(answer_in_protobuf(Some(kubelet)).ok(), Some(true));
        assert_eq!(answer_in_protobuf(Some("application/json, */*")).ok(), Some(false));
        assert_eq!(answer_in_protobuf(None).ok(), Some(false));
        assert!(answer_in_protobuf(Some("application/yaml")).is_err());
    }

    #[test]
    fn json_and_protobuf_requests_decode_alike() {
        let json = br#"{"spec":{"audiences":["vault"],"expirationSeconds":3607,
            "boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":"web-1","uid":"u1"}}}"#;
        let from_json = decode_json(json).unwrap();
        let spec = authn::TokenRequestSpec {
            audiences: vec!["vault".into()],
            expiration_seconds: Some(3607),
            bound_object_ref: from_json.bound.clone(),
        };
        let request = authn::TokenRequest { spec: Some(spec), ..Default::default() };
        let body = envelope(API_VERSION, KIND, request.encode_to_vec());
        let from_protobuf = decode_protobuf(&body).unwrap();
        assert_eq!(from_protobuf.audiences, from_json.audiences);
        assert_eq!(from_protobuf.expiration_seconds, 3607);
        assert_eq!(from_protobuf.bound, from_json.bound);
        assert_eq!(from_json.bound.and_then(|b| b.u_id).as_deref(), Some("u1"));
        assert!(decode_protobuf(b"k8s\0\x12\x05ab").is_err());
        assert!(decode_json(br#"{"spec":{"expirationSeconds":"1h"}}"#).is_err());
    }

    fn server() -> Server {
        let shared = Shared::new(100);
        crate::writes::load_seed(&shared).unwrap();
        Server {
            shared,
            tokens: Default::default(),
            bookmark_interval: std::time::Duration::from_secs(1),
            signer: crate::signing::Signer::new(Alg::Rs256).unwrap(),
            api_audiences: vec![ISSUER.to_string()],
        }
    }

    fn pod_uid(server: &Server, name: &str) -> String {
        let key = Key {
            resource: resources::find_by_plural("pods").unwrap(),
            namespace: "default".into(),
            name: name.into(),
        };
        server.shared.read().get(&key).unwrap()["metadata"]["uid"].as_str().unwrap().into()
    }

    #[test]
    fn authenticates_its_own_tokens_until_they_expire_or_lose_their_pod() {
        let server = server();
        let now = clock::unix_now();
        let uid = pod_uid(&server, "web-1");
        let token = |change: &dyn Fn(&mut Value)| {
            let mut claims = json!({
                "iss": ISSUER, "aud": [ISSUER], "sub": "system:serviceaccount:default:default",
                "exp": now + 600, "nbf": now,
                "kubernetes.io": { "namespace": "default", "pod": { "name": "web-1", "uid": uid } },
            });
            change(&mut claims);
            server.signer.sign(&claims).unwrap()
        };
        let user = Some("system:serviceaccount:default:default".to_string());
        assert_eq!(authenticate(&token(&|_| {}), &server), user);
        assert_eq!(authenticate(&token(&|c| c["exp"] = json!(now - 30)), &server), user);
        assert_eq!(authenticate(&token(&|c| c["exp"] = json!(now - 120)), &server), None);
        assert_eq!(authenticate(&token(&|c| c["nbf"] = json!(now + 120)), &server), None);
        assert_eq!(authenticate(&token(&|c| c["iss"] = json!("https://other")), &server), None);
        let other_pod = |c: &mut Value| c["kubernetes.io"]["pod"]["uid"] = json!("recreated");
        assert_eq!(authenticate(&token(&other_pod), &server), None);
        let not_an_account = |c: &mut Value| c["sub"] = json!("admin");
        assert_eq!(authenticate(&token(&not_an_account), &server), None);
    }

    #[test]
    fn the_kube_api_access_request_gets_a_year_and_others_their_lifetime() {
        let bound = Bound::Pod { name: "web-1".into(), uid: "u".into(), node: None };
        let asked = |seconds| Asked { audiences: vec![], expiration_seconds: seconds, bound: None };
        let issuer = [ISSUER.to_string()];
        let claims = claims_of(&issuer, Some(&bound), &asked(3607));
        assert_eq!(claims["exp"], 1000 + EXTENDED_EXPIRATION_SECONDS);
        assert_eq!(claims["kubernetes.io"]["warnafter"], 1000 + 3607);
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "web-1");
        let vault = ["vault".to_string()];
        let claims = claims_of(&vault, Some(&bound), &asked(3607));
        assert_eq!(claims["exp"], 1000 + 3607);
        assert_eq!(claims_of(&issuer, None, &asked(3607))["exp"], 1000 + 3607);
        assert_eq!(claims_of(&issuer, Some(&bound), &asked(3600))["exp"], 1000 + 3600);
    }

    fn claims_of(audiences: &[String], bound: Option<&Bound>, asked: &Asked) -> Value {
        let default_audiences = audiences == [ISSUER];
        claims("default", "default", audiences, default_audiences, bound, asked, 1000)
    }

    #[test]
    fn publishes_the_root_ca_in_every_namespace() {
        let server = server();
        publish_root_ca(&server.shared, "PEM").unwrap();
        let config_maps = resources::find_by_plural("configmaps").unwrap();
        for namespace in ["default", "kube-system", "edge"] {
            let key = Key {
                resource: config_maps,
                namespace: namespace.into(),
                name: ROOT_CA_CONFIG_MAP.into(),
            };
            assert_eq!(server.shared.read().get(&key).unwrap()["data"]["ca.crt"], "PEM");
        }
    }

    #[test]
    fn expiration_bounds_are_kubes() {
        assert!(validate_expiration(599).is_err());
        assert!(validate_expiration(600).is_ok());
        assert!(validate_expiration(1 << 32).is_ok());
        assert!(validate_expiration((1 << 32) + 1).is_err());
    }
}
