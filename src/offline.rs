//! Answers while the cloud cannot be asked: what to look up in the cache for a request
//! (read or watch), and what the cache's reply becomes for the client — a cached
//! answer, an offline watch (offline_watch.rs), `410 Expired`, or a `Status` saying why
//! not. Nothing is faked: writes and anything the cache does not hold fail.
//!
//! The lookup itself runs on the cache thread; the reactor parks the client in
//! `Phase::AwaitCache` and hands the reply to [`answer`].

use std::sync::Arc;

use crate::body::{LAST_CHUNK, encode_chunk};
use crate::cache::{CachedResponse, Classified, Lookup, Reply, Wire};
use crate::client::{ClientConn, OnMiss};
use crate::gzip;
use crate::http1::{Framing, RequestHead};
use crate::in_cluster::InClusterAddress;
use crate::metrics::{Metrics, OpenWatch, Source};
use crate::offline_watch::OfflineWatch;
use crate::status::{self, LocalResponse};

/// Marks responses served from the cache.
pub const CACHE_HEADER: &str = "X-Lite-Apiserver-Cache";

/// What serving a request without the cloud starts with.
pub enum OfflineStart {
    Lookup(Box<Lookup>),
    /// Nothing to look up: the `503` to send.
    Refuse(LocalResponse),
}

/// A read or watch is looked up; anything else needs the cloud.
pub fn start(head: &RequestHead, route: &Classified, why: &str) -> OfflineStart {
    // An unread request body can't be skipped reliably: close after answering.
    let has_body = !matches!(head.framing(), Ok(Framing::None));
    let lookup = match route {
        Classified::Read(key) => Some(Lookup::Read(key.clone())),
        Classified::Watch(request) => Some(Lookup::WatchStart(request.clone())),
        Classified::Uncacheable => None,
    };
    match lookup {
        Some(lookup) if !has_body => OfflineStart::Lookup(Box::new(lookup)),
        _ => {
            let message = format!(
                "{why}; {} {} needs the cloud and cannot be answered from the cache",
                head.method,
                head.path()
            );
            let mut response = LocalResponse::cloud_unavailable(&message);
            response.close = has_body;
            OfflineStart::Refuse(response)
        }
    }
}

/// What a cache reply is turned into an answer for.
pub struct Answer {
    pub route: Classified,
    /// Why the cache was asked, and so what a miss becomes.
    pub on_miss: OnMiss,
    /// The answer shows this node as `default/kubernetes` (in_cluster.rs).
    pub rewrite: Option<InClusterAddress>,
}

/// Turns the cache's reply into the client's answer.
pub fn answer(
    client: &mut ClientConn,
    head: &RequestHead,
    reply: Reply,
    answer: Answer,
    metrics: &Arc<Metrics>,
) {
    let Answer { route, on_miss, rewrite } = answer;
    let head_only = head.method == "HEAD";
    let (source, response) = match (reply, route) {
        (Reply::Hit(cached), _) => {
            log::debug!("{} {}: served from cache", head.method, head.target);
            metrics.count_stale_answer(on_miss.stale_reason(), cached.age());
            let mut response = cached_response(cached);
            if let Some(body) = rewrite.and_then(|local| local.rewrite_document(&response.body)) {
                response.body = body;
            }
            compress_large(&mut response, head);
            (Source::Cache, response)
        }
        (
            Reply::WatchReplay { wire, initial_events, bookmark_event, .. },
            Classified::Watch(request),
        ) => {
            metrics.count_response(Source::Cache, 200);
            client.out.push(&watch_head(client.minor_version, wire));
            let counted = OpenWatch::new(metrics);
            // The in-cluster rewrite reads JSON events only.
            let initial = match rewrite.filter(|_| wire == Wire::Json) {
                Some(local) => local.rewrite_events(&initial_events),
                None => initial_events,
            };
            OfflineWatch::start(client, &request, &initial, bookmark_event, counted);
            return;
        }
        (Reply::WatchExpired { wire }, Classified::Watch(request)) => {
            metrics.count_response(Source::Cache, 200);
            client.out.push(&watch_head(client.minor_version, wire));
            let requested = request.resource_version.as_deref().unwrap_or("");
            client.out.push(&encode_chunk(&wire.expired_event(requested)));
            client.out.push(LAST_CHUNK);
            client.await_next_request();
            return;
        }
        (Reply::Failed(reason), _) => {
            log::warn!("cache read failed for {}: {reason}", head.target);
            let message =
                format!("the cloud apiserver is unreachable and the cache failed: {reason}");
            (Source::Local, LocalResponse::cloud_unavailable(&message))
        }
        (_, route) => match on_miss {
            OnMiss::CloudError(response) => (Source::Upstream, response),
            // The cloud could not be reached for this request: as when it is down, a
            // missing object is `404`, a missing collection `503`.
            OnMiss::CloudDown | OnMiss::NoAnswer | OnMiss::AskCloud(_) => {
                let path = head.path();
                let message =
                    format!("the cloud apiserver is unreachable and {path} is not in the cache");
                (Source::Local, miss_response(&route, &message))
            }
        },
    };
    metrics.count_response(source, response.status);
    client.answer(&response, head_only);
}

fn watch_head(minor_version: u8, wire: Wire) -> Vec<u8> {
    status::chunked_head(minor_version, wire.watch_content_type(), &[(CACHE_HEADER, "hit")])
}

/// An object the cache does not hold is `404 NotFound`, as kube-apiserver answers for a
/// missing object (and as YurtHub does offline); a collection or discovery document it
/// does not hold is `503`: an empty list would tell a client that everything is gone.
fn miss_response(route: &Classified, message: &str) -> LocalResponse {
    match route {
        Classified::Read(key) if key.names_object() => {
            LocalResponse::status(404, "NotFound", message)
        }
        _ => LocalResponse::cloud_unavailable(message),
    }
}

/// As kube-apiserver does: an answer over 128 KiB is gzipped for a client that accepts gzip.
fn compress_large(response: &mut LocalResponse, head: &RequestHead) {
    if response.body.len() > gzip::COMPRESS_ABOVE
        && gzip::accepts_gzip(head.header_str("accept-encoding"))
    {
        response.body = gzip::compress(&response.body);
        response.extra_headers.push(("Content-Encoding".to_string(), "gzip".to_string()));
    }
}

/// Carried by answers served from the cache: whole seconds since the cloud gave the answer
/// (or a watch or the same answer again last brought it up to date).
pub const CACHE_AGE_HEADER: &str = "X-Lite-Apiserver-Cache-Age";

fn cached_response(cached: CachedResponse) -> LocalResponse {
    let age = cached.age().to_string();
    LocalResponse {
        status: cached.status,
        content_type: cached.content_type,
        extra_headers: vec![
            (CACHE_HEADER.to_string(), "hit".to_string()),
            (CACHE_AGE_HEADER.to_string(), age),
        ],
        body: cached.body,
        close: false,
    }
}
