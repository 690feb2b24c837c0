//! TokenRequests answered while the cloud cannot be asked, with the token the cloud issued
//! (issue 13): what a TokenRequest is cached under — the asking identity, what its body asks
//! for (`TokenRequestKey::canonical`) and the representation it accepts — and what a cached
//! `201` becomes offline: the same token, only kubelet's refresh hint moved
//! (`token_request::offline_answer`), or a `503` naming why not. Nothing is invented.
//!
//! Tokens are secrets: nothing here logs, names or describes one; messages say only the
//! namespace and service account.

use crate::cache::{Lookup, ReadKey, Reply};
use crate::http1::RequestHead;
use crate::metrics::Source;
use crate::offline::CACHE_HEADER;
use crate::status::LocalResponse;
use crate::token_request::{self, TokenRequestError, TokenRequestKey};

/// A cached token is handed out only while its JWT stays valid this much longer: one about
/// to expire would only fail the pod's next call to the apiserver.
pub const MIN_REMAINING_SECONDS: i64 = 300;

/// A TokenRequest whose body has been read whole.
pub struct TokenPending {
    key: TokenRequestKey,
    cache_key: ReadKey,
    /// Body bytes at the front of the client's `inbuf` (an exchange forwards them from there).
    pub body_len: usize,
    /// Close after the offline answer: an exchange that failed may have sent part of the body.
    pub close: bool,
}

impl TokenPending {
    /// What `body` (the whole request body) asks for, filed under `cache_identity`. `Ok(None)`
    /// for a body in a representation not read here (YAML, CBOR: passed through uncached);
    /// the `400` for a malformed one.
    pub fn read(
        head: &RequestHead,
        cache_identity: &str,
        body: &[u8],
    ) -> Result<Option<TokenPending>, LocalResponse> {
        let Some((namespace, service_account)) = token_request::path_target(head.path()) else {
            return Ok(None);
        };
        let content_type = head.header_str("content-type");
        let key =
            match TokenRequestKey::from_request(namespace, service_account, body, content_type) {
                Ok(key) => key,
                Err(TokenRequestError::UnsupportedMediaType(_)) => return Ok(None),
                Err(e) => return Err(LocalResponse::status(400, "BadRequest", &e.to_string())),
            };
        let accept = head.header_str("accept");
        let cache_key = ReadKey::token_request(cache_identity, &key.canonical(), accept);
        Ok(Some(TokenPending { key, cache_key, body_len: body.len(), close: false }))
    }

    /// Where the cloud's `201` answer is stored.
    pub fn cache_key(&self) -> &ReadKey {
        &self.cache_key
    }

    pub fn lookup(&self) -> Lookup {
        Lookup::Read(self.cache_key.clone())
    }

    /// `namespace/serviceaccount`, for logs.
    pub fn account(&self) -> String {
        format!("{}/{}", self.key.namespace, self.key.service_account)
    }

    /// The client's answer to this TokenRequest from the cache's `reply`, at `now_unix`.
    pub fn offline_response(&self, reply: Reply, now_unix: i64) -> (Source, LocalResponse) {
        let why = "the cloud apiserver is unreachable";
        let account = self.account();
        let (source, mut response) = match reply {
            Reply::Hit(cached) => match token_request::offline_answer(
                &cached.body,
                Some(&cached.content_type),
                &self.key,
                now_unix,
                MIN_REMAINING_SECONDS,
            ) {
                Ok(body) => {
                    let response = LocalResponse {
                        status: 201,
                        content_type: cached.content_type,
                        extra_headers: vec![(CACHE_HEADER.to_string(), "hit".to_string())],
                        body,
                        close: false,
                    };
                    (Source::Cache, response)
                }
                Err(e) => {
                    let message = format!("{why} and for the TokenRequest of {account}, {e}");
                    (Source::Local, LocalResponse::cloud_unavailable(&message))
                }
            },
            Reply::Failed(reason) => {
                let message = format!("{why} and the cache failed: {reason}");
                (Source::Local, LocalResponse::cloud_unavailable(&message))
            }
            Reply::Miss | Reply::WatchReplay { .. } | Reply::WatchExpired { .. } => {
                let message =
                    format!("{why} and no token for this TokenRequest of {account} is cached");
                (Source::Local, LocalResponse::cloud_unavailable(&message))
            }
        };
        response.close = self.close;
        (source, response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedResponse;
    use crate::http1;

    const NOW: i64 = 1_700_000_000;
    /// A JWT-shaped token whose `exp` is 2100-01-01 (signatures are not checked here).
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln";
    const PATH: &str = "/api/v1/namespaces/default/serviceaccounts/default/token";

    fn head(accept: &str, content_type: &str) -> RequestHead {
        let text = format!(
            "POST {PATH} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\nContent-Type: {content_type}\
             \r\nContent-Length: 1\r\n\r\n"
        );
        match http1::parse_request(text.as_bytes()) {
            Ok(Some((head, _))) => head,
            _ => panic!("test head does not parse"),
        }
    }

    fn json_head() -> RequestHead {
        head("application/json", "application/json")
    }

    fn request(uid: &str) -> Vec<u8> {
        serde_json::json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "spec": {"expirationSeconds": 3607,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1",
                                        "uid": uid}}
        })
        .to_string()
        .into_bytes()
    }

    fn answer(uid: &str) -> Vec<u8> {
        serde_json::json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3607,
                     "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web-1",
                                        "uid": uid}},
            "status": {"token": TOKEN, "expirationTimestamp": "2023-11-14T23:33:20Z"}
        })
        .to_string()
        .into_bytes()
    }

    fn pending(identity: &str, uid: &str) -> TokenPending {
        match TokenPending::read(&json_head(), identity, &request(uid)) {
            Ok(Some(pending)) => pending,
            _ => panic!("the request is a readable TokenRequest"),
        }
    }

    fn hit(body: Vec<u8>) -> Reply {
        let content_type = "application/json".to_string();
        Reply::Hit(CachedResponse { status: 200, content_type, body, stored_at: 0 })
    }

    fn text(response: &LocalResponse) -> String {
        String::from_utf8_lossy(&response.body).into_owned()
    }

    #[test]
    fn keys_differ_by_identity_representation_and_request_but_not_by_body_form() {
        let kubelet = pending("cn:kubelet", "u1");
        assert_eq!(kubelet.cache_key(), pending("cn:kubelet", "u1").cache_key());
        assert_ne!(kubelet.cache_key(), pending("cn:other", "u1").cache_key());
        assert_ne!(kubelet.cache_key(), pending("cn:kubelet", "u2").cache_key());
        let protobuf = head("application/vnd.kubernetes.protobuf", "application/json");
        let Ok(Some(protobuf)) = TokenPending::read(&protobuf, "cn:kubelet", &request("u1")) else {
            panic!("readable");
        };
        assert_ne!(kubelet.cache_key(), protobuf.cache_key(), "answers are kept per Accept");
        assert_eq!(kubelet.account(), "default/default");
    }

    #[test]
    fn a_malformed_body_is_a_400_and_an_unread_media_type_passes_through() {
        let Err(bad) = TokenPending::read(&json_head(), "cn:kubelet", b"{not json") else {
            panic!("a malformed body is refused");
        };
        assert_eq!(bad.status, 400);
        assert!(text(&bad).contains("not valid JSON"), "{}", text(&bad));
        let yaml = head("application/json", "application/yaml");
        assert!(matches!(TokenPending::read(&yaml, "cn:kubelet", b"spec: {}"), Ok(None)));
    }

    #[test]
    fn a_cached_answer_for_the_same_request_is_a_201_with_the_same_token() {
        let (source, response) =
            pending("cn:kubelet", "u1").offline_response(hit(answer("u1")), NOW);
        assert!(matches!(source, Source::Cache));
        assert_eq!((response.status, response.close), (201, false));
        assert_eq!(response.content_type, "application/json");
        assert!(text(&response).contains(TOKEN));
        assert!(response.extra_headers.iter().any(|(name, _)| name == CACHE_HEADER));
    }

    #[test]
    fn a_miss_another_request_or_an_expired_token_is_a_503_that_names_no_token() {
        let asking = pending("cn:kubelet", "u2");
        let answers = [
            (Reply::Miss, "no token"),
            (hit(answer("u1")), "another request"),
            (hit(b"garbage".to_vec()), "not valid JSON"),
            (Reply::Failed("disk".into()), "cache failed"),
        ];
        for (reply, why) in answers {
            let (source, response) = asking.offline_response(reply, NOW);
            assert!(matches!(source, Source::Local));
            assert_eq!(response.status, 503);
            assert!(text(&response).contains(why), "{why}: {}", text(&response));
            assert!(!text(&response).contains(TOKEN));
        }
        let (_, expired) =
            pending("cn:kubelet", "u1").offline_response(hit(answer("u1")), 5e9 as i64);
        assert_eq!(expired.status, 503);
        assert!(text(&expired).contains("expired"), "{}", text(&expired));
    }

    #[test]
    fn an_answer_after_a_failed_exchange_closes_the_connection() {
        let mut asking = pending("cn:kubelet", "u1");
        asking.close = true;
        assert!(asking.offline_response(Reply::Miss, NOW).1.close);
        assert!(asking.offline_response(hit(answer("u1")), NOW).1.close);
    }
}
