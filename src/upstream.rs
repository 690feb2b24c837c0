//! Connections to the cloud kube-apiserver: non-blocking connect, one rustls client
//! session each, and a pool of idle keep-alive connections per identity sized by demand.
//!
//! A pooled connection belongs to the identity (and its generation) it was opened
//! with: after a certificate rotation, older connections are closed, not reused.
//!
//! The pool keeps, per identity, as many idle connections as were busy at once at the
//! peak of the last one to two minutes (at most `--max-idle-upstream`): steady load finds
//! a connection for every request, and a burst's extra connections idle out (90 s) or
//! are closed when they come back to a pool larger than recent demand.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;

use crate::tls::Identity;
use crate::transport::{ReadOutcome, Transport};

/// How long a peak of concurrent requests keeps its connections wanted: demand is the
/// larger of this window's peak and the previous one's.
const DEMAND_WINDOW: Duration = Duration::from_secs(60);

pub struct UpstreamConn {
    pub transport: Transport,
    pub identity: Arc<Identity>,
    connected: bool,
    /// Taken from the pool: the cloud may have closed it meanwhile.
    pub reused: bool,
    pub idle_since: Instant,
    /// The TLS handshake's kind was counted (once per connection).
    handshake_counted: bool,
}

impl UpstreamConn {
    /// Starts a non-blocking connect; the TLS handshake runs as the socket allows.
    pub fn connect(
        addr: SocketAddr,
        identity: Arc<Identity>,
        server_name: ServerName<'static>,
    ) -> io::Result<UpstreamConn> {
        let socket = TcpStream::connect(addr)?;
        socket.set_nodelay(true)?;
        let tls = rustls::ClientConnection::new(identity.config.clone(), server_name)
            .map_err(io::Error::other)?;
        Ok(UpstreamConn {
            transport: Transport::new(socket, tls.into()),
            identity,
            connected: false,
            reused: false,
            idle_since: Instant::now(),
            handshake_counted: false,
        })
    }

    /// Whether the TCP connect finished; `Err` when it failed.
    pub fn poll_connected(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if let Some(error) = self.transport.socket.take_error()? {
            return Err(error);
        }
        match self.transport.socket.peer_addr() {
            Ok(_) => {
                self.connected = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether an idle connection is still usable: reading it finds nothing (TLS
    /// housekeeping such as session tickets is absorbed) — no plaintext, no close.
    /// Checked before reuse too, since the cloud's close may not have been polled yet.
    pub fn still_idle(&mut self) -> bool {
        self.transport.mark_ready(true, false);
        matches!(self.transport.read_plain(&mut [0u8; 1]), Ok(ReadOutcome::WouldBlock))
    }

    /// TCP and TLS are both up.
    pub fn is_established(&self) -> bool {
        self.connected && !self.transport.is_handshaking()
    }

    /// Whether the TLS handshake resumed a session: `Some` once per connection, after
    /// the handshake finished (for counting resumptions).
    pub fn take_handshake_resumed(&mut self) -> Option<bool> {
        if self.handshake_counted || !self.is_established() {
            return None;
        }
        let kind = self.transport.tls().handshake_kind()?;
        self.handshake_counted = true;
        Some(kind == HandshakeKind::Resumed)
    }
}

/// One identity's connections: idle slots (most recent last), how many are open in all,
/// and the peaks of busy connections that size the idle set.
#[derive(Default)]
struct IdentityPool {
    idle: Vec<usize>,
    open: usize,
    peak: usize,
    previous_peak: usize,
    window_start: Option<Instant>,
}

impl IdentityPool {
    fn busy(&self) -> usize {
        self.open.saturating_sub(self.idle.len())
    }

    /// Starts a new demand window when the current one is over; a window with no
    /// traffic at all forgets the older peak too.
    fn roll(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= DEMAND_WINDOW {
            self.previous_peak = if elapsed < 2 * DEMAND_WINDOW { self.peak } else { 0 };
            self.peak = self.busy();
            self.window_start = Some(now);
        }
    }

    /// Idle connections worth keeping: what recent concurrency needed, within `cap`.
    fn wanted(&self, cap: usize) -> usize {
        self.peak.max(self.previous_peak).min(cap)
    }
}

/// Connections to the cloud by identity name; values are slab slots.
pub struct Pool {
    identities: HashMap<String, IdentityPool>,
    /// `--max-idle-upstream`.
    max_idle: usize,
}

impl Pool {
    pub fn new(max_idle: usize) -> Pool {
        Pool { identities: HashMap::new(), max_idle }
    }

    /// Runs `f` on the pool of `identity`, creating it on first use (no key allocated per
    /// request otherwise).
    fn with<R>(&mut self, identity: &str, f: impl FnOnce(&mut IdentityPool) -> R) -> R {
        if let Some(pool) = self.identities.get_mut(identity) {
            return f(pool);
        }
        f(self.identities.entry(identity.to_string()).or_default())
    }

    /// A connection for `identity` was opened.
    pub fn opened(&mut self, identity: &str) {
        self.with(identity, |pool| pool.open += 1);
    }

    /// A connection for `identity` was closed (busy or idle; idle ones are `remove`d first).
    pub fn closed(&mut self, identity: &str) {
        if let Some(pool) = self.identities.get_mut(identity) {
            pool.open = pool.open.saturating_sub(1);
        }
    }

    /// Takes the most recently idled slot for `identity`, if any.
    pub fn take(&mut self, identity: &str) -> Option<usize> {
        self.identities.get_mut(identity).and_then(|pool| pool.idle.pop())
    }

    /// Records how many connections of `identity` are busy now (after a checkout).
    pub fn note_busy(&mut self, identity: &str, now: Instant) {
        self.with(identity, |pool| {
            pool.roll(now);
            pool.peak = pool.peak.max(pool.busy());
        });
    }

    /// Offers a busy slot back as idle; false when recent demand needs no more idle ones.
    pub fn offer(&mut self, identity: &str, slot: usize, now: Instant) -> bool {
        let cap = self.max_idle;
        self.with(identity, |pool| {
            pool.roll(now);
            if pool.idle.len() >= pool.wanted(cap) {
                return false;
            }
            pool.idle.push(slot);
            true
        })
    }

    /// Forgets a slot (closed while idle).
    pub fn remove(&mut self, slot: usize) {
        for pool in self.identities.values_mut() {
            pool.idle.retain(|&s| s != slot);
        }
    }

    /// Every idle slot, for retiring after a certificate change.
    pub fn drain_all(&mut self) -> Vec<usize> {
        self.identities.values_mut().flat_map(|pool| pool.idle.drain(..)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks out `n` connections of "kubelet" at once (from the pool first), returning
    /// the slots and how many had to be opened.
    fn burst(
        pool: &mut Pool,
        next_slot: &mut usize,
        n: usize,
        now: Instant,
    ) -> (Vec<usize>, usize) {
        let mut slots = Vec::new();
        let mut opened = 0;
        for _ in 0..n {
            let slot = pool.take("kubelet").unwrap_or_else(|| {
                pool.opened("kubelet");
                opened += 1;
                *next_slot += 1;
                *next_slot
            });
            pool.note_busy("kubelet", now);
            slots.push(slot);
        }
        (slots, opened)
    }

    /// Gives the slots back; those the pool refuses are closed. Returns how many closed.
    fn release(pool: &mut Pool, slots: Vec<usize>, now: Instant) -> usize {
        let mut closed = 0;
        for slot in slots {
            if !pool.offer("kubelet", slot, now) {
                pool.closed("kubelet");
                closed += 1;
            }
        }
        closed
    }

    #[test]
    fn steady_concurrency_past_eight_opens_no_new_connections() {
        let mut pool = Pool::new(64);
        let (mut next, now) = (0, Instant::now());
        let (slots, opened) = burst(&mut pool, &mut next, 40, now);
        assert_eq!(opened, 40);
        assert_eq!(release(&mut pool, slots, now), 0, "all 40 are wanted again");
        for round in 1..=5 {
            let later = now + Duration::from_secs(round);
            let (slots, opened) = burst(&mut pool, &mut next, 40, later);
            assert_eq!(opened, 0, "round {round} reuses the pool");
            assert_eq!(release(&mut pool, slots, later), 0);
        }
    }

    #[test]
    fn idle_connections_are_capped_by_the_flag() {
        let mut pool = Pool::new(16);
        let (mut next, now) = (0, Instant::now());
        let (slots, _) = burst(&mut pool, &mut next, 40, now);
        assert_eq!(release(&mut pool, slots, now), 24);
        let (_, opened) = burst(&mut pool, &mut next, 40, now);
        assert_eq!(opened, 24, "16 came from the pool");
    }

    #[test]
    fn a_past_burst_stops_being_kept_after_two_quiet_windows() {
        let mut pool = Pool::new(64);
        let (mut next, now) = (0, Instant::now());
        let (slots, _) = burst(&mut pool, &mut next, 30, now);
        release(&mut pool, slots, now);
        // One request at a time for a while: the burst's peak is still remembered...
        let soon = now + DEMAND_WINDOW + Duration::from_secs(1);
        let (slots, _) = burst(&mut pool, &mut next, 1, soon);
        assert_eq!(release(&mut pool, slots, soon), 0);
        // ...and forgotten once a whole window passed with one busy at most: the idle
        // set (left to the idle timeout) already covers that, so returning ones close.
        let later = soon + DEMAND_WINDOW + Duration::from_secs(1);
        let (slots, opened) = burst(&mut pool, &mut next, 2, later);
        assert_eq!(opened, 0);
        assert_eq!(release(&mut pool, slots, later), 2);
    }

    #[test]
    fn identities_have_their_own_pools_and_closing_idle_slots_is_forgotten() {
        let mut pool = Pool::new(64);
        let now = Instant::now();
        pool.opened("kubelet");
        pool.note_busy("kubelet", now);
        assert!(pool.offer("kubelet", 7, now));
        assert_eq!(pool.take("kube-proxy"), None);
        pool.remove(7);
        pool.closed("kubelet");
        assert_eq!(pool.take("kubelet"), None);
        pool.opened("kube-proxy");
        pool.note_busy("kube-proxy", now);
        assert!(pool.offer("kube-proxy", 9, now));
        assert_eq!(pool.drain_all(), vec![9]);
    }
}
