//! The event loop: one `mio::Poll`, the slab of connections, timers, and the glue
//! to the helper threads (cache, cloud prober, certificate reloader) whose messages
//! arrive through one `mio::Waker`.
//!
//! Every connection has one slab slot and one token. A client connection owns its
//! upstream connection while an exchange runs; the upstream's slot then holds a
//! `BusyUpstream` marker that routes its readiness to the client. Idle upstream
//! connections sit in the slab and in the per-identity pool.
//!
//! What a request does is decided in `start_request`; protocol work lives in
//! `client.rs` (phases), `proxy.rs` (exchanges) and `offline.rs` (cache answers).

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ServerConfig;
use rustls::pki_types::ServerName;

use crate::cache::{self, CacheHandle, Classified, Lookup};
use crate::certs::{CertUpdate, Reloader};
use crate::client::{ClientConn, Phase, Tunnel};
use crate::config::Config;
use crate::health::{HealthReport, Prober};
use crate::http1::{self, RequestHead};
use crate::metrics::{Metrics, OpenWatch, Source};
use crate::proxy::{CopyBudget, Exchange, PumpOutcome, Tee};
use crate::sdnotify;
use crate::signals::{Signal, Signals};
use crate::slab::Slab;
use crate::status::LocalResponse;
use crate::timer::Timers;
use crate::tls::{Identity, IdentitySet};
use crate::transport::{ReadOutcome, Transport};
use crate::upstream::{Pool, UpstreamConn};

pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);
const SIGNAL_TOKEN: Token = Token(usize::MAX - 2);
/// Listener i has token i; connection slot s has token CONN_BASE + s.
const CONN_BASE: usize = 1024;

const CACHE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection keeps reading what the client still sends.
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections past `--max-connections` that still get a `503` answer rather than a close.
const OVER_LIMIT_ANSWERED: usize = 64;
/// Steps one connection may take before others get a turn.
const MAX_STEPS_PER_TURN: usize = 256;
const SCRATCH_BYTES: usize = 16 * 1024;

pub enum Conn {
    Client(Box<ClientConn>),
    IdleUpstream(Box<UpstreamConn>),
    /// An upstream connection owned by the exchange of client `client`.
    BusyUpstream {
        client: usize,
    },
}

/// What a phase step asks of the loop.
pub enum Step {
    Again,
    Wait,
    Close,
}

/// Messages from helper threads, all delivered through the waker.
pub struct Inbox {
    pub health: Receiver<HealthReport>,
    pub certs: Receiver<CertUpdate>,
}

/// The cloud apiserver as the reactor sees it.
pub struct Cloud {
    pub up: bool,
    /// A fresh connection timed out: until the prober's next report (which a kick
    /// always brings), reads go to the cache instead of waiting `--timeout` each.
    pub suspect: bool,
    pub addr: Option<SocketAddr>,
    pub server_name: ServerName<'static>,
    pub host_header: String,
    pub prober: Prober,
}

pub struct Reactor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    pub(crate) conns: Slab<Conn>,
    timers: Timers,
    pool: Pool,
    pub(crate) identities: IdentitySet,
    server_config: Arc<ServerConfig>,
    pub(crate) cache: Option<CacheHandle>,
    /// Cache lookups in flight: request id → client slot.
    pub(crate) lookups: HashMap<u64, usize>,
    next_id: u64,
    pub(crate) cloud: Cloud,
    inbox: Inbox,
    signals: Signals,
    reloader: Reloader,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: Arc<Config>,
    scratch: Vec<u8>,
    copy_budget: CopyBudget,
    /// Slots that stopped only to let others run; they continue without an event.
    ready: Vec<usize>,
    shutdown_deadline: Option<Instant>,
    clients: usize,
}

pub struct ReactorParts {
    pub poll: Poll,
    pub listeners: Vec<TcpListener>,
    pub identities: IdentitySet,
    pub server_config: Arc<ServerConfig>,
    pub cache: Option<CacheHandle>,
    pub cloud: Cloud,
    pub inbox: Inbox,
    pub signals: Signals,
    pub reloader: Reloader,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
}

/// Creates the poll and its waker before anything that needs to wake it exists.
pub fn new_poll() -> io::Result<(Poll, Arc<Waker>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
    Ok((poll, waker))
}

impl Reactor {
    pub fn new(parts: ReactorParts) -> io::Result<Reactor> {
        let mut listeners = parts.listeners;
        for (index, listener) in listeners.iter_mut().enumerate() {
            parts.poll.registry().register(listener, Token(index), Interest::READABLE)?;
        }
        parts.signals.register(parts.poll.registry(), SIGNAL_TOKEN)?;
        Ok(Reactor {
            poll: parts.poll,
            listeners,
            conns: Slab::default(),
            timers: Timers::default(),
            pool: Pool::default(),
            identities: parts.identities,
            server_config: parts.server_config,
            cache: parts.cache,
            lookups: HashMap::new(),
            next_id: 1,
            cloud: parts.cloud,
            inbox: parts.inbox,
            signals: parts.signals,
            reloader: parts.reloader,
            metrics: parts.metrics,
            config: parts.config,
            scratch: vec![0; SCRATCH_BYTES],
            copy_budget: CopyBudget::default(),
            ready: Vec::new(),
            shutdown_deadline: None,
            clients: 0,
        })
    }

    /// Runs until SIGTERM/SIGINT and the graceful drain that follows.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let timeout = if self.ready.is_empty() {
                self.timers.poll_timeout(now)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_write_closed() || event.is_error();
                self.dispatch(event.token(), readable, writable);
            }
            for slot in std::mem::take(&mut self.ready) {
                self.drive_client(slot);
            }
            self.expire_timers();
            self.conns.recycle();
            if self.shutdown_finished() {
                log::info!("shutdown complete");
                if let Some(cache) = self.cache.take() {
                    cache.shutdown();
                }
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool) {
        match token {
            WAKER_TOKEN => self.on_wake(),
            SIGNAL_TOKEN => self.on_signals(),
            Token(index) if index < CONN_BASE => self.accept(index),
            Token(index) => self.on_connection_event(index - CONN_BASE, readable, writable),
        }
    }

    fn on_connection_event(&mut self, slot: usize, readable: bool, writable: bool) {
        match self.conns.get_mut(slot) {
            Some(Conn::Client(client)) => {
                client.transport.mark_ready(readable, writable);
                self.drive_client(slot);
            }
            Some(Conn::BusyUpstream { client }) => {
                let client_slot = *client;
                if let Some(Conn::Client(client)) = self.conns.get_mut(client_slot) {
                    match &mut client.phase {
                        Phase::Exchange(exchange) => {
                            exchange.upstream.transport.mark_ready(readable, writable)
                        }
                        Phase::Tunnel(tunnel) => {
                            tunnel.upstream.transport.mark_ready(readable, writable)
                        }
                        _ => {}
                    }
                }
                self.drive_client(client_slot);
            }
            Some(Conn::IdleUpstream(upstream)) => {
                upstream.transport.mark_ready(readable, writable);
                if readable && !upstream.still_idle() {
                    self.close_idle_upstream(slot);
                }
            }
            None => {}
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else { return };
            let (socket, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for now.
                    log::warn!("accept failed: {e}");
                    return;
                }
            };
            let over_limit = self.clients >= self.config.max_connections;
            if over_limit {
                self.metrics.rejected_connections.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "refusing connection from {peer}: {} connections open (--max-connections)",
                    self.clients
                );
            }
            // A few connections past the limit are told why (a 503 Status a client backs off
            // on); past those, a flood only costs an accept and a close, not a handshake each.
            if self.shutdown_deadline.is_some()
                || self.clients >= self.config.max_connections.saturating_add(OVER_LIMIT_ANSWERED)
            {
                drop(socket);
                continue;
            }
            if let Err(e) = self.add_client(socket, over_limit) {
                log::warn!("cannot serve connection from {peer}: {e}");
            }
        }
    }

    fn add_client(&mut self, socket: TcpStream, over_limit: bool) -> io::Result<()> {
        socket.set_nodelay(true)?;
        let tls =
            rustls::ServerConnection::new(self.server_config.clone()).map_err(io::Error::other)?;
        let mut client = ClientConn::new(Transport::new(socket, tls.into()));
        client.over_limit = over_limit;
        let slot = self.conns.insert(Conn::Client(Box::new(client)));
        let registered = match self.conns.get_mut(slot) {
            Some(Conn::Client(client)) => self.poll.registry().register(
                &mut client.transport.socket,
                Token(CONN_BASE + slot),
                Interest::READABLE | Interest::WRITABLE,
            ),
            _ => Ok(()),
        };
        if let Err(e) = registered {
            self.conns.release(slot);
            return Err(e);
        }
        self.clients += 1;
        Metrics::gauge_add(&self.metrics.open_clients, 1);
        self.arm(slot);
        Ok(())
    }

    /// Runs one client connection as far as it can go now.
    pub(crate) fn drive_client(&mut self, slot: usize) {
        let Some(conn) = self.conns.take(slot) else { return };
        let Conn::Client(mut client) = conn else {
            self.conns.put(slot, conn);
            return;
        };
        let mut close = false;
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > MAX_STEPS_PER_TURN {
                self.ready.push(slot);
                break;
            }
            match self.step(slot, &mut client) {
                Step::Again => continue,
                Step::Wait => break,
                Step::Close => {
                    close = true;
                    break;
                }
            }
        }
        if close {
            self.close_client(slot, client);
        } else {
            self.conns.put(slot, Conn::Client(client));
            self.arm(slot);
        }
    }

    fn step(&mut self, slot: usize, client: &mut ClientConn) -> Step {
        match &client.phase {
            Phase::Handshake => self.step_handshake(client),
            Phase::ReadHead { .. } => self.step_read_head(slot, client),
            Phase::Exchange(_) => self.step_exchange(slot, client),
            Phase::AwaitCache { .. } => flush_step(client),
            Phase::OfflineWatch(_) => self.step_offline_watch(client),
            Phase::Tunnel(_) => self.step_tunnel(client),
            Phase::Closing => step_closing(client),
            Phase::Lingering { .. } => step_lingering(client, &mut self.scratch),
        }
    }

    fn step_handshake(&mut self, client: &mut ClientConn) -> Step {
        if let Err(e) = client.transport.drive() {
            log::debug!("client handshake failed: {e}");
            return Step::Close;
        }
        if client.transport.is_handshaking() {
            return if client.transport.peer_closed() { Step::Close } else { Step::Wait };
        }
        client.learn_peer_name();
        client.set_phase(Phase::ReadHead { started: None });
        Step::Again
    }

    fn step_read_head(&mut self, slot: usize, client: &mut ClientConn) -> Step {
        if let Err(e) = client.flush() {
            log::debug!("client write failed: {e}");
            return Step::Close;
        }
        if !client.out.is_empty() {
            return Step::Wait; // the previous response first: pipelining must not grow memory
        }
        if !client.inbuf.is_empty() {
            match http1::parse_request(&client.inbuf) {
                Ok(Some((head, length))) => {
                    client.inbuf.drain(..length);
                    self.start_request(slot, client, head);
                    return Step::Again;
                }
                Ok(None) => {}
                Err(e) => {
                    let too_large = matches!(
                        e,
                        http1::HttpError::HeadTooLarge | http1::HttpError::TooManyHeaders
                    );
                    let code = if too_large { 431 } else { 400 };
                    let response =
                        LocalResponse::status(code, "BadRequest", &e.to_string()).closing();
                    self.respond_local(client, &response, false);
                    return Step::Again;
                }
            }
        }
        match client.transport.read_plain(&mut self.scratch) {
            Ok(ReadOutcome::Data(n)) => {
                if let Phase::ReadHead { started: started @ None } = &mut client.phase {
                    *started = Some(Instant::now());
                }
                client.inbuf.extend_from_slice(&self.scratch[..n]);
                Step::Again
            }
            Ok(ReadOutcome::WouldBlock) => Step::Wait,
            Ok(ReadOutcome::Eof) => Step::Close,
            Err(e) => {
                log::debug!("client read failed: {e}");
                Step::Close
            }
        }
    }

    /// Decides what one request becomes: an exchange with the cloud, a cache
    /// answer, or a local error.
    fn start_request(&mut self, slot: usize, client: &mut ClientConn, head: RequestHead) {
        client.minor_version = head.minor_version;
        log::debug!("{} {} (client {:?})", head.method, head.target, client.peer_cn);
        if let Err(e) = head.validate() {
            self.respond_local(client, &LocalResponse::bad_request(&e.to_string()), false);
            return;
        }
        if client.over_limit {
            let message = format!(
                "too many connections to lite-apiserver (--max-connections={})",
                self.config.max_connections
            );
            let response = LocalResponse::status(503, "ServiceUnavailable", &message).closing();
            self.respond_local(client, &response, head.method == "HEAD");
            return;
        }
        if self.shutdown_deadline.is_some() {
            let response =
                LocalResponse::cloud_unavailable("lite-apiserver is shutting down").closing();
            self.respond_local(client, &response, head.method == "HEAD");
            return;
        }
        let identity = self.identities.select(client.peer_cn.as_deref()).clone();
        let cache_identity = cache_identity(client.peer_cn.as_deref(), &identity, &head);
        let (route, accept) = self.route(&cache_identity, &head);
        let cacheable = !matches!(route, Classified::Uncacheable);
        if !self.cloud.up || (self.cloud.suspect && cacheable) {
            self.serve_offline(slot, client, head, route, "the cloud apiserver is unreachable");
            return;
        }
        let mut replace: Vec<(&str, &str)> =
            accept.as_deref().map(|a| vec![("Accept", a)]).unwrap_or_default();
        if !matches!(route, Classified::Uncacheable) {
            // The cache stores and splits plain bodies: no gzip on what it will keep.
            replace.push(("Accept-Encoding", ""));
        }
        let upstream_head = head.to_upstream_bytes(&self.cloud.host_header, &replace);
        match self.checkout_upstream(&identity, slot) {
            Ok((upstream, upstream_slot)) => {
                self.next_id += 1;
                match Exchange::new(
                    head,
                    route,
                    upstream,
                    upstream_slot,
                    upstream_head,
                    self.next_id,
                ) {
                    Ok(mut exchange) => {
                        if exchange.is_long_running() {
                            exchange.counted = Some(OpenWatch::new(&self.metrics));
                        }
                        client.set_phase(Phase::Exchange(Box::new(exchange)))
                    }
                    Err(e) => self.respond_local(
                        client,
                        &LocalResponse::bad_request(&e.to_string()),
                        false,
                    ),
                }
            }
            Err(e) => {
                self.cloud_failed(&format!("cannot connect to the cloud apiserver: {e}"));
                self.serve_offline(slot, client, head, route, "the cloud apiserver is unreachable");
            }
        }
    }

    /// Classifies a request for the cache, asking the cloud for JSON instead of
    /// protobuf on resource reads when `--modify-request-accept` is on (so the answer
    /// can be cached and kept current from watch events). Returns the Accept to send
    /// upstream when it was changed.
    fn route(&self, cache_identity: &str, head: &RequestHead) -> (Classified, Option<String>) {
        let accept = head.header_str("accept");
        let route = cache::classify(cache_identity, &head.method, &head.target, accept);
        let resource_read = match &route {
            Classified::Read(key) => key.resource() != "discovery",
            Classified::Watch(_) => true,
            Classified::Uncacheable => false,
        };
        let wants_protobuf = accept.is_some_and(|a| {
            a.contains("application/vnd.kubernetes.protobuf") && !a.contains("as=")
        });
        if self.config.modify_request_accept && resource_read && wants_protobuf {
            let json = "application/json".to_string();
            let route = cache::classify(cache_identity, &head.method, &head.target, Some(&json));
            return (route, Some(json));
        }
        (route, None)
    }

    /// A pooled connection for `identity`, or a new one.
    fn checkout_upstream(
        &mut self,
        identity: &Arc<Identity>,
        client_slot: usize,
    ) -> io::Result<(UpstreamConn, usize)> {
        while let Some(slot) = self.pool.take(&identity.name) {
            match self.conns.take(slot) {
                Some(Conn::IdleUpstream(mut upstream)) => {
                    if upstream.identity.generation != identity.generation || !upstream.still_idle()
                    {
                        self.drop_upstream(slot, *upstream);
                        continue;
                    }
                    upstream.reused = true;
                    self.conns.put(slot, Conn::BusyUpstream { client: client_slot });
                    return Ok((*upstream, slot));
                }
                Some(other) => self.conns.put(slot, other),
                None => {}
            }
        }
        self.connect_upstream(identity, client_slot)
    }

    fn connect_upstream(
        &mut self,
        identity: &Arc<Identity>,
        client_slot: usize,
    ) -> io::Result<(UpstreamConn, usize)> {
        let addr = self
            .cloud
            .addr
            .ok_or_else(|| io::Error::other("the cloud apiserver address is not resolved"))?;
        let mut upstream =
            UpstreamConn::connect(addr, identity.clone(), self.cloud.server_name.clone())?;
        let slot = self.conns.insert(Conn::BusyUpstream { client: client_slot });
        let token = Token(CONN_BASE + slot);
        if let Err(e) = self.poll.registry().register(
            &mut upstream.transport.socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.conns.release(slot);
            return Err(e);
        }
        Metrics::gauge_add(&self.metrics.open_upstreams, 1);
        Ok((upstream, slot))
    }

    fn step_exchange(&mut self, slot: usize, client: &mut ClientConn) -> Step {
        let Phase::Exchange(mut exchange) = std::mem::replace(&mut client.phase, Phase::Closing)
        else {
            return Step::Close;
        };
        let mut tee = Tee { cache: self.cache.as_ref(), budget: &mut self.copy_budget };
        let outcome = exchange.pump(client, &mut tee, &mut self.scratch);
        match outcome {
            PumpOutcome::Progress => {
                client.phase = Phase::Exchange(exchange);
                Step::Again
            }
            PumpOutcome::Wait => {
                client.phase = Phase::Exchange(exchange);
                Step::Wait
            }
            PumpOutcome::Finished { upstream_reusable, client_keep_alive } => {
                self.count_exchange(&exchange);
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                self.release_upstream(upstream_slot, upstream, upstream_reusable);
                client.set_phase(if client_keep_alive {
                    Phase::ReadHead { started: None }
                } else {
                    Phase::Closing
                });
                Step::Again
            }
            PumpOutcome::UpstreamFailed { reason, timeout } => {
                self.exchange_failed(slot, client, exchange, &reason, timeout)
            }
            PumpOutcome::Upgraded => {
                self.count_exchange(&exchange);
                let Exchange { upstream, upstream_slot, counted, .. } = *exchange;
                let counted = counted.unwrap_or_else(|| OpenWatch::new(&self.metrics));
                client.set_phase(Phase::Tunnel(Box::new(Tunnel {
                    counted,
                    upstream,
                    upstream_slot,
                    to_upstream: Default::default(),
                })));
                Step::Again
            }
            PumpOutcome::BadRequestBody(reason) if exchange.response_not_started() => {
                log::debug!("{} {}: {reason}", exchange.request.method, exchange.request.target);
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                // The cloud holds part of a body that will never end: that connection is spent.
                self.drop_upstream(upstream_slot, upstream);
                self.respond_local(client, &LocalResponse::bad_request(&reason), false);
                Step::Again
            }
            PumpOutcome::BadRequestBody(reason) | PumpOutcome::Abort(reason) => {
                log::debug!("exchange aborted: {reason}");
                exchange.abandon(&mut self.tee());
                client.phase = Phase::Exchange(exchange);
                Step::Close
            }
        }
    }

    fn tee(&mut self) -> Tee<'_> {
        Tee { cache: self.cache.as_ref(), budget: &mut self.copy_budget }
    }

    fn count_exchange(&self, exchange: &Exchange) {
        if let Some(status) = exchange.status() {
            self.metrics.count_response(Source::Upstream, status);
        }
    }

    /// The cloud failed before answering: retry a stale pooled connection once,
    /// else answer from the cache (reads) or with a `Status` (writes, bad answers).
    fn exchange_failed(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        mut exchange: Box<Exchange>,
        reason: &str,
        timeout: bool,
    ) -> Step {
        log::debug!("{} {}: {reason}", exchange.request.method, exchange.request.target);
        if exchange.can_retry() {
            let identity = exchange.upstream.identity.clone();
            if let Ok((fresh, fresh_slot)) = self.connect_upstream(&identity, slot) {
                let old_slot = exchange.upstream_slot;
                let stale = exchange.retry_on(fresh, fresh_slot);
                self.drop_upstream(old_slot, stale);
                log::debug!("pooled connection was closed by the cloud; retrying on a new one");
                client.phase = Phase::Exchange(exchange);
                return Step::Again;
            }
        }
        let Exchange { request, route, upstream, upstream_slot, .. } = *exchange;
        let reused = upstream.reused;
        self.drop_upstream(upstream_slot, upstream);
        if reason.starts_with("bad response") {
            log::warn!("{} {}: {reason}", request.method, request.target);
            let response = LocalResponse::status(502, "InternalError", reason).closing();
            self.respond_local(client, &response, request.method == "HEAD");
            return Step::Again;
        }
        if !reused || timeout {
            // A pooled connection dying says little about the cloud.
            self.cloud.suspect |= timeout && !reused;
            self.cloud_failed(reason);
        }
        let why = if timeout {
            "timed out waiting for the cloud apiserver"
        } else {
            "the cloud apiserver is unreachable"
        };
        self.serve_offline(slot, client, request, route, why);
        Step::Again
    }

    /// A request could not reach the cloud; it is answered from the cache. Whether the
    /// cloud as a whole is down is the prober's call, asked for at once: one slow
    /// connect among hundreds must not take every client offline.
    fn cloud_failed(&mut self, reason: &str) {
        self.metrics.upstream_failures.fetch_add(1, Ordering::Relaxed);
        log::debug!("request to the cloud failed: {reason}; asking the prober");
        self.cloud.prober.kick();
    }

    fn step_tunnel(&mut self, client: &mut ClientConn) -> Step {
        let Phase::Tunnel(tunnel) = &mut client.phase else { return Step::Close };
        let mut moved = false;
        // Client → cloud.
        loop {
            match tunnel.to_upstream.drain_into(&mut tunnel.upstream.transport) {
                Ok(n) => moved |= n > 0,
                Err(_) => return Step::Close,
            }
            if !tunnel.to_upstream.is_empty() {
                break;
            }
            match client.transport.read_plain(&mut self.scratch) {
                Ok(ReadOutcome::Data(n)) => tunnel.to_upstream.push(&self.scratch[..n]),
                Ok(ReadOutcome::WouldBlock) => break,
                Ok(ReadOutcome::Eof) | Err(_) => return Step::Close,
            }
        }
        // Cloud → client.
        while client.out.len() < SCRATCH_BYTES {
            match tunnel.upstream.transport.read_plain(&mut self.scratch) {
                Ok(ReadOutcome::Data(n)) => {
                    client.out.push(&self.scratch[..n]);
                    moved = true;
                }
                Ok(ReadOutcome::WouldBlock) => break,
                Ok(ReadOutcome::Eof) | Err(_) => {
                    let _ = client.flush();
                    client.set_phase(Phase::Closing);
                    return Step::Again;
                }
            }
        }
        if client.flush().is_err() {
            return Step::Close;
        }
        if moved { Step::Again } else { Step::Wait }
    }

    /// Writes a local response; the connection then reads the next request or closes.
    pub(crate) fn respond_local(
        &mut self,
        client: &mut ClientConn,
        response: &LocalResponse,
        head_only: bool,
    ) {
        let source =
            if response.extra_headers.iter().any(|(n, _)| n == crate::offline::CACHE_HEADER) {
                Source::Cache
            } else {
                Source::Local
            };
        self.metrics.count_response(source, response.status);
        client.queue_local(response, head_only);
        client.set_phase(if response.close {
            Phase::Closing
        } else {
            Phase::ReadHead { started: None }
        });
    }

    /// A new request id for a cache lookup by `slot`.
    pub(crate) fn lookup(&mut self, slot: usize, lookup: Lookup) -> Option<u64> {
        let cache = self.cache.as_ref()?;
        self.next_id += 1;
        let id = self.next_id;
        match cache.lookup(id, lookup) {
            Ok(()) => {
                self.lookups.insert(id, slot);
                Some(id)
            }
            Err(e) => {
                log::warn!("cache lookup refused: {e}");
                None
            }
        }
    }

    fn on_wake(&mut self) {
        while let Ok(report) = self.inbox.health.try_recv() {
            self.cloud.suspect = false;
            match report {
                HealthReport::Up(addr) => {
                    self.cloud.addr = Some(addr);
                    if !self.cloud.up {
                        log::info!("cloud apiserver reachable again at {addr}: proxying");
                    }
                    self.set_cloud_up(true, "");
                }
                HealthReport::Down(reason) => {
                    if self.cloud.up {
                        log::warn!("cloud apiserver unreachable, serving from cache: {reason}");
                    }
                    self.set_cloud_up(false, &reason);
                }
            }
        }
        while let Ok(update) = self.inbox.certs.try_recv() {
            self.apply_cert_update(update);
        }
        self.deliver_cache_replies();
    }

    fn set_cloud_up(&mut self, up: bool, reason: &str) {
        if self.cloud.up == up {
            return;
        }
        self.cloud.up = up;
        self.metrics.set_cloud(up, reason);
        if up {
            self.end_offline_watches();
        } else {
            self.end_proxied_watches();
        }
    }

    /// When the cloud is lost, proxied streams may hang on a dead link: close them
    /// so watch clients re-watch and get served from the cache.
    fn end_proxied_watches(&mut self) {
        for slot in self.conns.slots() {
            let streaming = matches!(self.conns.get(slot), Some(Conn::Client(c)) if matches!(&c.phase, Phase::Exchange(e) if e.is_streaming()));
            if streaming && let Some(Conn::Client(client)) = self.conns.take(slot) {
                self.close_client(slot, client);
            }
        }
    }

    fn apply_cert_update(&mut self, update: CertUpdate) {
        match update {
            CertUpdate::Identities(identities) => {
                if !Arc::ptr_eq(&identities.default.config, &self.identities.default.config) {
                    self.cloud.prober.use_config(identities.default.config.clone());
                }
                self.identities = identities;
                // Idle connections of replaced identities go now; busy ones are not
                // pooled again because their generation no longer matches.
                for slot in self.pool.drain_all() {
                    if let Some(Conn::IdleUpstream(upstream)) = self.conns.take(slot) {
                        self.drop_upstream(slot, *upstream);
                    }
                }
            }
            CertUpdate::ServerConfig(config) => self.server_config = config,
        }
    }

    fn on_signals(&mut self) {
        for signal in self.signals.drain() {
            match signal {
                Signal::Reload => self.reloader.reload_now(),
                Signal::Terminate if self.shutdown_deadline.is_none() => self.begin_shutdown(),
                Signal::Terminate => {}
            }
        }
    }

    /// Stops accepting, closes idle and streaming connections, and gives in-flight
    /// requests a few seconds to finish.
    fn begin_shutdown(&mut self) {
        sdnotify::stopping();
        log::info!(
            "shutting down: finishing in-flight requests for up to {}s",
            SHUTDOWN_GRACE.as_secs()
        );
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        for slot in self.conns.slots() {
            let idle = match self.conns.get(slot) {
                Some(Conn::Client(client)) => {
                    client.is_watching()
                        || matches!(
                            client.phase,
                            Phase::Handshake | Phase::ReadHead { started: None }
                        )
                }
                _ => false,
            };
            if idle && let Some(Conn::Client(client)) = self.conns.take(slot) {
                self.close_client(slot, client);
            }
        }
    }

    fn shutdown_finished(&self) -> bool {
        match self.shutdown_deadline {
            Some(deadline) => self.clients == 0 || Instant::now() >= deadline,
            None => false,
        }
    }

    /// Schedules the timer for a client's current deadline.
    fn arm(&mut self, slot: usize) {
        let Some(Conn::Client(client)) = self.conns.get_mut(slot) else { return };
        let Some(deadline) = client_deadline(client, &self.config) else { return };
        if client.armed.is_none_or(|armed| deadline < armed) {
            client.armed = Some(deadline);
            self.timers.schedule(deadline, slot);
        }
    }

    fn expire_timers(&mut self) {
        let now = Instant::now();
        for slot in self.timers.expired(now) {
            match self.conns.get_mut(slot) {
                Some(Conn::Client(client)) => {
                    if client.armed.is_some_and(|armed| armed <= now) {
                        client.armed = None;
                    }
                    let due = client_deadline(client, &self.config).is_some_and(|d| d <= now);
                    if due {
                        self.on_client_timeout(slot);
                    } else {
                        self.arm(slot);
                    }
                }
                Some(Conn::IdleUpstream(upstream))
                    if upstream.idle_since + UPSTREAM_IDLE_TIMEOUT <= now =>
                {
                    self.close_idle_upstream(slot);
                }
                _ => {}
            }
        }
    }

    fn on_client_timeout(&mut self, slot: usize) {
        let Some(Conn::Client(mut client)) = self.conns.take(slot) else { return };
        let keep = match std::mem::replace(&mut client.phase, Phase::Closing) {
            Phase::Exchange(exchange) if exchange.response_not_started() => {
                let reason = "timed out waiting for the cloud apiserver".to_string();
                !matches!(
                    self.exchange_failed(slot, &mut client, exchange, &reason, true),
                    Step::Close
                )
            }
            Phase::Exchange(mut exchange) => {
                log::debug!(
                    "{} {}: no progress for {}s, closing",
                    exchange.request.method,
                    exchange.request.target,
                    self.config.client_timeouts.stall.as_secs()
                );
                exchange.abandon(&mut self.tee());
                client.phase = Phase::Exchange(exchange);
                false
            }
            Phase::AwaitCache { request_id, head, .. } => {
                self.lookups.remove(&request_id);
                let response = LocalResponse::cloud_unavailable("the cache did not answer in time");
                self.respond_local(&mut client, &response, head.method == "HEAD");
                true
            }
            Phase::OfflineWatch(watch) => self.offline_watch_tick(&mut client, watch),
            other => {
                client.phase = other;
                false
            }
        };
        if keep {
            self.conns.put(slot, Conn::Client(client));
            self.drive_client(slot);
        } else {
            self.close_client(slot, client);
        }
    }

    /// Closes a client connection and whatever upstream it holds.
    pub(crate) fn close_client(&mut self, slot: usize, mut client: Box<ClientConn>) {
        match std::mem::replace(&mut client.phase, Phase::Closing) {
            Phase::Exchange(mut exchange) => {
                exchange.abandon(&mut self.tee());
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                self.drop_upstream(upstream_slot, upstream);
            }
            Phase::Tunnel(tunnel) => {
                let Tunnel { upstream, upstream_slot, .. } = *tunnel;
                self.drop_upstream(upstream_slot, upstream);
            }
            Phase::AwaitCache { request_id, .. } => {
                self.lookups.remove(&request_id);
            }
            _ => {}
        }
        let _ = client.flush();
        let _ = self.poll.registry().deregister(&mut client.transport.socket);
        self.conns.release(slot);
        self.clients = self.clients.saturating_sub(1);
        Metrics::gauge_add(&self.metrics.open_clients, -1);
    }

    /// Returns an upstream connection to the pool, or closes it.
    fn release_upstream(&mut self, slot: usize, mut upstream: UpstreamConn, reusable: bool) {
        let current = self.identities.select(Some(&upstream.identity.name)).generation
            == upstream.identity.generation;
        if reusable
            && current
            && self.shutdown_deadline.is_none()
            && self.pool.offer(&upstream.identity.name, slot)
        {
            upstream.idle_since = Instant::now();
            upstream.reused = false;
            self.timers.schedule(upstream.idle_since + UPSTREAM_IDLE_TIMEOUT, slot);
            self.conns.put(slot, Conn::IdleUpstream(Box::new(upstream)));
        } else {
            self.drop_upstream(slot, upstream);
        }
    }

    fn close_idle_upstream(&mut self, slot: usize) {
        if let Some(Conn::IdleUpstream(upstream)) = self.conns.take(slot) {
            self.pool.remove(slot);
            self.drop_upstream(slot, *upstream);
        }
    }

    fn drop_upstream(&mut self, slot: usize, mut upstream: UpstreamConn) {
        upstream.transport.send_close_notify();
        let _ = self.poll.registry().deregister(&mut upstream.transport.socket);
        self.conns.release(slot);
        Metrics::gauge_add(&self.metrics.open_upstreams, -1);
    }
}

/// The identity a client's cache entries are filed under. A configured CN is the
/// strongest proof of who is asking; then a bearer token (hashed, never stored in
/// clear); then any verified CN; else anonymous. Never the User-Agent.
fn cache_identity(peer_cn: Option<&str>, identity: &Identity, head: &RequestHead) -> String {
    if !identity.name.is_empty() {
        return format!("cn:{}", identity.name);
    }
    let token =
        head.header_str("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let hex: String = digest.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect();
        return format!("token:{hex}");
    }
    match peer_cn {
        Some(cn) => format!("cn:{cn}"),
        None => "anonymous".to_string(),
    }
}

/// When the client's current phase gives up (None: never, the peer decides).
fn client_deadline(client: &ClientConn, config: &Config) -> Option<Instant> {
    let timeouts = &config.client_timeouts;
    match &client.phase {
        Phase::Handshake => Some(client.phase_since + timeouts.handshake),
        Phase::ReadHead { started: Some(started) } => Some(*started + timeouts.read_header),
        Phase::ReadHead { started: None } => Some(client.phase_since + timeouts.idle),
        Phase::Exchange(exchange) if !exchange.upstream.is_established() => {
            Some(exchange.started + config.timeout)
        }
        Phase::Exchange(exchange) if exchange.is_long_running() => None,
        Phase::Exchange(exchange) => Some(exchange.last_activity + timeouts.stall),
        Phase::AwaitCache { .. } => Some(client.phase_since + CACHE_LOOKUP_TIMEOUT),
        Phase::OfflineWatch(watch) => {
            Some(watch.next_bookmark.map_or(watch.ends_at, |b| b.min(watch.ends_at)))
        }
        Phase::Tunnel(_) => None,
        Phase::Closing => Some(client.phase_since + CLOSING_TIMEOUT),
        Phase::Lingering { .. } => Some(client.phase_since + LINGER_TIMEOUT),
    }
}

fn flush_step(client: &mut ClientConn) -> Step {
    match client.flush() {
        Ok(_) => Step::Wait,
        Err(_) => Step::Close,
    }
}

/// Flushes what is left, then closes.
fn step_closing(client: &mut ClientConn) -> Step {
    if client.flush().is_err() {
        return Step::Close;
    }
    if client.out.is_empty() {
        client.transport.send_close_notify();
        client.set_phase(Phase::Lingering { write_shut: false });
        return Step::Again;
    }
    Step::Wait
}

/// Sends what is left of the close_notify, shuts our side, and drops whatever the client
/// still sends until it closes too.
fn step_lingering(client: &mut ClientConn, scratch: &mut [u8]) -> Step {
    if client.transport.flush().is_err() {
        return Step::Close;
    }
    if let Phase::Lingering { write_shut: write_shut @ false } = &mut client.phase
        && client.transport.is_flushed()
    {
        let _ = client.transport.socket.shutdown(Shutdown::Write);
        *write_shut = true;
    }
    match client.transport.read_plain(scratch) {
        Ok(ReadOutcome::Data(_)) => Step::Again,
        Ok(ReadOutcome::WouldBlock) => Step::Wait,
        Ok(ReadOutcome::Eof) | Err(_) => Step::Close,
    }
}
