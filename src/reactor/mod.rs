//! The event loop: one `mio::Poll`, the slab of connections, timers, and the glue to
//! the helper threads (cache, cloud prober, certificate reloader) whose messages arrive
//! through one `mio::Waker`; accepting, dispatching readiness to the phase that owns it,
//! signals and the graceful shutdown.
//!
//! Every connection has one slab slot and one token. A client connection owns its
//! upstream connection while an exchange runs; the upstream's slot then holds a
//! `BusyUpstream` marker that routes its readiness to the client. Idle upstream
//! connections sit in the slab and in the per-identity pool (`upstreams.rs`).
//!
//! Deadlines are handled in `timeouts.rs`, the reaction to the cloud going or coming back
//! in `cloud_changes.rs`, TokenRequests in `token_requests.rs`.
//!
//! What a request becomes is planned in `plan.rs` and carried out in `requests.rs`; each
//! phase's protocol work lives with its state: `client.rs` (handshake, head, closing),
//! `proxy.rs` (exchanges), `tunnel.rs`, `offline_watch.rs`, `offline.rs` (cache answers).

mod cloud_changes;
mod requests;
mod timeouts;
mod token_requests;
mod upstreams;

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ServerConfig;

use crate::cache::CacheHandle;
use crate::certs::{CertUpdate, Reloader};
use crate::client::{self, ClientConn, HeadRead, Phase, Step};
use crate::cloud::{Cloud, CloudChange};
use crate::config::Config;
use crate::health::{self, HealthReport};
use crate::issuer_keys::IssuerKeys;
use crate::metrics::{Metrics, Source};
use crate::offline_watch;
use crate::proxy::{CopyBudget, Exchange};
use crate::sdnotify;
use crate::signals::{Signal, Signals};
use crate::slab::Slab;
use crate::timer::Timers;
use crate::tls::IdentitySet;
use crate::token_identity::TokenVerifier;
use crate::transport::Transport;
use crate::tunnel::{Tunnel, TunnelStep};
use crate::upstream::{Pool, UpstreamConn};

pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);
const SIGNAL_TOKEN: Token = Token(usize::MAX - 2);
/// Listener i has token i; connection slot s has token CONN_BASE + s.
const CONN_BASE: usize = 1024;

const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Connections past `--max-connections` that still get a `503` answer rather than a close.
const OVER_LIMIT_ANSWERED: usize = 64;
/// Steps one connection may take before others get a turn.
const MAX_STEPS_PER_TURN: usize = 256;
const SCRATCH_BYTES: usize = 16 * 1024;

enum Conn {
    Client(Box<ClientConn>),
    IdleUpstream(Box<UpstreamConn>),
    /// An upstream connection owned by the exchange of client `client`.
    BusyUpstream {
        client: usize,
    },
}

/// Messages from helper threads, all delivered through the waker.
pub struct Inbox {
    pub health: Receiver<HealthReport>,
    pub certs: Receiver<CertUpdate>,
    pub issuer_keys: Receiver<IssuerKeys>,
}

pub struct Reactor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<Conn>,
    timers: Timers,
    pool: Pool,
    identities: IdentitySet,
    server_config: Arc<ServerConfig>,
    cache: Option<CacheHandle>,
    /// Cache lookups in flight: request id → client slot.
    lookups: HashMap<u64, usize>,
    next_id: u64,
    cloud: Cloud,
    /// Who bearer tokens speak for.
    tokens: TokenVerifier,
    inbox: Inbox,
    signals: Signals,
    reloader: Reloader,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
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
    pub tokens: TokenVerifier,
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
            pool: Pool::new(parts.config.max_idle_upstream),
            identities: parts.identities,
            server_config: parts.server_config,
            cache: parts.cache,
            lookups: HashMap::new(),
            next_id: 1,
            cloud: parts.cloud,
            tokens: parts.tokens,
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
                self.dispatch(event.token(), Readiness::of(event));
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

    fn dispatch(&mut self, token: Token, ready: Readiness) {
        match token {
            WAKER_TOKEN => self.on_wake(),
            SIGNAL_TOKEN => self.on_signals(),
            Token(index) if index < CONN_BASE => self.accept(index),
            Token(index) => self.on_connection_event(index - CONN_BASE, ready),
        }
    }

    fn on_connection_event(&mut self, slot: usize, ready: Readiness) {
        match self.conns.get_mut(slot) {
            Some(Conn::Client(client)) => {
                ready.mark(&mut client.transport);
                self.drive_client(slot);
            }
            Some(Conn::BusyUpstream { client }) => {
                let client_slot = *client;
                if let Some(Conn::Client(client)) = self.conns.get_mut(client_slot) {
                    let upstream = match &mut client.phase {
                        Phase::Exchange(exchange) => Some(&mut exchange.upstream),
                        Phase::Tunnel(tunnel) => Some(&mut tunnel.upstream),
                        _ => None,
                    };
                    if let Some(upstream) = upstream {
                        ready.mark(&mut upstream.transport);
                    }
                }
                self.drive_client(client_slot);
            }
            Some(Conn::IdleUpstream(upstream)) => {
                ready.mark(&mut upstream.transport);
                if ready.readable && !upstream.still_idle() {
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
            let limit = self.config.max_connections;
            let over_limit = self.clients >= limit;
            if over_limit {
                self.metrics.rejected_connections.fetch_add(1, Ordering::Relaxed);
                let open = self.clients;
                log::warn!("refusing connection from {peer}: {open} open (--max-connections)");
            }
            // A few connections past the limit are told why (a 503 Status a client backs off
            // on); past those, a flood only costs an accept and a close, not a handshake each.
            if self.shutdown_deadline.is_some()
                || self.clients >= limit.saturating_add(OVER_LIMIT_ANSWERED)
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
        let client = ClientConn::new(Transport::new(socket, tls.into()), over_limit);
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
    fn drive_client(&mut self, slot: usize) {
        let Some(conn) = self.conns.take(slot) else { return };
        let Conn::Client(mut client) = conn else {
            self.conns.put(slot, conn);
            return;
        };
        let mut close = false;
        for steps in 1.. {
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
            Phase::Handshake => client.step_handshake(),
            Phase::ReadHead { .. } => match client.step_read_head(&mut self.scratch) {
                HeadRead::Step(step) => step,
                HeadRead::Request(head) => {
                    self.start_request(slot, client, head);
                    Step::Again
                }
                HeadRead::Malformed(error) => {
                    let response = client::malformed_head_response(&error);
                    self.respond_local(client, &response, Source::Local, false);
                    Step::Again
                }
            },
            Phase::Exchange(_) => self.step_exchange(slot, client),
            Phase::AwaitCache(_) | Phase::AwaitVerdict { .. } => client.step_flush_only(),
            Phase::ReadBody(_) => self.step_read_body(slot, client),
            Phase::OfflineWatch(_) => offline_watch::step(client, &mut self.scratch),
            Phase::Tunnel(_) => self.step_tunnel(client),
            Phase::Closing => client.step_closing(),
            Phase::Lingering { .. } => client.step_lingering(&mut self.scratch),
            Phase::Taken => {
                log::error!("bug: a client phase was taken and never put back; closing");
                Step::Close
            }
        }
    }

    fn step_tunnel(&mut self, client: &mut ClientConn) -> Step {
        let Phase::Tunnel(mut tunnel) = client.take_phase() else { return Step::Close };
        match tunnel.step(client, &mut self.scratch) {
            TunnelStep::Step(step) => {
                client.restore_phase(Phase::Tunnel(tunnel));
                step
            }
            TunnelStep::CloudClosed => {
                let Tunnel { upstream, upstream_slot, .. } = *tunnel;
                self.drop_upstream(upstream_slot, upstream);
                client.set_phase(Phase::Closing);
                Step::Again
            }
        }
    }

    fn on_wake(&mut self) {
        let mut reported = false;
        while let Ok(report) = self.inbox.health.try_recv() {
            reported = true;
            match self.cloud.on_report(report, &self.metrics) {
                Some(CloudChange::CameBack) => self.end_offline_watches(),
                Some(CloudChange::WentAway) => {
                    self.end_proxied_watches();
                    self.stop_waiting_for_the_cloud();
                }
                None => {}
            }
        }
        if reported {
            self.plan_parked_requests();
        }
        while let Ok(keys) = self.inbox.issuer_keys.try_recv() {
            self.tokens.use_keys(keys);
        }
        while let Ok(update) = self.inbox.certs.try_recv() {
            self.apply_cert_update(update);
        }
        self.deliver_cache_replies();
    }

    /// The slots of the client connections for which `which` holds.
    fn clients_where(&self, which: impl Fn(&ClientConn) -> bool) -> Vec<usize> {
        let slots = self.conns.slots().into_iter();
        slots
            .filter(|&slot| matches!(self.conns.get(slot), Some(Conn::Client(c)) if which(c)))
            .collect()
    }

    fn apply_cert_update(&mut self, update: CertUpdate) {
        match update {
            CertUpdate::Identities(identities) => {
                let probe = health::probe_config(&identities);
                if !Arc::ptr_eq(&probe, &health::probe_config(&self.identities)) {
                    self.cloud.probe_with(probe);
                }
                self.identities = identities;
                self.retire_idle_upstreams();
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
        let grace = SHUTDOWN_GRACE.as_secs();
        log::info!("shutting down: finishing in-flight requests for up to {grace}s");
        self.shutdown_deadline = Some(Instant::now() + SHUTDOWN_GRACE);
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        for slot in self.clients_where(|c| c.is_watching() || c.is_idle()) {
            if let Some(Conn::Client(client)) = self.conns.take(slot) {
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

    /// Closes a client connection and whatever upstream it holds.
    fn close_client(&mut self, slot: usize, mut client: Box<ClientConn>) {
        match client.take_phase() {
            Phase::Exchange(mut exchange) => {
                exchange.abandon(&mut self.tee());
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                self.drop_upstream(upstream_slot, upstream);
            }
            Phase::Tunnel(tunnel) => {
                let Tunnel { upstream, upstream_slot, .. } = *tunnel;
                self.drop_upstream(upstream_slot, upstream);
            }
            Phase::AwaitCache(waiting) => {
                self.lookups.remove(&waiting.request_id);
            }
            _ => {}
        }
        let _ = client.flush();
        let _ = self.poll.registry().deregister(&mut client.transport.socket);
        self.conns.release(slot);
        self.clients = self.clients.saturating_sub(1);
        Metrics::gauge_add(&self.metrics.open_clients, -1);
    }
}

/// What one poll event says about a connection's socket.
#[derive(Clone, Copy)]
struct Readiness {
    readable: bool,
    writable: bool,
    /// The peer closed its side or the socket errored: a final state, no new edge follows.
    hung_up: bool,
}

impl Readiness {
    fn of(event: &mio::event::Event) -> Readiness {
        let hung_up = event.is_read_closed() || event.is_error();
        Readiness {
            readable: event.is_readable() || hung_up,
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            hung_up,
        }
    }

    fn mark(self, transport: &mut Transport) {
        transport.mark_ready(self.readable, self.writable);
        if self.hung_up {
            transport.mark_hung_up();
        }
    }
}
