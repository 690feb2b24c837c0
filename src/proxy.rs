//! One request/response exchange between a client and the cloud: forwards the
//! request body up and streams the response down, never holding more than one
//! read's worth in each direction (backpressure: a side is read only when the other
//! side's queue is empty).
//!
//! While the response streams by, its payload is teed to the cache: whole bodies of
//! cacheable GETs and of the writes the cache learns from (handed over when complete), and
//! watch events as they arrive.

use std::fmt;
use std::io;
use std::time::Instant;

use crate::body::{BodyTracker, LAST_CHUNK, encode_chunk};
use crate::cache::{self, CacheHandle, Classified, ObjectWrite, ReadKey, Wire};
use crate::client::ClientConn;
use crate::config::Config;
use crate::content_encoding::{BodyEncoding, Decompressing};
use crate::gzip::{self, GzipDecoder, GzipError, RatioLimit};
use crate::http1::{self, Framing, HttpError, RequestHead, ResponseHead};
use crate::in_cluster::InClusterAddress;
use crate::metrics::OpenWatch;
use crate::queue::OutQueue;
use crate::status::LocalResponse;
use crate::store_memo::{self, StoreMemo};
use crate::token_cache::TokenPending;
use crate::transport::{ReadOutcome, TransportError};
use crate::upstream::UpstreamConn;
use crate::watch_frames::{EventFramer, EventFraming};

/// Largest response body copied to the cache; bigger ones are proxied, not cached.
const MAX_CACHED_BODY: usize = 64 << 20;
/// A gzip answer inflated for the cache that comes out over 8 MiB at more than 200:1 is a
/// bomb, not a Kubernetes answer (5–10:1): the copy is dropped before it holds 64 MiB.
const CACHE_COPY_RATIO: RatioLimit = RatioLimit { ratio: 200, floor: 8 << 20 };
/// Most bytes held in cache copies at once, over all exchanges. One copy alone may grow
/// past it (up to `MAX_CACHED_BODY`): a large LIST must still be cached, just not N at once.
const MAX_COPY_BYTES_IN_FLIGHT: usize = 4 << 20;
/// Read from a source only while the destination queue is below this.
const QUEUE_HIGH_WATER: usize = 16 * 1024;
/// How full inflating a gzip answer for a client may make its queue (plus one step).
const DECOMPRESSED_ROOM: usize = 2 * QUEUE_HIGH_WATER;

enum ResponseState {
    AwaitingHead(Vec<u8>),
    Body(Box<BodyState>),
    /// A `502`/`503`/`504` to a cacheable read, read whole before deciding who answers.
    Error(Box<ErrorBody>),
}

/// Largest error body held back while the cache is asked.
const MAX_ERROR_BODY: usize = 64 * 1024;

struct ErrorBody {
    head: ResponseHead,
    tracker: BodyTracker,
    payload: Vec<u8>,
}

impl ErrorBody {
    /// The cloud's answer as the client will get it if the cache has nothing.
    fn response(self) -> LocalResponse {
        let content_type = self.head.header_str("content-type").unwrap_or("text/plain");
        let mut response = LocalResponse {
            status: self.head.status,
            content_type: content_type.to_string(),
            extra_headers: Vec::new(),
            body: self.payload,
            close: false,
        };
        if let Some(retry) = self.head.header_str("retry-after") {
            response.extra_headers.push(("Retry-After".to_string(), retry.to_string()));
        }
        response
    }
}

struct BodyState {
    tracker: BodyTracker,
    status: u16,
    /// The client speaks HTTP/1.0: chunked payload is sent de-chunked, then closed.
    dechunk: bool,
    close_client: bool,
    upstream_reusable: bool,
    /// Payload collected for the cache: 200s of cacheable reads, answers to object writes.
    cache_copy: Option<CacheCopy>,
    watch_id: Option<u64>,
    /// A watch to a chunked HTTP/1.1 client: re-chunked whole events at a time, so it can
    /// be ended cleanly when the cloud goes (watch_frames.rs).
    events: Option<EventFramer>,
    /// The end of the answer went out and its copy to the cache (`complete_if_done`).
    completed: bool,
    /// Shown to kubelet with this node as `default/kubernetes` (in_cluster.rs).
    rewrite: Option<InClusterAddress>,
    /// A document held whole to be rewritten before it goes out.
    held: Option<HeldDocument>,
    /// A gzip answer decompressed for a client that did not accept gzip.
    decompressing: Option<Decompressing>,
}

/// A response held back whole: its head waits until its rewritten length is known. Only
/// kubelet's Service reads are held (a list of a cluster's Services, not a stream).
struct HeldDocument {
    head: ResponseHead,
    payload: Vec<u8>,
}

/// A response body being collected for the cache, always plain.
struct CacheCopy {
    purpose: CopyFor,
    content_type: String,
    bytes: Vec<u8>,
    /// A gzip body relayed compressed: the copy inflates what it is given.
    inflate: Option<GzipDecoder>,
    /// A JSON read not yet checked against the store memo (store_memo.rs): the capacity
    /// the copy grows to once it is to be stored.
    undecided: Option<usize>,
}

impl CacheCopy {
    /// Body bytes as the cloud sent them; false when the copy is spoilt (bad gzip, or
    /// more than `MAX_CACHED_BODY` would come out of it).
    fn take(&mut self, payload: &[u8]) -> bool {
        let bytes = &mut self.bytes;
        match &mut self.inflate {
            None => bytes.extend_from_slice(payload),
            Some(decoder) => {
                let inflated = decoder.feed(payload, &mut |plain| bytes.extend_from_slice(plain));
                if let Err(e) = inflated {
                    log::debug!("not cached: {e}");
                    return false;
                }
            }
        }
        true
    }

    /// The body ended: a gzip copy must have ended with its stream.
    fn is_whole(&self) -> bool {
        self.inflate.as_ref().is_none_or(|decoder| decoder.finish().is_ok())
    }
}

enum CopyFor {
    Read(ReadKey),
    Write(ObjectWrite),
    /// A TokenRequest's `201`, stored under its key (token_cache.rs).
    TokenRequest(ReadKey),
}

pub enum PumpOutcome {
    Progress,
    Wait,
    /// The response is complete.
    Finished {
        upstream_reusable: bool,
        client_keep_alive: bool,
    },
    /// The upstream failed before any response byte: the caller retries or falls back.
    UpstreamFailed(UpstreamFailure),
    /// A cacheable read was answered `502`/`503`/`504` (read whole, nothing sent to the
    /// client): the cache may answer instead, else `response` is passed on.
    CloudError {
        response: LocalResponse,
        upstream_reusable: bool,
    },
    /// `101 Switching Protocols` was forwarded: the connection becomes a tunnel.
    Upgraded,
    /// Broken mid-response: nothing more can be said to the client.
    Abort(String),
    /// The client's request body is malformed: a 400 if no response byte was sent yet.
    BadRequestBody(String),
}

/// Why the cloud gave no answer to a request.
#[derive(Debug)]
pub enum UpstreamFailure {
    Connect(io::Error),
    Tls(TransportError),
    Write(TransportError),
    Read(TransportError),
    /// Closed before a response head.
    Closed,
    /// No connection, or no answer, within its deadline.
    TimedOut,
    /// What came back is not an HTTP response.
    BadResponse(HttpError),
}

impl UpstreamFailure {
    /// The cloud said something, just not HTTP: a `502`, not a reason to use the cache.
    pub fn is_bad_response(&self) -> bool {
        matches!(self, UpstreamFailure::BadResponse(_))
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, UpstreamFailure::TimedOut)
    }
}

impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamFailure::Connect(e) => write!(f, "connect to the cloud apiserver failed: {e}"),
            UpstreamFailure::Tls(e) => write!(f, "TLS with the cloud apiserver failed: {e}"),
            UpstreamFailure::Write(e) => write!(f, "write to the cloud failed: {e}"),
            UpstreamFailure::Read(e) => write!(f, "read from the cloud failed: {e}"),
            UpstreamFailure::Closed => f.write_str("the cloud apiserver closed the connection"),
            UpstreamFailure::TimedOut => f.write_str("timed out waiting for the cloud apiserver"),
            UpstreamFailure::BadResponse(e) => write!(f, "bad response from the cloud: {e}"),
        }
    }
}

pub struct Exchange {
    pub request: RequestHead,
    pub route: Classified,
    pub upstream: Box<UpstreamConn>,
    pub upstream_slot: usize,
    /// The head as sent upstream, kept to retry on a fresh connection.
    pub upstream_head: Vec<u8>,
    request_body: BodyTracker,
    to_upstream: OutQueue,
    /// Already retried once after a pooled connection turned out dead.
    pub retried: bool,
    response: ResponseState,
    pub started: Instant,
    pub last_activity: Instant,
    next_watch_id: u64,
    /// A long-running request (watch, follow, exec…): no stall deadline; counted among
    /// open watches while it is proxied.
    long_running: Option<OpenWatch>,
    /// A TokenRequest: its `201` answer is cached, and the cache answers when the cloud
    /// does not (set by the reactor after `new`).
    pub token: Option<Box<TokenPending>>,
    /// The answer shows this node as `default/kubernetes` (in_cluster.rs).
    pub rewrite: Option<InClusterAddress>,
}

impl Exchange {
    /// `request_framing` is the request body's, as the plan validated it; `long_running`
    /// the open-watch count a long-running request holds while it runs.
    pub fn new(
        request: RequestHead,
        route: Classified,
        (upstream, upstream_slot): (Box<UpstreamConn>, usize),
        upstream_head: Vec<u8>,
        request_framing: Framing,
        watch_id: u64,
        long_running: Option<OpenWatch>,
    ) -> Exchange {
        let request_body = BodyTracker::new(request_framing);
        let mut to_upstream = OutQueue::default();
        to_upstream.push(&upstream_head);
        let now = Instant::now();
        Exchange {
            request,
            route,
            upstream,
            upstream_slot,
            upstream_head,
            request_body,
            to_upstream,
            retried: false,
            response: ResponseState::AwaitingHead(Vec::new()),
            started: now,
            last_activity: now,
            next_watch_id: watch_id,
            long_running,
            token: None,
            rewrite: None,
        }
    }

    /// Re-sends the request on a fresh connection (only for bodiless requests).
    pub fn retry_on(&mut self, upstream: Box<UpstreamConn>, slot: usize) -> Box<UpstreamConn> {
        self.retried = true;
        self.to_upstream = OutQueue::default();
        self.to_upstream.push(&self.upstream_head);
        self.upstream_slot = slot;
        std::mem::replace(&mut self.upstream, upstream)
    }

    /// Safe to send again: nothing of the response arrived and no body was sent.
    pub fn can_retry(&self) -> bool {
        !self.retried
            && self.upstream.reused
            && self.request.framing() == Ok(Framing::None)
            && self.response_not_started()
    }

    pub fn response_not_started(&self) -> bool {
        matches!(&self.response, ResponseState::AwaitingHead(buf) if buf.is_empty())
    }

    /// A long-running request (as planned): no stall deadline applies.
    pub fn is_long_running(&self) -> bool {
        self.long_running.is_some()
    }

    /// The open-watch count, handed on when the exchange becomes a tunnel.
    pub fn take_watch_count(&mut self) -> Option<OpenWatch> {
        self.long_running.take()
    }

    /// When the exchange gives up: connecting has `--timeout`; a long-running stream
    /// has none; a cacheable read whose answer has not begun `--cloud-response-timeout`;
    /// anything else `--stall-timeout` without a byte moving.
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        let stalled = self.last_activity + config.client_timeouts.stall;
        if !self.upstream.is_established() {
            Some(self.started + config.timeout)
        } else if self.is_long_running() {
            None
        } else if self.response_not_started()
            && (matches!(self.route, Classified::Read(_)) || self.token.is_some())
        {
            Some(stalled.min(self.started + config.cloud_response_timeout))
        } else {
            Some(stalled)
        }
    }

    /// A long-running response is streaming to the client.
    pub fn is_streaming(&self) -> bool {
        matches!(self.response, ResponseState::Body(_)) && self.is_long_running()
    }

    /// Does all the work possible now, in both directions.
    pub fn pump(
        &mut self,
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
        scratch: &mut [u8],
    ) -> PumpOutcome {
        if self.response_complete() && !self.upstream_reusable_so_far() {
            // The cloud side is over (a watch ended cleanly after it went): only the
            // client's last bytes are left.
            return match client.flush() {
                Err(e) => PumpOutcome::Abort(format!("client write failed: {e}")),
                Ok(moved) => self.finished(client).unwrap_or(if moved > 0 {
                    PumpOutcome::Progress
                } else {
                    PumpOutcome::Wait
                }),
            };
        }
        match self.upstream.poll_connected() {
            Ok(true) => {}
            Ok(false) => return PumpOutcome::Wait,
            Err(e) => return self.failed(UpstreamFailure::Connect(e)),
        }
        if let Err(e) = self.upstream.transport.drive() {
            return self.failed(UpstreamFailure::Tls(e));
        }
        // Output first: room it makes lets this turn read more from the cloud, and no
        // new readiness event would come for bytes the cloud already sent.
        let mut progressed = match client.flush() {
            Ok(moved) => moved > 0,
            Err(e) => return PumpOutcome::Abort(format!("client write failed: {e}")),
        };
        match self.forward_request(client, scratch) {
            Ok(moved) => progressed |= moved,
            Err(outcome) => return outcome,
        }
        match self.forward_response(client, tee, scratch) {
            Ok(moved) => progressed |= moved,
            Err(outcome) => return outcome,
        }
        match client.flush() {
            Ok(moved) => progressed |= moved > 0,
            Err(e) => return PumpOutcome::Abort(format!("client write failed: {e}")),
        }
        if let Some(done) = self.finished(client) {
            return done;
        }
        if progressed {
            self.last_activity = Instant::now();
            PumpOutcome::Progress
        } else {
            PumpOutcome::Wait
        }
    }

    fn failed(&self, failure: UpstreamFailure) -> PumpOutcome {
        if self.response_not_started() {
            PumpOutcome::UpstreamFailed(failure)
        } else {
            PumpOutcome::Abort(failure.to_string())
        }
    }

    /// Request head and body, client → cloud.
    fn forward_request(
        &mut self,
        client: &mut ClientConn,
        scratch: &mut [u8],
    ) -> Result<bool, PumpOutcome> {
        let mut progressed = false;
        loop {
            let moved = self
                .to_upstream
                .drain_into(&mut self.upstream.transport)
                .map_err(|e| self.failed(UpstreamFailure::Write(e)))?;
            progressed |= moved > 0;
            if !self.to_upstream.is_empty() {
                return Ok(progressed);
            }
            if self.request_body.is_done() {
                notice_hang_up(client, scratch)?;
                return Ok(progressed);
            }
            if client.inbuf.is_empty() {
                match client.transport.read_plain(scratch) {
                    Ok(ReadOutcome::Data(n)) => client.inbuf.extend_from_slice(&scratch[..n]),
                    Ok(ReadOutcome::WouldBlock) => return Ok(progressed),
                    Ok(ReadOutcome::Eof) => {
                        return Err(PumpOutcome::Abort("client closed mid-request".into()));
                    }
                    Err(e) => return Err(PumpOutcome::Abort(format!("client read failed: {e}"))),
                }
            }
            let to_upstream = &mut self.to_upstream;
            let progress = self
                .request_body
                .feed(&client.inbuf, &mut |_| {})
                .map_err(|e| PumpOutcome::BadRequestBody(format!("bad request body: {e}")))?;
            to_upstream.push(&client.inbuf[..progress.consumed]);
            client.inbuf.drain(..progress.consumed);
            progressed = true;
        }
    }

    /// Response head and body, cloud → client, teeing payload to the cache.
    fn forward_response(
        &mut self,
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
        scratch: &mut [u8],
    ) -> Result<bool, PumpOutcome> {
        let mut progressed = false;
        loop {
            // What waits to be inflated goes first: no more is read from the cloud until it
            // is out (one read of a gzip bomb must not flood the client's queue).
            if let ResponseState::Body(body) = &mut self.response
                && body.has_pending()
            {
                progressed |= body.resume(client, tee)?;
                if body.has_pending() {
                    return Ok(progressed);
                }
            }
            if client.out.len() >= QUEUE_HIGH_WATER || self.response_complete() {
                break;
            }
            let n = match self.upstream.transport.read_plain(scratch) {
                Ok(ReadOutcome::Data(n)) => n,
                Ok(ReadOutcome::WouldBlock) => break,
                Ok(ReadOutcome::Eof) => {
                    return self
                        .upstream_ended(client, tee, UpstreamFailure::Closed)
                        .map(|()| true);
                }
                Err(e) => {
                    let failure = UpstreamFailure::Read(e);
                    return self.upstream_ended(client, tee, failure).map(|()| true);
                }
            };
            progressed = true;
            let bytes = &scratch[..n];
            match &mut self.response {
                ResponseState::AwaitingHead(buf) => {
                    buf.extend_from_slice(bytes);
                    self.try_response_head(client, tee)?;
                }
                ResponseState::Body(body) => body.consume(bytes, client, tee)?,
                ResponseState::Error(_) => self.collect_error(bytes)?,
            }
            if let Err(e) = client.flush() {
                return Err(PumpOutcome::Abort(format!("client write failed: {e}")));
            }
        }
        Ok(progressed)
    }

    /// Takes bytes of an error answer held back; `Err(CloudError)` once it is whole.
    fn collect_error(&mut self, bytes: &[u8]) -> Result<(), PumpOutcome> {
        let ResponseState::Error(error) = &mut self.response else { return Ok(()) };
        let payload = &mut error.payload;
        let progress = error
            .tracker
            .feed(bytes, &mut |part| {
                if payload.len() + part.len() <= MAX_ERROR_BODY {
                    payload.extend_from_slice(part);
                }
            })
            .map_err(|e| PumpOutcome::Abort(format!("bad response body from the cloud: {e}")))?;
        if !error.tracker.is_done() {
            return Ok(());
        }
        let upstream_reusable = error.head.keep_alive()
            && !error.tracker.until_close()
            && progress.consumed == bytes.len();
        Err(self.take_cloud_error(upstream_reusable))
    }

    /// The held error answer, as the outcome that lets the cache answer instead.
    fn take_cloud_error(&mut self, upstream_reusable: bool) -> PumpOutcome {
        let state = std::mem::replace(&mut self.response, ResponseState::AwaitingHead(Vec::new()));
        let ResponseState::Error(error) = state else {
            return PumpOutcome::Abort("no error answer was held".into());
        };
        let complete = error.tracker.is_done()
            && error.payload.len() <= MAX_ERROR_BODY
            && BodyEncoding::of(&error.head) == BodyEncoding::Identity;
        let response = if complete {
            error.response()
        } else {
            let status = error.head.status;
            let message = format!("the cloud apiserver answered {status}");
            LocalResponse::status(status, "ServiceUnavailable", &message)
        };
        PumpOutcome::CloudError { response, upstream_reusable }
    }

    fn response_complete(&self) -> bool {
        matches!(&self.response, ResponseState::Body(body) if body.tracker.is_done())
    }

    fn try_response_head(
        &mut self,
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
    ) -> Result<(), PumpOutcome> {
        let ResponseState::AwaitingHead(buf) = &mut self.response else { return Ok(()) };
        let (head, length) = match http1::parse_response(buf) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(()),
            Err(e) => {
                return Err(PumpOutcome::UpstreamFailed(UpstreamFailure::BadResponse(e)));
            }
        };
        if (100..200).contains(&head.status) && head.status != 101 {
            // Interim response (100 Continue): pass it on and wait for the final one.
            client.out.push(&head.to_client_bytes(client.minor_version, false, false, &[]));
            buf.drain(..length);
            return self.try_response_head(client, tee);
        }
        let received = std::mem::take(buf);
        let rest = &received[length..];
        let framing = head
            .framing(&self.request.method)
            .map_err(|e| PumpOutcome::Abort(format!("bad response framing: {e}")))?;
        if matches!(self.route, Classified::Read(_)) && matches!(head.status, 502..=504) {
            let error = ErrorBody { head, tracker: BodyTracker::new(framing), payload: Vec::new() };
            self.response = ResponseState::Error(Box::new(error));
            return self.collect_error(rest);
        }
        let mut body = self.body_state(&head, framing, client.minor_version, tee);
        if body.rewrite.is_some() && !self.is_watch() && head.status == 200 {
            // The whole document is rewritten before any of it goes out (in_cluster.rs).
            body.held = Some(HeldDocument { head: head.clone(), payload: Vec::new() });
        } else if body.decompressing.is_none() {
            client.out.push(&head.to_client_bytes(
                client.minor_version,
                body.close_client,
                body.dechunk,
                &[],
            ));
        }
        if head.status == 101 {
            client.out.push(rest);
            return Err(PumpOutcome::Upgraded);
        }
        body.consume(rest, client, tee)?;
        self.response = ResponseState::Body(Box::new(body));
        Ok(())
    }

    fn body_state(
        &mut self,
        head: &ResponseHead,
        framing: Framing,
        client_minor: u8,
        tee: &mut Tee<'_>,
    ) -> BodyState {
        let encoding = BodyEncoding::of(head);
        let decompress = encoding == BodyEncoding::Gzip
            && framing != Framing::None
            && !gzip::accepts_gzip(self.request.header_str("accept-encoding"));
        let dechunk = client_minor == 0 && framing == Framing::Chunked;
        let close_client = !self.request.keep_alive()
            || framing == Framing::UntilClose
            || dechunk
            || (decompress && client_minor == 0);
        let content_type = head.header_str("content-type").unwrap_or("").to_string();
        let ok = head.status == 200;
        // Only cacheable reads are asked for plain bodies: a write's answer may be compressed.
        let plain = encoding == BodyEncoding::Identity;
        let purpose = match (&self.route, tee.cache) {
            (Classified::Read(key), Some(_)) if ok && encoding != BodyEncoding::Other => {
                Some(CopyFor::Read(key.clone()))
            }
            (Classified::Uncacheable, Some(_)) if plain && self.token.is_some() => {
                let token = self.token.as_ref().filter(|_| head.status == 201);
                token.map(|token| CopyFor::TokenRequest(token.cache_key().clone()))
            }
            // Whatever the status: the cache decides what the answer means.
            (Classified::Uncacheable, Some(_)) if plain => {
                cache::classify_write(&self.request.method, &self.request.target)
                    .map(CopyFor::Write)
            }
            _ => None,
        };
        let cache_copy = purpose.map(|purpose| {
            let full = copy_capacity(framing, tee.budget);
            // A JSON read first collects only the bytes that name its version.
            let memo_check =
                matches!(purpose, CopyFor::Read(_)) && content_type.starts_with("application/json");
            let capacity = if memo_check { full.min(store_memo::PREFIX_BYTES) } else { full };
            let bytes = Vec::with_capacity(capacity);
            tee.budget.used += bytes.capacity();
            // Decompressed for the client: the copy takes the same plain bytes.
            let inflate = (encoding == BodyEncoding::Gzip && !decompress)
                .then(|| GzipDecoder::new(MAX_CACHED_BODY).with_ratio_limit(CACHE_COPY_RATIO));
            let undecided = memo_check.then_some(full);
            CacheCopy { purpose, content_type: content_type.clone(), bytes, inflate, undecided }
        });
        let watch_id = match (&self.route, tee.cache) {
            // Teed when answered in the scope's encoding (a custom resource asked in
            // protobuf is answered JSON, which its protobuf scope cannot hold).
            (Classified::Watch(request), Some(cache))
                if ok
                    && request.scope.wire().is_some()
                    && Wire::of_content_type(&content_type) == request.scope.wire() =>
            {
                cache.watch_opened(self.next_watch_id, request);
                Some(self.next_watch_id)
            }
            _ => None,
        };
        let events = EventFraming::of(&content_type)
            .filter(|_| ok && self.is_watch() && framing == Framing::Chunked && !dechunk)
            .map(EventFramer::new);
        let json = content_type.starts_with("application/json");
        BodyState {
            rewrite: self.rewrite.filter(|_| json && plain && self.request.method == "GET"),
            held: None,
            decompressing: decompress.then(|| Decompressing::new(head, client_minor, close_client)),
            events,
            completed: false,
            tracker: BodyTracker::new(framing),
            status: head.status,
            dechunk,
            close_client,
            upstream_reusable: head.keep_alive() && framing != Framing::UntilClose,
            cache_copy,
            watch_id,
        }
    }

    /// The cloud closed or broke the connection: before the head that is a failure the
    /// caller may retry or answer from the cache; a body read until close is complete; a
    /// watch ends cleanly; anything else is cut short and must end abruptly.
    fn upstream_ended(
        &mut self,
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
        failure: UpstreamFailure,
    ) -> Result<(), PumpOutcome> {
        match &mut self.response {
            ResponseState::AwaitingHead(_) => Err(self.failed(failure)),
            ResponseState::Error(error) => {
                if error.tracker.until_close() {
                    error.tracker = BodyTracker::new(Framing::None);
                }
                Err(self.take_cloud_error(false))
            }
            ResponseState::Body(body) if body.tracker.until_close() => {
                body.upstream_reusable = false;
                body.tracker = BodyTracker::new(Framing::None);
                body.complete_if_done(client, tee)
            }
            ResponseState::Body(body) => {
                if body.end_cleanly(client, tee) {
                    log::debug!("{}: {failure}; watch ended cleanly", self.request.target);
                    return Ok(());
                }
                body.abandon(tee);
                Err(PumpOutcome::Abort(format!("{failure} mid-response")))
            }
        }
    }

    /// Ends a relayed watch now, cleanly (the cloud is gone); false when it cannot be
    /// (no response yet, not a watch, or an event too large to hold).
    pub fn end_cleanly(&mut self, client: &mut ClientConn, tee: &mut Tee<'_>) -> bool {
        match &mut self.response {
            ResponseState::Body(body) => body.end_cleanly(client, tee),
            ResponseState::AwaitingHead(_) | ResponseState::Error(_) => false,
        }
    }

    fn is_watch(&self) -> bool {
        matches!(self.route, Classified::Watch(_))
            || matches!(http1::query_param(&self.request.target, "watch"), Some("true" | "1"))
    }

    fn upstream_reusable_so_far(&self) -> bool {
        matches!(&self.response, ResponseState::Body(body) if body.upstream_reusable)
    }

    fn finished(&mut self, client: &ClientConn) -> Option<PumpOutcome> {
        let ResponseState::Body(body) = &self.response else { return None };
        if !body.tracker.is_done() || body.has_pending() || !client.out.is_empty() {
            return None;
        }
        let request_done = self.request_body.is_done();
        Some(PumpOutcome::Finished {
            upstream_reusable: body.upstream_reusable
                && request_done
                && self.upstream.transport.is_flushed(),
            client_keep_alive: !body.close_client && request_done,
        })
    }

    /// Stops teeing when the exchange ends early (client gone, timeout).
    pub fn abandon(&mut self, tee: &mut Tee<'_>) {
        if let ResponseState::Body(body) = &mut self.response {
            body.abandon(tee);
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.response {
            ResponseState::Body(body) => Some(body.status),
            ResponseState::Error(error) => Some(error.head.status),
            ResponseState::AwaitingHead(_) => None,
        }
    }
}

/// Once its request is sent a client has nothing to say until the response ends, but one
/// that hangs up must not keep a quiet watch (and its cloud connection) open until the watch
/// times out. Reads only to notice the end: bytes of a pipelined request are kept, at most a
/// head's worth.
fn notice_hang_up(client: &mut ClientConn, scratch: &mut [u8]) -> Result<(), PumpOutcome> {
    while client.inbuf.len() < http1::MAX_HEAD_BYTES {
        match client.transport.read_plain(scratch) {
            Ok(ReadOutcome::Data(n)) => client.inbuf.extend_from_slice(&scratch[..n]),
            Ok(ReadOutcome::WouldBlock) => return Ok(()),
            Ok(ReadOutcome::Eof) => return Err(PumpOutcome::Abort("the client hung up".into())),
            Err(e) => return Err(PumpOutcome::Abort(format!("client read failed: {e}"))),
        }
    }
    Ok(())
}

impl BodyState {
    /// Body bytes from the cloud: to the client (raw, or de-chunked for HTTP/1.0) and the cache.
    fn consume(
        &mut self,
        mut bytes: &[u8],
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
    ) -> Result<(), PumpOutcome> {
        while !bytes.is_empty() && !self.tracker.is_done() {
            let dechunk = self.dechunk;
            let cache_copy = &mut self.cache_copy;
            let watch = self.watch_id.zip(tee.cache);
            let events = &mut self.events;
            let held = &mut self.held;
            let rewrite = self.rewrite;
            let out = &mut client.out;
            let held_before = copy_held(cache_copy);
            let decompressing = &mut self.decompressing;
            let (mut spoilt, mut gzip_error) = (false, None);
            let progress = self
                .tracker
                .feed(bytes, &mut |payload| {
                    if let Some(plain) = decompressing.as_mut() {
                        if gzip_error.is_none() {
                            let room = DECOMPRESSED_ROOM.saturating_sub(out.len());
                            let mut to_client = |bytes: &[u8]| out.push(bytes);
                            let mut to_copy = |bytes: &[u8]| {
                                if let Some(copy) = cache_copy.as_mut() {
                                    copy.bytes.extend_from_slice(bytes);
                                }
                            };
                            gzip_error =
                                plain.feed(payload, room, &mut to_client, &mut to_copy).err();
                        }
                        return;
                    }
                    if let Some(held) = held.as_mut() {
                        held.payload.extend_from_slice(payload);
                    } else if dechunk {
                        out.push(payload);
                    } else if let Some(events) = events.as_mut() {
                        let mut whole = events.push(payload);
                        if let Some(rewrite) = &rewrite {
                            whole = rewrite.rewrite_events(&whole);
                        }
                        if !whole.is_empty() {
                            out.push(&encode_chunk(&whole));
                        }
                    }
                    if let Some(copy) = cache_copy {
                        spoilt |= !copy.take(payload);
                    }
                    if let Some((id, cache)) = watch {
                        cache.watch_bytes(id, payload);
                    }
                })
                .map_err(|e| {
                    PumpOutcome::Abort(format!("bad response body from the cloud: {e}"))
                })?;
            if !dechunk && self.events.is_none() && self.held.is_none() && !self.decompresses() {
                client.out.push(&bytes[..progress.consumed]);
            }
            let already_stored = self.check_memo(tee);
            let held = copy_held(&self.cache_copy);
            tee.budget.used += held - held_before;
            if spoilt || already_stored || self.inflates_like_a_bomb() {
                self.drop_copy(tee);
            }
            if let Some(error) = gzip_error {
                return Err(self.bad_gzip(&error, tee));
            }
            let others_copying = tee.budget.used > held;
            if held > MAX_CACHED_BODY
                || (others_copying && tee.budget.used > MAX_COPY_BYTES_IN_FLIGHT)
            {
                self.drop_copy(tee);
            }
            bytes = &bytes[progress.consumed..];
            if progress.consumed == 0 {
                break;
            }
        }
        if !bytes.is_empty() {
            // Bytes after the end of the response: the connection can't be trusted.
            self.upstream_reusable = false;
        }
        self.complete_if_done(client, tee)
    }

    /// Once the cloud's body is over and nothing waits to be inflated: the end of the
    /// client's answer, and the copy handed to the cache. Once only.
    fn complete_if_done(
        &mut self,
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
    ) -> Result<(), PumpOutcome> {
        if !self.tracker.is_done() || self.has_pending() || self.completed {
            return Ok(());
        }
        self.completed = true;
        if self.events.is_some() {
            client.out.push(LAST_CHUNK);
        }
        self.end_decompressing(client, tee)?;
        self.release_held(client);
        self.finish(tee);
        Ok(())
    }

    fn decompresses(&self) -> bool {
        self.decompressing.is_some()
    }

    /// Compressed bytes wait to be inflated for the client.
    fn has_pending(&self) -> bool {
        self.decompressing.as_ref().is_some_and(Decompressing::has_pending)
    }

    /// Inflates what waits, as far as the client's queue has room; returns whether bytes
    /// went out.
    fn resume(&mut self, client: &mut ClientConn, tee: &mut Tee<'_>) -> Result<bool, PumpOutcome> {
        let Some(plain) = self.decompressing.as_mut() else { return Ok(false) };
        let before = client.out.len();
        let held_before = copy_held(&self.cache_copy);
        let room = DECOMPRESSED_ROOM.saturating_sub(before);
        let out = &mut client.out;
        let cache_copy = &mut self.cache_copy;
        let mut to_copy = |bytes: &[u8]| {
            if let Some(copy) = cache_copy.as_mut() {
                copy.bytes.extend_from_slice(bytes);
            }
        };
        if let Err(error) = plain.feed(&[], room, &mut |bytes| out.push(bytes), &mut to_copy) {
            return Err(self.bad_gzip(&error, tee));
        }
        tee.budget.used += copy_held(&self.cache_copy) - held_before;
        if self.inflates_like_a_bomb() {
            self.drop_copy(tee);
        }
        let moved = client.out.len() != before;
        self.complete_if_done(client, tee)?;
        Ok(moved)
    }

    /// The cloud's body ended: a body decompressed for the client is closed (its stream
    /// must have ended too).
    fn end_decompressing(
        &mut self,
        client: &mut ClientConn,
        tee: &mut Tee<'_>,
    ) -> Result<(), PumpOutcome> {
        let Some(plain) = self.decompressing.as_mut() else { return Ok(()) };
        let out = &mut client.out;
        match plain.finish(&mut |bytes| out.push(bytes)) {
            Ok(()) => Ok(()),
            Err(error) => Err(self.bad_gzip(&error, tee)),
        }
    }

    /// Bad gzip from the cloud, found decompressing it for the client: nothing is cached;
    /// a `502` when none of the answer went out yet, else the answer is cut short.
    fn bad_gzip(&mut self, error: &GzipError, tee: &mut Tee<'_>) -> PumpOutcome {
        self.abandon(tee);
        self.upstream_reusable = false;
        let message = format!("the cloud apiserver's gzip answer is bad: {error}");
        if self.decompressing.as_ref().is_some_and(|plain| !plain.head_sent()) {
            let response = LocalResponse::status(502, "InternalError", &message);
            return PumpOutcome::CloudError { response, upstream_reusable: false };
        }
        PumpOutcome::Abort(message)
    }

    /// Sends a held document, rewritten, with its new length.
    fn release_held(&mut self, client: &mut ClientConn) {
        let (Some(held), Some(rewrite)) = (self.held.take(), self.rewrite) else { return };
        let body = rewrite.rewrite_document(&held.payload).unwrap_or(held.payload);
        let head = held.head.to_reframed_bytes(client.minor_version, self.close_client, body.len());
        client.out.push(&head);
        client.out.push_owned(body);
    }

    /// Ends a re-chunked watch at its last whole event: the terminating chunk goes out,
    /// a partial event held back is dropped, and the cloud connection is not reused.
    fn end_cleanly(&mut self, client: &mut ClientConn, tee: &mut Tee<'_>) -> bool {
        if self.tracker.is_done() || !self.events.as_ref().is_some_and(EventFramer::can_end_cleanly)
        {
            return false;
        }
        client.out.push(LAST_CHUNK);
        self.tracker = BodyTracker::new(Framing::None);
        self.upstream_reusable = false;
        self.abandon(tee);
        true
    }

    fn finish(&mut self, tee: &mut Tee<'_>) {
        let Some(cache) = tee.cache else { return };
        if let Some(id) = self.watch_id.take() {
            cache.watch_closed(id);
        }
        if let Some(copy) = self.cache_copy.take() {
            tee.budget.release(copy.bytes.capacity());
            if !copy.is_whole() {
                log::debug!("not cached: the gzip stream ended early");
                return;
            }
            let now = Instant::now();
            match copy.purpose {
                CopyFor::Read(key) => {
                    if copy.content_type.starts_with("application/json") {
                        let memo = &mut tee.budget.memo;
                        memo.stored(key.store_key(), &copy.content_type, &copy.bytes, now);
                    }
                    cache.store(key, &copy.content_type, copy.bytes)
                }
                CopyFor::TokenRequest(key) => cache.store(key, &copy.content_type, copy.bytes),
                CopyFor::Write(write) => {
                    tee.budget.memo.forget_all();
                    cache.write_answered(write, self.status, &copy.content_type, copy.bytes)
                }
            }
        }
    }

    /// Once the first bytes of a JSON read are in: whether the cache was just handed this
    /// same answer (the copy is then dropped, nothing goes to the cache thread); if not,
    /// the copy is given room for the whole body.
    fn check_memo(&mut self, tee: &Tee<'_>) -> bool {
        let done = self.tracker.is_done();
        let Some(copy) = self.cache_copy.as_mut() else { return false };
        let (Some(full), CopyFor::Read(key)) = (copy.undecided, &copy.purpose) else {
            return false;
        };
        if copy.bytes.len() < store_memo::PREFIX_BYTES && !done {
            return false;
        }
        copy.undecided = None;
        let memo = &tee.budget.memo;
        if memo.holds(&key.store_key(), &copy.content_type, &copy.bytes, Instant::now()) {
            return true;
        }
        copy.bytes.reserve(full.saturating_sub(copy.bytes.len()));
        false
    }

    fn abandon(&mut self, tee: &mut Tee<'_>) {
        self.drop_copy(tee);
        if let (Some(id), Some(cache)) = (self.watch_id.take(), tee.cache) {
            cache.watch_closed(id);
        }
    }

    /// A body decompressed for the client (whose plain bytes the copy takes) that
    /// inflates like a bomb: the copy must go, the client may read on.
    fn inflates_like_a_bomb(&self) -> bool {
        let decompressing = self.decompressing.as_ref();
        self.cache_copy.is_some() && decompressing.is_some_and(|d| d.breaks(CACHE_COPY_RATIO))
    }

    fn drop_copy(&mut self, tee: &mut Tee<'_>) {
        if let Some(copy) = self.cache_copy.take() {
            tee.budget.release(copy.bytes.capacity());
        }
    }
}

/// Where response payload is teed: the cache, and the budget for copies in flight.
pub struct Tee<'a> {
    pub cache: Option<&'a CacheHandle>,
    pub budget: &'a mut CopyBudget,
}

/// Bytes allocated for copies of response bodies for the cache (capacity, not length),
/// across all exchanges: one cap, so N clients listing a large resource at once do not
/// hold N copies.
#[derive(Default)]
pub struct CopyBudget {
    used: usize,
    /// Answers just handed to the cache, so unchanged ones are not copied again.
    memo: StoreMemo,
}

/// Bytes a cache copy holds allocated.
fn copy_held(copy: &Option<CacheCopy>) -> usize {
    copy.as_ref().map_or(0, |copy| copy.bytes.capacity())
}

/// Room for the whole body when its length is announced and fits the budget, so the copy
/// is not regrown (and briefly held twice) while it fills.
fn copy_capacity(framing: Framing, budget: &CopyBudget) -> usize {
    match framing {
        Framing::Length(length) => {
            let room = MAX_COPY_BYTES_IN_FLIGHT.saturating_sub(budget.used);
            usize::try_from(length).map_or(0, |length| if length <= room { length } else { 0 })
        }
        _ => 0,
    }
}

impl CopyBudget {
    fn release(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }
}
