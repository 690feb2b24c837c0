//! Request planning: what one request becomes — a local answer, an answer from the
//! cache, or an exchange with the cloud — decided from its head, who is asking and what
//! the reactor knows of the cloud. A pure function: no sockets, no clock, unit-tested.

use std::fmt::Write;

use crate::cache::{self, Classified, STREAMING_SUBRESOURCES};
use crate::content_encoding;
use crate::http1::{self, Framing, RequestHead};
use crate::in_cluster::InClusterAddress;
use crate::status::LocalResponse;
use crate::token_identity::TokenIdentity;

/// What the reactor knows of the cloud when a request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudVerdict {
    /// A fresh process in the first second before the prober's first answer: requests
    /// wait for it (on a good link it comes within milliseconds).
    Pending,
    /// A fresh process before the prober's first answer: reads are answered from the
    /// cache when it holds them (a node rebooted on a cut link must not wait `--timeout`
    /// per read), and asked of the cloud when it does not.
    Unknown,
    Up,
    /// A fresh connection timed out and the prober has not answered yet: reads go to the
    /// cache rather than each waiting `--timeout`; writes still try the cloud.
    Suspect,
    Down,
}

/// Everything besides the head that a plan depends on.
pub struct Context<'a> {
    /// CN of the client's verified certificate.
    pub peer_cn: Option<&'a str>,
    /// The upstream identity chosen for it (empty: the default identity).
    pub identity_name: &'a str,
    pub cloud: CloudVerdict,
    /// `Host` for the cloud apiserver.
    pub host_header: &'a str,
    /// `--modify-request-accept`.
    pub modify_request_accept: bool,
    /// Accepted past `--max-connections` (the limit, for the message).
    pub over_limit: Option<usize>,
    pub shutting_down: bool,
    /// What the request's bearer token proves (token_identity.rs).
    pub token: TokenIdentity,
    /// `--in-cluster-address`.
    pub in_cluster: Option<InClusterAddress>,
}

pub enum Plan {
    /// Answered here, without the cloud or the cache.
    Answer(LocalResponse),
    /// Planned again once the prober's first verdict is in (or its grace is over).
    AwaitVerdict,
    /// Answered from the cache; `ask_cloud` is what to send the cloud on a miss (none:
    /// the cloud cannot be asked, the miss is answered `404`/`503`).
    FromCache { route: Classified, ask_cloud: Option<Box<ProxyPlan>> },
    /// Sent to the cloud.
    Proxy(ProxyPlan),
}

pub struct ProxyPlan {
    pub route: Classified,
    /// The head as it goes to the cloud.
    pub upstream_head: Vec<u8>,
    pub request_framing: Framing,
    /// A long-running request: no stall deadline applies.
    pub long_running: bool,
    /// The answer shows this node as `default/kubernetes` (kubelet, `--in-cluster-address`).
    pub rewrite: Option<InClusterAddress>,
}

pub fn plan(head: &RequestHead, context: &Context) -> Plan {
    let request_framing = match head.validate().and_then(|()| head.framing()) {
        Ok(framing) => framing,
        Err(e) => return Plan::Answer(LocalResponse::bad_request(&e.to_string())),
    };
    if let Some(limit) = context.over_limit {
        let message = format!("too many connections to lite-apiserver (--max-connections={limit})");
        return Plan::Answer(LocalResponse::status(503, "ServiceUnavailable", &message).closing());
    }
    if context.shutting_down {
        let message = "lite-apiserver is shutting down";
        return Plan::Answer(LocalResponse::cloud_unavailable(message).closing());
    }
    if context.cloud == CloudVerdict::Pending {
        return Plan::AwaitVerdict;
    }
    let cache_identity = match &context.token {
        // A configured CN still comes first: it is the stronger proof.
        TokenIdentity::ServiceAccount(account) if context.identity_name.is_empty() => {
            account.clone()
        }
        _ => cache_identity(context.peer_cn, context.identity_name, head),
    };
    let rewrite = context.in_cluster.filter(|local| local.applies(context.peer_cn, head.path()));
    // The in-cluster rewrite reads JSON: kubelet, which accepts JSON too, is asked for it.
    let ask_json = context.modify_request_accept || rewrite.is_some();
    let (route, accept) = route(&cache_identity, head, ask_json);
    let cacheable = !matches!(route, Classified::Uncacheable);
    if context.token == TokenIdentity::Expired && context.cloud != CloudVerdict::Up {
        // The cloud refuses an expired token too; the cache must not answer it.
        let message = "the bearer token has expired";
        return Plan::Answer(LocalResponse::status(401, "Unauthorized", message));
    }
    if context.cloud == CloudVerdict::Down {
        return Plan::FromCache { route, ask_cloud: None };
    }
    let mut replace: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", a.as_str())).collect();
    let accept_encoding = cloud_accept_encoding(head, &route, rewrite.is_some());
    if let Some(value) = &accept_encoding {
        replace.push(("Accept-Encoding", value));
    }
    let upstream_head = head.to_upstream_bytes(context.host_header, &replace);
    let long_running = is_long_running(head, &route);
    let cache_first = cacheable && context.cloud != CloudVerdict::Up;
    let proxy = ProxyPlan { route, upstream_head, request_framing, long_running, rewrite };
    if cache_first {
        return Plan::FromCache { route: proxy.route.clone(), ask_cloud: Some(Box::new(proxy)) };
    }
    Plan::Proxy(proxy)
}

/// The `Accept-Encoding` a cacheable request goes to the cloud with (`None`: the
/// client's, untouched). GETs ask for gzip: the link stays compressed and the cache tee
/// decompresses (content_encoding.rs). Watches ask for none (kube-apiserver does not
/// compress them, and their events are read as they stream), nor do HEADs (no body to
/// decompress) and answers rewritten whole (in_cluster.rs).
fn cloud_accept_encoding(
    head: &RequestHead,
    route: &Classified,
    rewritten: bool,
) -> Option<String> {
    match route {
        Classified::Read(_) if !rewritten && head.method == "GET" => {
            Some(content_encoding::upstream_accept_encoding(head.header_str("accept-encoding")))
        }
        Classified::Uncacheable => None,
        Classified::Read(_) | Classified::Watch(_) => Some(String::new()),
    }
}

/// Largest TokenRequest body read whole before deciding (kubelet's are a few hundred bytes).
pub const MAX_TOKEN_REQUEST_BODY: usize = 64 * 1024;

/// A TokenRequest (`POST .../serviceaccounts/<sa>/token`) is cached under what its body asks
/// for, so its body is read whole before its plan is carried out: `Some(Ok(length))` to
/// read, `Some(Err(413))` when too large. `None`: not a TokenRequest, or a chunked one
/// (passed through uncached: kubelet and client-go send a `Content-Length`).
pub fn token_request_body(head: &RequestHead) -> Option<Result<usize, LocalResponse>> {
    if head.method != "POST" || crate::token_request::path_target(head.path()).is_none() {
        return None;
    }
    let Ok(Framing::Length(length)) = head.framing() else { return None };
    match usize::try_from(length) {
        Ok(length) if length <= MAX_TOKEN_REQUEST_BODY => Some(Ok(length)),
        _ => {
            let message = format!(
                "a TokenRequest body of {length} bytes is larger than the \
                 {MAX_TOKEN_REQUEST_BODY} bytes lite-apiserver reads"
            );
            Some(Err(LocalResponse::status(413, "RequestEntityTooLarge", &message).closing()))
        }
    }
}

/// Classifies a request for the cache, asking the cloud for JSON instead of protobuf on
/// resource reads when `ask_json` (`--modify-request-accept`, for those who want today's
/// JSON-only cache; or an answer the in-cluster rewrite must read). Returns the Accept to
/// send upstream when changed.
fn route(cache_identity: &str, head: &RequestHead, ask_json: bool) -> (Classified, Option<String>) {
    let accept = head.header_str("accept");
    let route = cache::classify(cache_identity, &head.method, &head.target, accept);
    let resource_read = match &route {
        Classified::Read(key) => key.resource() != "discovery",
        Classified::Watch(_) => true,
        Classified::Uncacheable => false,
    };
    let wants_protobuf = accept
        .is_some_and(|a| a.contains("application/vnd.kubernetes.protobuf") && !a.contains("as="));
    if ask_json && resource_read && wants_protobuf {
        let json = "application/json".to_string();
        let route = cache::classify(cache_identity, &head.method, &head.target, Some(&json));
        return (route, Some(json));
    }
    (route, None)
}

/// The identity a client's cache entries are filed under. A configured CN is the
/// strongest proof of who is asking; then a bearer token (hashed, never stored in
/// clear); then any verified CN; else anonymous. Never the User-Agent.
/// The request's bearer token, if it has one.
pub fn bearer_token(head: &RequestHead) -> Option<&str> {
    let token =
        head.header_str("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
    token.filter(|t| !t.is_empty())
}

pub fn cache_identity(peer_cn: Option<&str>, identity_name: &str, head: &RequestHead) -> String {
    // Built per request: one allocation each.
    if !identity_name.is_empty() {
        return ["cn:", identity_name].concat();
    }
    if let Some(token) = bearer_token(head) {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut key = String::with_capacity("token:".len() + 32);
        key.push_str("token:");
        for byte in digest.as_ref().iter().take(16) {
            // Formatting into a String cannot fail.
            let _ = write!(key, "{byte:02x}");
        }
        return key;
    }
    match peer_cn {
        Some(cn) => ["cn:", cn].concat(),
        None => "anonymous".to_string(),
    }
}

/// A long-running request (kube-apiserver's term): a watch, a followed log, an
/// exec/attach/port-forward or proxy stream. These may be silent for long stretches, so
/// no stall deadline applies; their own timeouts end them.
fn is_long_running(head: &RequestHead, route: &Classified) -> bool {
    let query_is_true =
        |name: &str| matches!(http1::query_param(&head.target, name), Some("true" | "1"));
    let path = head.path();
    let last_segment = path.rsplit('/').next().unwrap_or("");
    let streams = STREAMING_SUBRESOURCES.iter().any(|s| *s != "log" && *s == last_segment)
        || path.contains("/proxy/");
    matches!(route, Classified::Watch(_))
        || query_is_true("watch")
        || query_is_true("follow")
        || streams
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> RequestHead {
        let bytes = format!("{text}\r\nHost: 127.0.0.1\r\n\r\n");
        match http1::parse_request(bytes.as_bytes()) {
            Ok(Some((head, _))) => head,
            _ => panic!("test head does not parse: {text}"),
        }
    }

    fn head_with(text: &str, header: &str) -> RequestHead {
        head(&format!("{text}\r\n{header}"))
    }

    fn context(cloud: CloudVerdict) -> Context<'static> {
        Context {
            peer_cn: None,
            identity_name: "",
            cloud,
            host_header: "cloud:6443",
            modify_request_accept: false,
            over_limit: None,
            shutting_down: false,
            token: TokenIdentity::Unverified,
            in_cluster: None,
        }
    }

    fn proxied(plan: Plan) -> ProxyPlan {
        match plan {
            Plan::Proxy(proxy) => proxy,
            _ => panic!("expected the request to be proxied"),
        }
    }

    fn upstream_text(plan: &ProxyPlan) -> String {
        String::from_utf8_lossy(&plan.upstream_head).to_ascii_lowercase()
    }

    #[test]
    fn a_read_goes_to_the_cloud_while_it_is_up_asking_for_gzip() {
        let up = context(CloudVerdict::Up);
        let get = head_with("GET /api/v1/pods HTTP/1.1", "Accept-Encoding: gzip");
        let plan_of = |head: &RequestHead| proxied(plan(head, &up));
        let proxy = plan_of(&get);
        assert!(matches!(proxy.route, Classified::Read(_)));
        assert!(!proxy.long_running);
        let text = upstream_text(&proxy);
        assert!(text.contains("host: cloud:6443"), "{text}");
        assert!(text.contains("accept-encoding: gzip\r\n"), "{text}");
        let plain = upstream_text(&plan_of(&head("GET /api/v1/pods HTTP/1.1")));
        assert!(plain.contains("accept-encoding: gzip\r\n"), "asked for the client: {plain}");
        let watch = head_with("GET /api/v1/pods?watch=true HTTP/1.1", "Accept-Encoding: gzip");
        let text = upstream_text(&plan_of(&watch));
        assert!(!text.contains("accept-encoding"), "watches stay plain: {text}");
    }

    #[test]
    fn an_unknown_or_suspect_cloud_reads_the_cache_first_and_writes_to_the_cloud() {
        for verdict in [CloudVerdict::Unknown, CloudVerdict::Suspect] {
            let context = context(verdict);
            let get = head("GET /api/v1/namespaces/default/pods/web HTTP/1.1");
            let Plan::FromCache { route: Classified::Read(_), ask_cloud: Some(miss) } =
                plan(&get, &context)
            else {
                panic!("{verdict:?}: a read goes to the cache first, then the cloud");
            };
            assert!(upstream_text(&miss).starts_with("get /api/v1/namespaces/default/pods/web"));
            let post = head("POST /api/v1/namespaces/default/pods HTTP/1.1\r\nContent-Length: 0");
            assert!(matches!(plan(&post, &context), Plan::Proxy(_)), "{verdict:?}");
        }
    }

    #[test]
    fn before_the_first_verdict_requests_wait_for_it_but_bad_ones_are_answered() {
        let get = head("GET /api/v1/pods HTTP/1.1");
        assert!(matches!(plan(&get, &context(CloudVerdict::Pending)), Plan::AwaitVerdict));
        let bad = head("GET /api/v1/pods HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2");
        assert!(matches!(plan(&bad, &context(CloudVerdict::Pending)), Plan::Answer(_)));
    }

    #[test]
    fn a_down_cloud_sends_everything_to_the_cache_side() {
        let post = head("POST /api/v1/namespaces/default/pods HTTP/1.1\r\nContent-Length: 0");
        let plan = plan(&post, &context(CloudVerdict::Down));
        assert!(matches!(
            plan,
            Plan::FromCache { route: Classified::Uncacheable, ask_cloud: None }
        ));
    }

    #[test]
    fn protobuf_reads_stay_protobuf_unless_modify_request_accept_is_on() {
        let accept = "Accept: application/vnd.kubernetes.protobuf,application/json";
        let get = head_with("GET /api/v1/pods HTTP/1.1", accept);
        let text = upstream_text(&proxied(plan(&get, &context(CloudVerdict::Up))));
        assert!(text.contains("protobuf"), "{text}");
        let mut modify = context(CloudVerdict::Up);
        modify.modify_request_accept = true;
        let text = upstream_text(&proxied(plan(&get, &modify)));
        assert!(text.contains("accept: application/json\r\n"), "{text}");
    }

    #[test]
    fn kubelets_service_reads_are_asked_as_json_for_the_in_cluster_rewrite() {
        let accept = "Accept: application/vnd.kubernetes.protobuf,application/json";
        let get = head_with("GET /api/v1/namespaces/default/services/kubernetes HTTP/1.1", accept);
        let mut kubelet = context(CloudVerdict::Up);
        kubelet.peer_cn = Some("system:node:edge-1");
        kubelet.in_cluster = Some(InClusterAddress { addr: ([169, 254, 0, 10], 51003).into() });
        let text = upstream_text(&proxied(plan(&get, &kubelet)));
        assert!(text.contains("accept: application/json\r\n"), "{text}");
        kubelet.peer_cn = Some("system:kube-proxy");
        let text = upstream_text(&proxied(plan(&get, &kubelet)));
        assert!(text.contains("protobuf"), "kube-proxy sees the cloud's Service: {text}");
    }

    #[test]
    fn watches_follows_and_tunnels_are_long_running_and_logs_are_not() {
        let up = context(CloudVerdict::Up);
        let long = |target: &str| {
            proxied(plan(&head(&format!("GET {target} HTTP/1.1")), &up)).long_running
        };
        assert!(long("/api/v1/pods?watch=true"));
        assert!(long("/api/v1/namespaces/a/pods/p/log?follow=true"));
        assert!(long("/api/v1/namespaces/a/pods/p/exec?command=sh"));
        assert!(long("/api/v1/namespaces/a/pods/p/proxy/metrics"));
        assert!(!long("/api/v1/namespaces/a/pods/p/log"));
        assert!(!long("/api/v1/namespaces/a/pods/p"));
    }

    #[test]
    fn over_the_limit_and_shutting_down_are_answered_locally_and_close() {
        let get = head("GET /api/v1/pods HTTP/1.1");
        let mut over = context(CloudVerdict::Up);
        over.over_limit = Some(10);
        let Plan::Answer(answer) = plan(&get, &over) else { panic!("expected a local answer") };
        assert_eq!((answer.status, answer.close), (503, true));
        assert!(String::from_utf8_lossy(&answer.body).contains("--max-connections=10"));
        let mut stopping = context(CloudVerdict::Up);
        stopping.shutting_down = true;
        let Plan::Answer(answer) = plan(&get, &stopping) else { panic!("expected an answer") };
        assert_eq!((answer.status, answer.close), (503, true));
    }

    #[test]
    fn token_request_bodies_are_read_first_up_to_64_kib() {
        let token = "POST /api/v1/namespaces/default/serviceaccounts/default/token HTTP/1.1";
        let with_length = |n: usize| head(&format!("{token}\r\nContent-Length: {n}"));
        assert!(matches!(token_request_body(&with_length(180)), Some(Ok(180))));
        let too_large = token_request_body(&with_length(MAX_TOKEN_REQUEST_BODY + 1));
        assert!(matches!(too_large, Some(Err(ref r)) if r.status == 413 && r.close));
        let chunked = head(&format!("{token}\r\nTransfer-Encoding: chunked"));
        assert!(token_request_body(&chunked).is_none(), "chunked: passed through");
        let pods = head("POST /api/v1/namespaces/default/pods HTTP/1.1\r\nContent-Length: 2");
        assert!(token_request_body(&pods).is_none());
        let get = head("GET /api/v1/namespaces/default/serviceaccounts/default/token HTTP/1.1");
        assert!(token_request_body(&get).is_none());
    }

    #[test]
    fn a_verified_token_files_entries_under_its_service_account_unless_a_cn_is_configured() {
        let get = head_with("GET /api/v1/pods HTTP/1.1", "Authorization: Bearer a.b.c");
        let mut context = context(CloudVerdict::Up);
        context.token = TokenIdentity::ServiceAccount("sa:default/web".into());
        let key = |plan: Plan| match proxied(plan).route {
            Classified::Read(key) => format!("{key:?}"),
            _ => panic!("expected a read"),
        };
        assert!(key(plan(&get, &context)).contains("sa:default/web"));
        context.identity_name = "system:node:edge-1";
        assert!(key(plan(&get, &context)).contains("cn:system:node:edge-1"));
    }

    #[test]
    fn an_expired_token_gets_401_unless_the_cloud_can_say_so_itself() {
        let get = head_with("GET /api/v1/pods HTTP/1.1", "Authorization: Bearer a.b.c");
        for verdict in [CloudVerdict::Down, CloudVerdict::Unknown, CloudVerdict::Suspect] {
            let mut context = context(verdict);
            context.token = TokenIdentity::Expired;
            let Plan::Answer(answer) = plan(&get, &context) else { panic!("{verdict:?}") };
            assert_eq!(answer.status, 401, "{verdict:?}");
        }
        let mut up = context(CloudVerdict::Up);
        up.token = TokenIdentity::Expired;
        assert!(matches!(plan(&get, &up), Plan::Proxy(_)));
    }

    #[test]
    fn cache_identity_prefers_a_configured_cn_then_a_token_hash_then_the_cn() {
        let bearer = head_with("GET /api HTTP/1.1", "Authorization: Bearer secret-token");
        assert_eq!(cache_identity(Some("kubelet"), "kubelet", &bearer), "cn:kubelet");
        let by_token = cache_identity(Some("someone"), "", &bearer);
        assert!(by_token.starts_with("token:") && !by_token.contains("secret"), "{by_token}");
        let plain = head("GET /api HTTP/1.1");
        assert_eq!(cache_identity(Some("someone"), "", &plain), "cn:someone");
        assert_eq!(cache_identity(None, "", &plain), "anonymous");
        let agent = head_with("GET /api HTTP/1.1", "User-Agent: kubelet/v1.30");
        assert_eq!(cache_identity(None, "", &agent), "anonymous");
    }
}
