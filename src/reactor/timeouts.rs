//! Deadlines: a client connection's timer is armed for its phase's deadline
//! (`ClientConn::deadline`), and what a passed deadline means depends on the phase — an
//! answer from the cache, a BOOKMARK, the end of a watch, or the close.

use std::time::Instant;

use super::{Conn, Reactor, UPSTREAM_IDLE_TIMEOUT};
use crate::client::{Phase, Step};
use crate::metrics::Source;
use crate::offline_watch::{self, Tick};
use crate::proxy::UpstreamFailure;
use crate::status::LocalResponse;

impl Reactor {
    /// Schedules the timer for a client's current deadline.
    pub(super) fn arm(&mut self, slot: usize) {
        let Some(Conn::Client(client)) = self.conns.get_mut(slot) else { return };
        let Some(deadline) = client.deadline(&self.config) else { return };
        if client.armed.is_none_or(|armed| deadline < armed) {
            client.armed = Some(deadline);
            self.timers.schedule(deadline, slot);
        }
    }

    pub(super) fn expire_timers(&mut self) {
        let now = Instant::now();
        for slot in self.timers.expired(now) {
            match self.conns.get_mut(slot) {
                Some(Conn::Client(client)) => {
                    if client.armed.is_some_and(|armed| armed <= now) {
                        client.armed = None;
                    }
                    if client.deadline(&self.config).is_some_and(|d| d <= now) {
                        self.on_client_timeout(slot, now);
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

    /// A client's deadline passed: what that means depends on its phase.
    pub(super) fn on_client_timeout(&mut self, slot: usize, now: Instant) {
        let Some(Conn::Client(mut client)) = self.conns.take(slot) else { return };
        let keep = match client.take_phase() {
            Phase::Exchange(exchange) if exchange.response_not_started() => {
                let failure = UpstreamFailure::TimedOut;
                self.exchange_failed(slot, &mut client, exchange, failure) != Step::Close
            }
            Phase::Exchange(mut exchange) => {
                let stall = self.config.client_timeouts.stall.as_secs();
                let request = &exchange.request;
                log::debug!(
                    "{} {}: no progress for {stall}s, closing",
                    request.method,
                    request.target
                );
                exchange.abandon(&mut self.tee());
                client.restore_phase(Phase::Exchange(exchange));
                false
            }
            Phase::AwaitCache(waiting) => {
                self.lookups.remove(&waiting.request_id);
                let response = LocalResponse::cloud_unavailable("the cache did not answer in time");
                let head_only = waiting.head.method == "HEAD";
                self.respond_local(&mut client, &response, Source::Local, head_only);
                true
            }
            Phase::AwaitVerdict { head, .. } => {
                self.start_request(slot, &mut client, *head);
                true
            }
            Phase::OfflineWatch(mut watch) => {
                match watch.tick(&mut client, now) {
                    Tick::Continues => client.restore_phase(Phase::OfflineWatch(watch)),
                    Tick::Ended => offline_watch::finish(&mut client),
                }
                true
            }
            other => {
                client.restore_phase(other);
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
}
