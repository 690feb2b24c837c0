//! The reactor's connections to the cloud: taking one from the per-identity pool (or
//! opening one), giving it back after an exchange, and closing it. An idle connection
//! sits in the slab and the pool; a busy one is owned by its client's exchange while its
//! slot holds a `BusyUpstream` marker that routes readiness to that client.

use std::io;
use std::sync::Arc;
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

    pub(super) fn connect_upstream(
        &mut self,
        identity: &Arc<Identity>,
        client_slot: usize,
    ) -> io::Result<(UpstreamConn, usize)> {
        let addr = self
            .cloud
            .addr()
            .ok_or_else(|| io::Error::other("the cloud apiserver address is not resolved"))?;
        let server_name = self.cloud.server_name().clone();
        let mut upstream = UpstreamConn::connect(addr, identity.clone(), server_name)?;
        let slot = self.conns.insert(Conn::BusyUpstream { client: client_slot });
        let token = Token(CONN_BASE + slot);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll.registry().register(&mut upstream.transport.socket, token, interest)
        {
            self.conns.release(slot);
            return Err(e);
        }
        Metrics::gauge_add(&self.metrics.open_upstreams, 1);
        Ok((upstream, slot))
    }

    /// Returns an upstream connection to the pool, or closes it.
    pub(super) fn release_upstream(
        &mut self,
        slot: usize,
        mut upstream: UpstreamConn,
        reusable: bool,
    ) {
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

    pub(super) fn close_idle_upstream(&mut self, slot: usize) {
        if let Some(Conn::IdleUpstream(upstream)) = self.conns.take(slot) {
            self.pool.remove(slot);
            self.drop_upstream(slot, *upstream);
        }
    }

    /// Idle connections of replaced identities go now; busy ones are not pooled again
    /// because their generation no longer matches.
    pub(super) fn retire_idle_upstreams(&mut self) {
        for slot in self.pool.drain_all() {
            if let Some(Conn::IdleUpstream(upstream)) = self.conns.take(slot) {
                self.drop_upstream(slot, *upstream);
            }
        }
    }

    pub(super) fn drop_upstream(&mut self, slot: usize, mut upstream: UpstreamConn) {
        upstream.transport.send_close_notify();
        let _ = self.poll.registry().deregister(&mut upstream.transport.socket);
        self.conns.release(slot);
        Metrics::gauge_add(&self.metrics.open_upstreams, -1);
    }
}
