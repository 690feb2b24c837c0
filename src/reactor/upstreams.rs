//! The reactor's connections to the cloud: taking one from the per-identity pool (or
//! opening one), giving it back after an exchange, and closing it; connects, failed
//! connects and resumed TLS sessions are counted so churn shows in /metrics. An idle connection
//! sits in the slab and the pool; a busy one is owned by its client's exchange while its
//! slot holds a `BusyUpstream` marker that routes readiness to that client.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::{Interest, Token};

use super::{CONN_BASE, Conn, Reactor, UPSTREAM_IDLE_TIMEOUT};
use crate::metrics::Metrics;
use crate::tls::Identity;
use crate::upstream::UpstreamConn;

impl Reactor {
    /// A pooled connection for `identity`, or a new one.
    pub(super) fn checkout_upstream(
        &mut self,
        identity: &Arc<Identity>,
        client_slot: usize,
    ) -> io::Result<(Box<UpstreamConn>, usize)> {
        while let Some(slot) = self.pool.take(&identity.name) {
            match self.conns.take(slot) {
                Some(Conn::IdleUpstream(mut upstream)) => {
                    if upstream.identity.generation != identity.generation || !upstream.still_idle()
                    {
                        self.drop_upstream(slot, upstream);
                        continue;
                    }
                    upstream.reused = true;
                    self.conns.put(slot, Conn::BusyUpstream { client: client_slot });
                    self.pool.note_busy(&identity.name, Instant::now());
                    return Ok((upstream, slot));
                }
                Some(other) => self.conns.put(slot, other),
                None => {}
            }
        }
        let connected = self.connect_upstream(identity, client_slot);
        if connected.is_ok() {
            self.pool.note_busy(&identity.name, Instant::now());
        }
        connected
    }

    pub(super) fn connect_upstream(
        &mut self,
        identity: &Arc<Identity>,
        client_slot: usize,
    ) -> io::Result<(Box<UpstreamConn>, usize)> {
        let addr = self
            .cloud
            .addr()
            .ok_or_else(|| io::Error::other("the cloud apiserver address is not resolved"))?;
        let server_name = self.cloud.server_name().clone();
        self.metrics.upstream_connects.fetch_add(1, Ordering::Relaxed);
        let mut upstream = UpstreamConn::connect(addr, identity.clone(), server_name)
            .map(Box::new)
            .inspect_err(|_| self.count_connect_failure())?;
        let slot = self.conns.insert(Conn::BusyUpstream { client: client_slot });
        let token = Token(CONN_BASE + slot);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll.registry().register(&mut upstream.transport.socket, token, interest)
        {
            self.conns.release(slot);
            self.count_connect_failure();
            return Err(e);
        }
        Metrics::gauge_add(&self.metrics.open_upstreams, 1);
        self.pool.opened(&identity.name);
        Ok((upstream, slot))
    }

    /// A connect that failed before or during its TCP and TLS handshakes.
    fn count_connect_failure(&self) {
        self.metrics.upstream_connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished handshake as resumed or full, once per connection; a connection
    /// closed before its TCP and TLS handshakes finished counts as a failed connect.
    fn count_handshake(&self, upstream: &mut UpstreamConn, closing: bool) {
        match upstream.take_handshake_resumed() {
            Some(true) => {
                self.metrics.upstream_resumed.fetch_add(1, Ordering::Relaxed);
            }
            None if closing && !upstream.is_established() => self.count_connect_failure(),
            _ => {}
        }
    }

    /// Returns an upstream connection to the pool, or closes it.
    pub(super) fn release_upstream(
        &mut self,
        slot: usize,
        mut upstream: Box<UpstreamConn>,
        reusable: bool,
    ) {
        self.count_handshake(&mut upstream, false);
        let now = Instant::now();
        let current = self.identities.select(Some(&upstream.identity.name)).generation
            == upstream.identity.generation;
        if reusable
            && current
            && self.shutdown_deadline.is_none()
            && self.pool.offer(&upstream.identity.name, slot, now)
        {
            upstream.idle_since = now;
            upstream.reused = false;
            self.timers.schedule(upstream.idle_since + UPSTREAM_IDLE_TIMEOUT, slot);
            self.conns.put(slot, Conn::IdleUpstream(upstream));
        } else {
            self.drop_upstream(slot, upstream);
        }
    }

    pub(super) fn close_idle_upstream(&mut self, slot: usize) {
        if let Some(Conn::IdleUpstream(upstream)) = self.conns.take(slot) {
            self.pool.remove(slot);
            self.drop_upstream(slot, upstream);
        }
    }

    /// Idle connections of replaced identities go now; busy ones are not pooled again
    /// because their generation no longer matches.
    pub(super) fn retire_idle_upstreams(&mut self) {
        for slot in self.pool.drain_all() {
            if let Some(Conn::IdleUpstream(upstream)) = self.conns.take(slot) {
                self.drop_upstream(slot, upstream);
            }
        }
    }

    pub(super) fn drop_upstream(&mut self, slot: usize, mut upstream: Box<UpstreamConn>) {
        self.count_handshake(&mut upstream, true);
        self.pool.closed(&upstream.identity.name);
        upstream.transport.send_close_notify();
        let _ = self.poll.registry().deregister(&mut upstream.transport.socket);
        self.conns.release(slot);
        Metrics::gauge_add(&self.metrics.open_upstreams, -1);
    }
}
