//! The reactor's answer to the cloud changing: when it is declared down, streams relayed
//! from it end (watches cleanly) and requests still waiting on it are answered at once;
//! when it is back, offline watches end, spread over `--reconnect-spread`.

use std::time::Instant;

use super::{Conn, Reactor};
use crate::client::{ClientConn, Phase, Step};
use crate::proxy::{Exchange, UpstreamFailure};

impl Reactor {
    /// When the cloud is lost, proxied streams may hang on a dead link. Watches end
    /// cleanly (their clients re-watch and are served from the cache); other streams
    /// (followed logs, proxies) are closed.
    pub(super) fn end_proxied_watches(&mut self) {
        let streaming = |c: &ClientConn| matches!(&c.phase, Phase::Exchange(e) if e.is_streaming());
        for slot in self.clients_where(streaming) {
            let Some(Conn::Client(mut client)) = self.conns.take(slot) else { continue };
            let Phase::Exchange(mut exchange) = client.take_phase() else { continue };
            if !exchange.end_cleanly(&mut client, &mut self.tee()) {
                client.restore_phase(Phase::Exchange(exchange));
                self.close_client(slot, client);
                continue;
            }
            self.count_exchange(&exchange);
            let Exchange { upstream, upstream_slot, .. } = *exchange;
            self.drop_upstream(upstream_slot, upstream);
            client.await_next_request();
            self.conns.put(slot, Conn::Client(client));
            self.drive_client(slot);
        }
    }

    /// Requests still waiting on the cloud (connecting, or no answer begun) when it is
    /// declared down are answered now — from the cache, or with a `503` — rather than each
    /// waiting out its own timeout on a dead link.
    pub(super) fn stop_waiting_for_the_cloud(&mut self) {
        let waiting =
            |c: &ClientConn| matches!(&c.phase, Phase::Exchange(e) if e.response_not_started());
        for slot in self.clients_where(waiting) {
            let Some(Conn::Client(mut client)) = self.conns.take(slot) else { continue };
            let Phase::Exchange(exchange) = client.take_phase() else { continue };
            let step = self.exchange_failed(slot, &mut client, exchange, UpstreamFailure::TimedOut);
            if step == Step::Close {
                self.close_client(slot, client);
            } else {
                self.conns.put(slot, Conn::Client(client));
                self.drive_client(slot);
            }
        }
    }

    /// The cloud is back: offline watches end cleanly so their clients re-list fresh data,
    /// spread over `--reconnect-spread` so a site's nodes do not all re-watch at once.
    pub(super) fn end_offline_watches(&mut self) {
        let watching = self.clients_where(|c| matches!(c.phase, Phase::OfflineWatch(_)));
        let now = Instant::now();
        let spread = self.config.reconnect_spread;
        let count = watching.len() as u32;
        for (index, slot) in (0u32..).zip(watching) {
            let Some(Conn::Client(client)) = self.conns.get_mut(slot) else { continue };
            let Phase::OfflineWatch(watch) = &mut client.phase else { continue };
            watch.end_by(now + spread * index / count.max(1));
            client.armed = None;
            self.arm(slot);
        }
        // The first ones are due now.
        self.expire_timers();
    }
}
