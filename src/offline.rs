//! Answers while the cloud is unreachable: reads from the cache (looked up on the
//! cache thread, delivered through the waker), watches held open from the cached
//! list with periodic BOOKMARKs, and `503 Status` for everything that would need
//! the cloud. Nothing is faked: writes fail.

use std::time::{Duration, Instant};

use crate::body::{LAST_CHUNK, encode_chunk};
use crate::cache::{self, CachedResponse, Classified, Lookup, Reply, WatchRequest};
use crate::client::{ClientConn, OfflineWatch, Phase};
use crate::http1::{Framing, RequestHead};
use crate::metrics::{OpenWatch, Source};
use crate::reactor::{Conn, Reactor, Step};
use crate::status::{self, LocalResponse};
use crate::transport::ReadOutcome;

/// Marks responses served from the cache.
pub const CACHE_HEADER: &str = "X-Lite-Apiserver-Cache";
/// How long an offline watch stays open when the client set no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(300);
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);

impl Reactor {
    /// Serves a request without the cloud: reads and watches from the cache,
    /// anything else with `503`.
    pub(crate) fn serve_offline(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        route: Classified,
        why: &str,
    ) {
        // An unread request body can't be skipped reliably: close after answering.
        let has_body = !matches!(head.framing(), Ok(Framing::None));
        let lookup = match &route {
            Classified::Read(key) => Some(Lookup::Read(key.clone())),
            Classified::Watch(request) => Some(Lookup::WatchStart(request.clone())),
            Classified::Uncacheable => None,
        };
        if let Some(lookup) = lookup.filter(|_| !has_body)
            && let Some(request_id) = self.lookup(slot, lookup)
        {
            client.set_phase(Phase::AwaitCache {
                request_id,
                head: Box::new(head),
                route: Box::new(route),
            });
            return;
        }
        let message = format!(
            "{why}; {} {} needs the cloud and cannot be answered from the cache",
            head.method,
            head.path()
        );
        let mut response = LocalResponse::cloud_unavailable(&message);
        response.close = has_body;
        self.respond_local(client, &response, head.method == "HEAD");
    }

    /// Hands finished cache lookups to the clients waiting for them.
    pub(crate) fn deliver_cache_replies(&mut self) {
        let Some(cache) = &self.cache else { return };
        for (request_id, reply) in cache.take_replies() {
            let Some(slot) = self.lookups.remove(&request_id) else { continue };
            let Some(Conn::Client(mut client)) = self.conns.take(slot) else { continue };
            match std::mem::replace(&mut client.phase, Phase::Closing) {
                Phase::AwaitCache { request_id: waiting, head, route } if waiting == request_id => {
                    self.answer_from_cache(&mut client, &head, *route, reply);
                }
                other => client.phase = other,
            }
            self.conns.put(slot, Conn::Client(client));
            self.drive_client(slot);
        }
    }

    fn answer_from_cache(
        &mut self,
        client: &mut ClientConn,
        head: &RequestHead,
        route: Classified,
        reply: Reply,
    ) {
        let head_only = head.method == "HEAD";
        match (reply, route) {
            (Reply::Hit(cached), _) => {
                log::debug!("{} {}: served from cache", head.method, head.target);
                self.respond_local(client, &cached_response(cached), head_only);
            }
            (
                Reply::WatchReplay { initial_events, bookmark_event, .. },
                Classified::Watch(request),
            ) => {
                self.start_offline_watch(client, &request, initial_events, bookmark_event);
            }
            (Reply::WatchExpired, Classified::Watch(request)) => {
                self.metrics.count_response(Source::Cache, 200);
                client.out.push(&status::chunked_head(
                    client.minor_version,
                    "application/json",
                    &[(CACHE_HEADER, "hit")],
                ));
                let requested = request.resource_version.as_deref().unwrap_or("");
                client.out.push(&encode_chunk(&cache::expired_event(requested)));
                client.out.push(LAST_CHUNK);
                client.set_phase(Phase::ReadHead { started: None });
            }
            (Reply::Failed(reason), _) => {
                log::warn!("cache read failed for {}: {reason}", head.target);
                self.respond_local(
                    client,
                    &LocalResponse::cloud_unavailable(&format!(
                        "the cloud apiserver is unreachable and the cache failed: {reason}"
                    )),
                    head_only,
                );
            }
            (_, route) => {
                let message = format!(
                    "the cloud apiserver is unreachable and {} is not in the cache",
                    head.path()
                );
                self.respond_local(client, &miss_response(&route, &message), head_only);
            }
        }
    }

    fn start_offline_watch(
        &mut self,
        client: &mut ClientConn,
        request: &WatchRequest,
        initial_events: Vec<u8>,
        bookmark_event: Vec<u8>,
    ) {
        self.metrics.count_response(Source::Cache, 200);
        client.out.push(&status::chunked_head(
            client.minor_version,
            "application/json",
            &[(CACHE_HEADER, "hit")],
        ));
        if !initial_events.is_empty() {
            client.out.push(&encode_chunk(&initial_events));
        }
        let now = Instant::now();
        let timeout = request.timeout_seconds.map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        let watch = OfflineWatch {
            counted: OpenWatch::new(&self.metrics),
            ends_at: now + timeout,
            // No bookmark line (a non-JSON watch): an empty chunk would end the stream.
            next_bookmark: (request.allow_bookmarks && !bookmark_event.is_empty())
                .then_some(now + BOOKMARK_INTERVAL),
            bookmark_event,
        };
        client.set_phase(Phase::OfflineWatch(Box::new(watch)));
    }

    /// An offline watch only flushes and notices the client leaving.
    pub(crate) fn step_offline_watch(&mut self, client: &mut ClientConn) -> Step {
        if client.flush().is_err() {
            return Step::Close;
        }
        match client.transport.read_plain(&mut [0u8; 512]) {
            Ok(ReadOutcome::Data(_)) => Step::Again, // nothing is expected; ignore it
            Ok(ReadOutcome::WouldBlock) => Step::Wait,
            Ok(ReadOutcome::Eof) | Err(_) => Step::Close,
        }
    }

    /// A timer fired for an offline watch: send a BOOKMARK or end the stream.
    pub(crate) fn offline_watch_tick(
        &mut self,
        client: &mut ClientConn,
        mut watch: Box<OfflineWatch>,
    ) -> bool {
        let now = Instant::now();
        if now >= watch.ends_at {
            finish_offline_watch(client);
            return true;
        }
        if watch.next_bookmark.is_some_and(|at| at <= now) {
            client.out.push(&encode_chunk(&watch.bookmark_event));
            watch.next_bookmark = Some(now + BOOKMARK_INTERVAL);
        }
        client.phase = Phase::OfflineWatch(watch);
        true
    }

    /// The cloud is back: end offline watches cleanly so clients re-list fresh data.
    pub(crate) fn end_offline_watches(&mut self) {
        for slot in self.conns.slots() {
            let Some(Conn::Client(client)) = self.conns.get_mut(slot) else { continue };
            if matches!(client.phase, Phase::OfflineWatch(_)) {
                finish_offline_watch(client);
                self.drive_client(slot);
            }
        }
    }
}

fn finish_offline_watch(client: &mut ClientConn) {
    client.out.push(LAST_CHUNK);
    client.set_phase(Phase::ReadHead { started: None });
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

fn cached_response(cached: CachedResponse) -> LocalResponse {
    LocalResponse {
        status: cached.status,
        content_type: cached.content_type,
        extra_headers: vec![(CACHE_HEADER.to_string(), "hit".to_string())],
        body: cached.body,
        close: false,
    }
}
