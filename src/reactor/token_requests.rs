//! The reactor's side of a TokenRequest (issue 13): its body is read whole first
//! (`Phase::ReadBody`) so its cache key is known (token_cache.rs), then its plan is carried
//! out — proxied with its `201` answer teed to the cache (proxy.rs), or, while the cloud
//! cannot be asked or gave no answer, answered from the cache with the token the cloud
//! issued.
//!
//! ```text
//! head ─► plan ─► ReadBody ─► TokenPending ─┬─ Proxy ─► Exchange (201 teed) ─┬─ Finished
//!                     │                     │                               └─ failed ─┐
//!                     └─ 413 / 400          └─ FromCache ─► lookup ◄────────────────────┘
//!                                                             └─► 201 (cached token) | 503
//! ```

use super::Reactor;
use crate::cache::{Classified, Reply};
use crate::client::{AwaitCache, ClientConn, OnMiss, Phase, ReadBody, Step};
use crate::http1::RequestHead;
use crate::metrics::Source;
use crate::plan::{self, CloudVerdict, Plan, ProxyPlan};
use crate::status::LocalResponse;
use crate::token_cache::TokenPending;

impl Reactor {
    /// Reads a TokenRequest's body (`length` bytes, or the `413` when too large) before
    /// carrying out `plan`.
    pub(super) fn read_token_body(
        &mut self,
        client: &mut ClientConn,
        head: RequestHead,
        plan: Plan,
        length: Result<usize, LocalResponse>,
    ) {
        match length {
            Ok(length) => {
                let reading = ReadBody { head, plan, length };
                client.set_phase(Phase::ReadBody(Box::new(reading)));
            }
            Err(too_large) => self.respond_local(client, &too_large, Source::Local, false),
        }
    }

    pub(super) fn step_read_body(&mut self, slot: usize, client: &mut ClientConn) -> Step {
        let Phase::ReadBody(reading) = &client.phase else { return Step::Close };
        if let Some(step) = client.step_read_body(reading.length, &mut self.scratch) {
            return step;
        }
        let Phase::ReadBody(reading) = client.take_phase() else { return Step::Close };
        let ReadBody { head, plan, length } = *reading;
        self.token_body_read(slot, client, head, plan, length);
        Step::Again
    }

    /// The whole body is in `inbuf`: its key decides what is stored or looked up.
    fn token_body_read(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        plan: Plan,
        length: usize,
    ) {
        let identity = &self.identities.select(client.peer_cn()).name;
        let cache_identity = plan::cache_identity(client.peer_cn(), identity, &head);
        let token = match TokenPending::read(&head, &cache_identity, &client.inbuf[..length]) {
            Ok(token) => token.map(Box::new),
            Err(malformed) => {
                client.inbuf.drain(..length);
                log::debug!("{} {}: malformed TokenRequest body", head.method, head.path());
                self.respond_local(client, &malformed, Source::Local, false);
                return;
            }
        };
        match plan {
            // Before the first probe, or while a timeout awaits the prober, the cached token
            // is the one the cloud issued: a node rebooted on a cut link must not wait
            // `--timeout` to start its pods. A miss still asks the cloud.
            Plan::Proxy(proxy) if self.cloud.verdict() != CloudVerdict::Up => match token {
                Some(token) => self.token_cache_first(slot, client, head, proxy, token),
                None => self.proxy_request(slot, client, head, proxy, None),
            },
            Plan::Proxy(proxy) => self.proxy_request(slot, client, head, proxy, token),
            Plan::FromCache { route, .. } => {
                self.serve_offline_or_token(slot, client, head, route, token, OnMiss::CloudDown);
            }
            // Not planned this way by start_request (it parks before reading the body); if
            // it were, the body stays in `inbuf` for the plan made after the verdict.
            Plan::AwaitVerdict => {
                let until = self.cloud.first_verdict_due();
                client.set_phase(Phase::AwaitVerdict { head: Box::new(head), until });
            }
            // Not deferred by start_request; kept whole for a plan that might be.
            Plan::Answer(response) => {
                client.inbuf.drain(..length);
                self.respond_local(client, &response, Source::Local, false);
            }
        }
    }

    /// Looks the token up first, its body kept in `inbuf` for the cloud on a miss.
    fn token_cache_first(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        proxy: ProxyPlan,
        token: Box<TokenPending>,
    ) {
        match self.lookup(slot, token.lookup()) {
            Some(request_id) => {
                let route = Classified::Uncacheable;
                let on_miss = OnMiss::AskCloud(Box::new(proxy));
                let waiting = AwaitCache { request_id, head, route, on_miss, token: Some(token) };
                client.set_phase(Phase::AwaitCache(Box::new(waiting)));
            }
            None => self.proxy_request(slot, client, head, proxy, Some(token)),
        }
    }

    /// The cache's reply to a TokenRequest looked up before asking the cloud: a hit is the
    /// answer (its body is dropped from `inbuf`), a miss goes to the cloud with its body.
    pub(super) fn token_looked_up_first(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        token: Box<TokenPending>,
        (reply, on_miss): (Reply, OnMiss),
    ) {
        match (reply, on_miss) {
            (Reply::Hit(cached), on_miss) => {
                let length = token.body_len.min(client.inbuf.len());
                client.inbuf.drain(..length);
                self.answer_token(client, &token, Reply::Hit(cached), &on_miss);
            }
            (_, OnMiss::AskCloud(proxy)) => {
                self.proxy_request(slot, client, head, *proxy, Some(token));
            }
            (reply, on_miss) => self.answer_token(client, &token, reply, &on_miss),
        }
    }

    /// Serves from the cache a request the cloud cannot answer: a TokenRequest by its key
    /// (its body still wholly in `inbuf` unless `token.close` says otherwise), anything
    /// else by its route.
    pub(super) fn serve_offline_or_token(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        route: Classified,
        token: Option<Box<TokenPending>>,
        on_miss: OnMiss,
    ) {
        let Some(token) = token else {
            return self.serve_offline(slot, client, head, route, on_miss);
        };
        if !token.close {
            let length = token.body_len.min(client.inbuf.len());
            client.inbuf.drain(..length);
        }
        match self.lookup(slot, token.lookup()) {
            Some(request_id) => {
                let route = Classified::Uncacheable;
                let waiting = AwaitCache { request_id, head, route, on_miss, token: Some(token) };
                client.set_phase(Phase::AwaitCache(Box::new(waiting)));
            }
            None => {
                let reply = Reply::Failed("the cache is not available".to_string());
                self.answer_token(client, &token, reply, &on_miss);
            }
        }
    }

    /// The cache's reply to a TokenRequest's lookup, as the client's answer.
    pub(super) fn answer_token(
        &mut self,
        client: &mut ClientConn,
        token: &TokenPending,
        reply: Reply,
        on_miss: &OnMiss,
    ) {
        let (source, response) = token.offline_response(reply, crate::clock::unix_now());
        if matches!(source, Source::Cache) {
            log::info!("TokenRequest of {}: answered with the cached token", token.account());
            self.metrics.count_stale_answer(on_miss.stale_reason(), 0);
        } else {
            log::debug!("TokenRequest of {}: {} offline", token.account(), response.status);
        }
        self.respond_local(client, &response, source, false);
    }
}
