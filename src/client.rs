//! One client connection: its TLS transport, the bytes waiting in each direction, the
//! phase it is in, and the steps of the phases that need nothing but the connection
//! itself (handshake, reading a head, closing, lingering). The phases that talk to the
//! cloud or the cache own their state and steps in their own files.
//!
//! Phase lifecycle (the reactor drives the transitions):
//! ```text
//! Handshake ─► ReadHead ─┬─► Exchange (proxy.rs) ─┬─► ReadHead | Closing
//!    │            ▲       │                        └─► Tunnel (tunnel.rs, after 101) ─► closed
//!    │            │       ├─► ReadBody (a TokenRequest) ─► Exchange | AwaitCache | ReadHead
//!    │            │       ├─► AwaitCache (cloud down: a lookup on the cache thread)
//!    │            │       │      └─► ReadHead (cached answer) | OfflineWatch (offline_watch.rs)
//!    │            └───────┴─◄ (a local Status answer) ─► ReadHead | Closing
//!    ▼
//! Closing ─► Lingering ─► closed
//! ```
//! `Taken` is only ever seen while a phase is out being worked on (`take_phase`); finding
//! it anywhere else is a bug, reported and closed, never mistaken for a decision.

use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::cache::Classified;
use crate::config::Config;
use crate::http1::{self, HttpError, RequestHead};
use crate::metrics::StaleReason;
use crate::offline_watch::OfflineWatch;
use crate::plan::{Plan, ProxyPlan};
use crate::proxy::Exchange;
use crate::queue::OutQueue;
use crate::status::LocalResponse;
use crate::token_cache::TokenPending;
use crate::transport::{ReadOutcome, Transport, TransportError};
use crate::tunnel::Tunnel;

/// How long a cache lookup may take before the client gets a `503`.
const CACHE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing connection may take to flush its last bytes.
const CLOSING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection keeps reading what the client still sends.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a phase step asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Progress was made: step again.
    Again,
    /// Nothing to do until the next readiness event or timer.
    Wait,
    /// The connection is finished.
    Close,
}

/// A cache lookup in flight for a request the cloud cannot answer now.
pub struct AwaitCache {
    pub request_id: u64,
    pub head: RequestHead,
    pub route: Classified,
    pub on_miss: OnMiss,
    /// A TokenRequest's lookup (token_cache.rs): its answer is made from the cached one.
    pub token: Option<Box<TokenPending>>,
}

/// A request whose body is read whole into `inbuf` before its plan is carried out: a
/// TokenRequest, whose cache key is in its body.
pub struct ReadBody {
    pub head: RequestHead,
    pub plan: Plan,
    pub length: usize,
}

/// Why a request is answered from the cache, which decides what a miss becomes.
pub enum OnMiss {
    /// The cloud is down: `404` for an object, `503` for the rest.
    CloudDown,
    /// The cloud failed this request without an answer: `503`.
    NoAnswer,
    /// The cloud answered this error (`502`/`503`/`504`): it is passed on.
    CloudError(LocalResponse),
    /// The cloud's state is not known yet: a miss is asked of the cloud.
    AskCloud(Box<ProxyPlan>),
}

impl OnMiss {
    /// What a cache hit stands in for, for `/metrics`.
    pub fn stale_reason(&self) -> StaleReason {
        match self {
            OnMiss::CloudDown => StaleReason::CloudDown,
            OnMiss::NoAnswer => StaleReason::NoAnswer,
            OnMiss::CloudError(_) => StaleReason::CloudError,
            OnMiss::AskCloud(_) => StaleReason::CloudUnknown,
        }
    }
}

pub enum Phase {
    Handshake,
    /// Waiting for a request head; `started` is when its first byte arrived.
    ReadHead {
        started: Option<Instant>,
    },
    Exchange(Box<Exchange>),
    AwaitCache(Box<AwaitCache>),
    /// A fresh process waits (briefly) for the prober's first verdict before planning
    /// this request; `until` is when it stops waiting.
    AwaitVerdict {
        head: Box<RequestHead>,
        until: Instant,
    },
    ReadBody(Box<ReadBody>),
    OfflineWatch(Box<OfflineWatch>),
    /// Raw bytes both ways after `101 Switching Protocols`.
    Tunnel(Box<Tunnel>),
    /// Flushing the last bytes, then closing.
    Closing,
    /// The last answer is out and our side shut: reading and dropping what the client still
    /// sends, until it closes or `LINGER_TIMEOUT` passes. Closing with its bytes unread would
    /// make the kernel reset the connection, which can destroy that answer before the
    /// client reads it (nginx's lingering close).
    Lingering {
        write_shut: bool,
    },
    /// The phase is out being worked on (see `ClientConn::take_phase`).
    Taken,
}

/// What reading a request head came to.
pub enum HeadRead {
    Step(Step),
    Request(RequestHead),
    /// Not a request we can parse: answered with a `400`/`431` and closed.
    Malformed(HttpError),
}

pub struct ClientConn {
    pub transport: Transport,
    /// Common Name of the verified client certificate.
    peer_cn: Option<String>,
    /// Bytes read from the client and not yet consumed (heads, bodies, pipelined requests).
    pub inbuf: Vec<u8>,
    /// How much of `inbuf` was last parsed as an incomplete head. A head only completes with
    /// a newline, so it is parsed again only once one arrives: a head sent a byte per TLS
    /// record would otherwise be parsed from its start for every byte (64 KiB², seconds of
    /// CPU per connection).
    head_scanned: usize,
    /// Bytes for the client.
    pub out: OutQueue,
    pub phase: Phase,
    /// When the current phase began (deadlines count from here).
    phase_since: Instant,
    /// The deadline a timer is armed for, if any.
    pub armed: Option<Instant>,
    /// The minor HTTP version of the current request, for local responses.
    pub minor_version: u8,
    /// Accepted beyond `--max-connections`: its first request gets a `503` and the close.
    pub over_limit: bool,
}

impl ClientConn {
    pub fn new(transport: Transport, over_limit: bool) -> ClientConn {
        ClientConn {
            transport,
            peer_cn: None,
            inbuf: Vec::new(),
            head_scanned: 0,
            out: OutQueue::default(),
            phase: Phase::Handshake,
            phase_since: Instant::now(),
            armed: None,
            minor_version: 1,
            over_limit,
        }
    }

    pub fn peer_cn(&self) -> Option<&str> {
        self.peer_cn.as_deref()
    }

    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_since = Instant::now();
    }

    /// Takes the phase out to work on it, leaving `Taken`; the caller puts one back with
    /// `set_phase` (a new phase) or `restore_phase` (the same phase, its clock running on).
    pub fn take_phase(&mut self) -> Phase {
        std::mem::replace(&mut self.phase, Phase::Taken)
    }

    pub fn restore_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Ready for the next request on this connection.
    pub fn await_next_request(&mut self) {
        self.head_scanned = 0;
        self.set_phase(Phase::ReadHead { started: None });
    }

    /// Queues a complete local response and moves on: the next request, or the close.
    pub fn answer(&mut self, response: &LocalResponse, head_only: bool) {
        self.out.push_owned(response.to_bytes(self.minor_version, head_only));
        if response.close {
            self.set_phase(Phase::Closing);
        } else {
            self.await_next_request();
        }
    }

    /// Moves queued output into the socket.
    pub fn flush(&mut self) -> Result<usize, TransportError> {
        self.out.drain_into(&mut self.transport)
    }

    /// A long-running stream (watch, tunnel) is open on this connection.
    pub fn is_watching(&self) -> bool {
        match &self.phase {
            Phase::Exchange(exchange) => exchange.is_long_running(),
            Phase::OfflineWatch(_) | Phase::Tunnel(_) => true,
            _ => false,
        }
    }

    /// Between requests (or not yet speaking HTTP): closing it loses nothing.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Handshake | Phase::ReadHead { started: None })
    }

    /// When the current phase gives up (None: never, the peer decides).
    pub fn deadline(&self, config: &Config) -> Option<Instant> {
        let timeouts = &config.client_timeouts;
        match &self.phase {
            Phase::Handshake => Some(self.phase_since + timeouts.handshake),
            Phase::ReadHead { started: Some(started) } => Some(*started + timeouts.read_header),
            Phase::ReadHead { started: None } => Some(self.phase_since + timeouts.idle),
            Phase::Exchange(exchange) => exchange.deadline(config),
            Phase::AwaitCache(_) => Some(self.phase_since + CACHE_LOOKUP_TIMEOUT),
            Phase::AwaitVerdict { until, .. } => Some(*until),
            Phase::ReadBody(_) => Some(self.phase_since + timeouts.read_header),
            Phase::OfflineWatch(watch) => Some(watch.deadline()),
            Phase::Tunnel(_) | Phase::Taken => None,
            Phase::Closing => Some(self.phase_since + CLOSING_TIMEOUT),
            Phase::Lingering { .. } => Some(self.phase_since + LINGER_TIMEOUT),
        }
    }

    pub fn step_handshake(&mut self) -> Step {
        if let Err(e) = self.transport.drive() {
            log::debug!("client handshake failed: {e}");
            return Step::Close;
        }
        if self.transport.is_handshaking() {
            return if self.transport.peer_closed() { Step::Close } else { Step::Wait };
        }
        self.learn_peer_name();
        self.await_next_request();
        Step::Again
    }

    /// Reads until a whole request head is buffered. The previous response goes out
    /// first: pipelined requests must not grow memory.
    pub fn step_read_head(&mut self, scratch: &mut [u8]) -> HeadRead {
        if let Err(e) = self.flush() {
            log::debug!("client write failed: {e}");
            return HeadRead::Step(Step::Close);
        }
        if !self.out.is_empty() {
            return HeadRead::Step(Step::Wait);
        }
        if self.head_may_be_complete() {
            match http1::parse_request(&self.inbuf) {
                Ok(Some((head, length))) => {
                    self.inbuf.drain(..length);
                    self.head_scanned = 0;
                    self.minor_version = head.minor_version;
                    return HeadRead::Request(head);
                }
                Ok(None) => self.head_scanned = self.inbuf.len(),
                Err(e) => return HeadRead::Malformed(e),
            }
        }
        match self.transport.read_plain(scratch) {
            Ok(ReadOutcome::Data(n)) => {
                if let Phase::ReadHead { started: started @ None } = &mut self.phase {
                    *started = Some(Instant::now());
                }
                self.inbuf.extend_from_slice(&scratch[..n]);
                HeadRead::Step(Step::Again)
            }
            Ok(ReadOutcome::WouldBlock) => HeadRead::Step(Step::Wait),
            Ok(ReadOutcome::Eof) => HeadRead::Step(Step::Close),
            Err(e) => {
                log::debug!("client read failed: {e}");
                HeadRead::Step(Step::Close)
            }
        }
    }

    /// Whether parsing `inbuf` may find more than last time: new bytes, and either the first
    /// ones (a bad request line is refused at once), a newline among them, or the size limit.
    fn head_may_be_complete(&self) -> bool {
        let new = self.inbuf.get(self.head_scanned..).unwrap_or_default();
        !new.is_empty()
            && (self.head_scanned == 0
                || new.contains(&b'\n')
                || self.inbuf.len() >= http1::MAX_HEAD_BYTES)
    }

    /// Reads until `length` body bytes are in `inbuf`; `None` once they are.
    pub fn step_read_body(&mut self, length: usize, scratch: &mut [u8]) -> Option<Step> {
        if self.inbuf.len() >= length {
            return None;
        }
        Some(match self.transport.read_plain(scratch) {
            Ok(ReadOutcome::Data(n)) => {
                self.inbuf.extend_from_slice(&scratch[..n]);
                Step::Again
            }
            Ok(ReadOutcome::WouldBlock) => Step::Wait,
            Ok(ReadOutcome::Eof) => Step::Close,
            Err(e) => {
                log::debug!("client read failed: {e}");
                Step::Close
            }
        })
    }

    /// While a cache lookup is in flight: only output moves.
    pub fn step_flush_only(&mut self) -> Step {
        match self.flush() {
            Ok(_) => Step::Wait,
            Err(_) => Step::Close,
        }
    }

    /// Flushes what is left, then lingers.
    pub fn step_closing(&mut self) -> Step {
        if self.flush().is_err() {
            return Step::Close;
        }
        if self.out.is_empty() {
            self.transport.send_close_notify();
            self.set_phase(Phase::Lingering { write_shut: false });
            return Step::Again;
        }
        Step::Wait
    }

    /// Sends what is left of the close_notify, shuts our side, and drops whatever the
    /// client still sends until it closes too.
    pub fn step_lingering(&mut self, scratch: &mut [u8]) -> Step {
        if self.transport.flush().is_err() {
            return Step::Close;
        }
        if let Phase::Lingering { write_shut: write_shut @ false } = &mut self.phase
            && self.transport.is_flushed()
        {
            let _ = self.transport.socket.shutdown(Shutdown::Write);
            *write_shut = true;
        }
        match self.transport.read_plain(scratch) {
            Ok(ReadOutcome::Data(_)) => Step::Again,
            Ok(ReadOutcome::WouldBlock) => Step::Wait,
            Ok(ReadOutcome::Eof) | Err(_) => Step::Close,
        }
    }

    /// Reads the verified client certificate's Common Name after the handshake.
    fn learn_peer_name(&mut self) {
        self.peer_cn = self
            .transport
            .tls()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::x509::summarize(leaf).ok())
            .and_then(|summary| summary.common_name);
    }
}

/// The answer to a head that cannot be parsed: `431` when it is too large, else `400`.
pub fn malformed_head_response(error: &HttpError) -> LocalResponse {
    let too_large = matches!(error, HttpError::HeadTooLarge | HttpError::TooManyHeaders);
    let code = if too_large { 431 } else { 400 };
    LocalResponse::status(code, "BadRequest", &error.to_string()).closing()
}
