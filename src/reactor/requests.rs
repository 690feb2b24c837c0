//! The reactor's side of one request: carrying out its plan (plan.rs) — a local answer,
//! a cache lookup, or an exchange with the cloud on a pooled connection — and acting on
//! what the exchange comes to: the next request, a tunnel, a retry on a fresh
//! connection, or the cache when the cloud gave no answer.
//!
//! ```text
//! head ─► plan ─┬─ Answer ───────────────────────────────► respond_local
//!               ├─ FromCache ─► offline::start ─► lookup ─► (cache thread) ─► offline::answer
//!               ├─ (a TokenRequest) ─► ReadBody first: token_requests.rs
//!               └─ Proxy ─► checkout_upstream ─► Exchange::pump ─┬─ Finished ─► release_upstream
//!                                                               ├─ Upgraded ─► Tunnel
//!                                                               └─ UpstreamFailed ─► retry | cache
//! ```

use super::{Conn, Reactor};
use crate::cache::{Classified, Lookup, Reply};
use crate::client::{AwaitCache, ClientConn, OnMiss, Phase, Step};
use crate::http1::RequestHead;
use crate::in_cluster::InClusterAddress;
use crate::metrics::{OpenWatch, Source};
use crate::offline::{self, OfflineStart};
use crate::plan::{self, Context, Plan, ProxyPlan};
use crate::proxy::{Exchange, PumpOutcome, Tee, UpstreamFailure};
use crate::status::LocalResponse;
use crate::token_cache::TokenPending;
use crate::token_identity::TokenIdentity;
use crate::tunnel::Tunnel;
use crate::upstream::UpstreamConn;

impl Reactor {
    /// Decides what one request becomes and starts it.
    pub(super) fn start_request(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
    ) {
        log::debug!("{} {} (client {:?})", head.method, head.target, client.peer_cn());
        let identity = self.identities.select(client.peer_cn());
        let token = match plan::bearer_token(&head) {
            Some(token) if identity.name.is_empty() => {
                self.tokens.identify(token, crate::clock::unix_now())
            }
            _ => TokenIdentity::Unverified,
        };
        let context = Context {
            peer_cn: client.peer_cn(),
            identity_name: &identity.name,
            cloud: self.cloud.verdict(),
            host_header: self.cloud.host_header(),
            modify_request_accept: self.config.modify_request_accept,
            over_limit: client.over_limit.then_some(self.config.max_connections),
            shutting_down: self.shutdown_deadline.is_some(),
            token,
            in_cluster: self.config.in_cluster_address.map(|addr| InClusterAddress { addr }),
        };
        let plan = plan::plan(&head, &context);
        if matches!(plan, Plan::AwaitVerdict) {
            let until = self.cloud.first_verdict_due();
            client.set_phase(Phase::AwaitVerdict { head: Box::new(head), until });
            return;
        }
        if !matches!(plan, Plan::Answer(_))
            && let Some(length) = plan::token_request_body(&head)
        {
            return self.read_token_body(client, head, plan, length);
        }
        match plan {
            Plan::Answer(response) => {
                self.respond_local(client, &response, Source::Local, head.method == "HEAD");
            }
            Plan::FromCache { route, ask_cloud: None } => {
                self.serve_offline(slot, client, head, route, OnMiss::CloudDown);
            }
            Plan::FromCache { route, ask_cloud: Some(proxy) } => {
                self.serve_offline(slot, client, head, route, OnMiss::AskCloud(proxy));
            }
            Plan::Proxy(proxy) => self.proxy_request(slot, client, head, proxy, None),
            Plan::AwaitVerdict => {}
        }
    }

    /// The first verdict is in, or its grace is over: parked requests are planned again.
    pub(super) fn plan_parked_requests(&mut self) {
        for slot in self.clients_where(|c| matches!(c.phase, Phase::AwaitVerdict { .. })) {
            let Some(Conn::Client(mut client)) = self.conns.take(slot) else { continue };
            if let Phase::AwaitVerdict { head, .. } = client.take_phase() {
                self.start_request(slot, &mut client, *head);
            }
            self.conns.put(slot, Conn::Client(client));
            self.drive_client(slot);
        }
    }

    /// Sends a request to the cloud on a pooled or new connection; `token`: a TokenRequest,
    /// whose answer is cached (token_requests.rs).
    pub(super) fn proxy_request(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        proxy: ProxyPlan,
        token: Option<Box<TokenPending>>,
    ) {
        let identity = self.identities.select(client.peer_cn()).clone();
        match self.checkout_upstream(&identity, slot) {
            Ok(upstream) => self.start_exchange(client, head, proxy, upstream, token),
            Err(e) => {
                log::debug!("cannot connect to the cloud apiserver: {e}");
                self.cloud.connect_failed(&self.metrics);
                let route = proxy.route;
                self.serve_offline_or_token(slot, client, head, route, token, OnMiss::NoAnswer);
            }
        }
    }

    fn start_exchange(
        &mut self,
        client: &mut ClientConn,
        head: RequestHead,
        proxy: ProxyPlan,
        upstream: (Box<UpstreamConn>, usize),
        token: Option<Box<TokenPending>>,
    ) {
        self.next_id += 1;
        let counted = proxy.long_running.then(|| OpenWatch::new(&self.metrics));
        let mut exchange = Exchange::new(
            head,
            proxy.route,
            upstream,
            proxy.upstream_head,
            proxy.request_framing,
            self.next_id,
            counted,
        );
        exchange.token = token;
        exchange.rewrite = proxy.rewrite;
        client.set_phase(Phase::Exchange(Box::new(exchange)));
    }

    pub(super) fn step_exchange(&mut self, slot: usize, client: &mut ClientConn) -> Step {
        let Phase::Exchange(mut exchange) = client.take_phase() else { return Step::Close };
        let mut tee = Tee { cache: self.cache.as_ref(), budget: &mut self.copy_budget };
        match exchange.pump(client, &mut tee, &mut self.scratch) {
            PumpOutcome::Progress => {
                client.restore_phase(Phase::Exchange(exchange));
                Step::Again
            }
            PumpOutcome::Wait => {
                client.restore_phase(Phase::Exchange(exchange));
                Step::Wait
            }
            PumpOutcome::Finished { upstream_reusable, client_keep_alive } => {
                self.count_exchange(&exchange);
                if exchange.status().is_some_and(|status| status != 401)
                    && let Some(token) = plan::bearer_token(&exchange.request)
                {
                    self.tokens.cloud_accepted(token);
                }
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                self.release_upstream(upstream_slot, upstream, upstream_reusable);
                if client_keep_alive {
                    client.await_next_request();
                } else {
                    client.set_phase(Phase::Closing);
                }
                Step::Again
            }
            PumpOutcome::UpstreamFailed(failure) => {
                self.exchange_failed(slot, client, exchange, failure)
            }
            PumpOutcome::CloudError { response, upstream_reusable } => {
                self.count_exchange(&exchange);
                let Exchange { request, route, upstream, upstream_slot, .. } = *exchange;
                log::debug!(
                    "{} {}: the cloud answered {}",
                    request.method,
                    request.target,
                    response.status
                );
                self.release_upstream(upstream_slot, upstream, upstream_reusable);
                self.cloud.answered_error(&self.metrics);
                self.serve_offline(slot, client, request, route, OnMiss::CloudError(response));
                Step::Again
            }
            PumpOutcome::Upgraded => {
                self.count_exchange(&exchange);
                let counted =
                    exchange.take_watch_count().unwrap_or_else(|| OpenWatch::new(&self.metrics));
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                client.set_phase(Phase::Tunnel(Box::new(Tunnel::new(
                    counted,
                    upstream,
                    upstream_slot,
                ))));
                Step::Again
            }
            PumpOutcome::BadRequestBody(reason) if exchange.response_not_started() => {
                log::debug!("{} {}: {reason}", exchange.request.method, exchange.request.target);
                let Exchange { upstream, upstream_slot, .. } = *exchange;
                // The cloud holds part of a body that will never end: that connection is spent.
                self.drop_upstream(upstream_slot, upstream);
                self.respond_local(
                    client,
                    &LocalResponse::bad_request(&reason),
                    Source::Local,
                    false,
                );
                Step::Again
            }
            PumpOutcome::BadRequestBody(reason) | PumpOutcome::Abort(reason) => {
                log::debug!("exchange aborted: {reason}");
                exchange.abandon(&mut self.tee());
                client.restore_phase(Phase::Exchange(exchange));
                Step::Close
            }
        }
    }

    pub(super) fn tee(&mut self) -> Tee<'_> {
        Tee { cache: self.cache.as_ref(), budget: &mut self.copy_budget }
    }

    pub(super) fn count_exchange(&self, exchange: &Exchange) {
        if let Some(status) = exchange.status() {
            self.metrics.count_response(Source::Upstream, status);
        }
    }

    /// The cloud failed before answering: retry a stale pooled connection once, else
    /// answer from the cache (reads) or with a `Status` (writes, bad answers).
    pub(super) fn exchange_failed(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        mut exchange: Box<Exchange>,
        failure: UpstreamFailure,
    ) -> Step {
        log::debug!("{} {}: {failure}", exchange.request.method, exchange.request.target);
        // A stale pooled connection is retried once; a timeout is not (it would wait again).
        if exchange.can_retry() && !failure.is_timeout() {
            let identity = exchange.upstream.identity.clone();
            if let Ok((fresh, fresh_slot)) = self.connect_upstream(&identity, slot) {
                let old_slot = exchange.upstream_slot;
                let stale = exchange.retry_on(fresh, fresh_slot);
                self.drop_upstream(old_slot, stale);
                log::debug!("pooled connection was closed by the cloud; retrying on a new one");
                client.restore_phase(Phase::Exchange(exchange));
                return Step::Again;
            }
        }
        let Exchange { request, route, upstream, upstream_slot, mut token, .. } = *exchange;
        let reused = upstream.reused;
        self.drop_upstream(upstream_slot, upstream);
        if failure.is_bad_response() {
            log::warn!("{} {}: {failure}", request.method, request.target);
            let response =
                LocalResponse::status(502, "InternalError", &failure.to_string()).closing();
            self.respond_local(client, &response, Source::Local, request.method == "HEAD");
            return Step::Again;
        }
        self.cloud.request_failed(&failure, reused, &self.metrics);
        if let Some(token) = token.as_mut() {
            // Part of the body may be on its way to the cloud: close after the answer.
            token.close = true;
        }
        self.serve_offline_or_token(slot, client, request, route, token, OnMiss::NoAnswer);
        Step::Again
    }

    /// Serves a request from the cache: reads and watches are looked up (on the cache
    /// thread), anything else gets `503` — or, when the cloud answered an error, that.
    pub(super) fn serve_offline(
        &mut self,
        slot: usize,
        client: &mut ClientConn,
        head: RequestHead,
        route: Classified,
        on_miss: OnMiss,
    ) {
        let why = "the cloud apiserver is unreachable";
        let response = match offline::start(&head, &route, why) {
            OfflineStart::Lookup(lookup) => match self.lookup(slot, *lookup) {
                Some(request_id) => {
                    let waiting = AwaitCache { request_id, head, route, on_miss, token: None };
                    client.set_phase(Phase::AwaitCache(Box::new(waiting)));
                    return;
                }
                None => {
                    LocalResponse::cloud_unavailable(&format!("{why}; the cache is not available"))
                }
            },
            OfflineStart::Refuse(response) => match on_miss {
                OnMiss::CloudError(answer) => answer,
                _ => response,
            },
        };
        self.respond_local(client, &response, Source::Local, head.method == "HEAD");
    }

    /// Writes a local response; the connection then reads the next request or closes.
    pub(super) fn respond_local(
        &mut self,
        client: &mut ClientConn,
        response: &LocalResponse,
        source: Source,
        head_only: bool,
    ) {
        self.metrics.count_response(source, response.status);
        client.answer(response, head_only);
    }

    /// A new request id for a cache lookup by `slot`.
    pub(super) fn lookup(&mut self, slot: usize, lookup: Lookup) -> Option<u64> {
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

    /// Whether the answer to `head` shows `client_cn` this node as `default/kubernetes`.
    fn in_cluster_rewrite(
        &self,
        client_cn: Option<&str>,
        head: &RequestHead,
    ) -> Option<InClusterAddress> {
        let local = self.config.in_cluster_address.map(|addr| InClusterAddress { addr })?;
        local.applies(client_cn, head.path()).then_some(local)
    }

    /// Hands finished cache lookups to the clients waiting for them.
    pub(super) fn deliver_cache_replies(&mut self) {
        let Some(cache) = &self.cache else { return };
        for (request_id, reply) in cache.take_replies() {
            let Some(slot) = self.lookups.remove(&request_id) else { continue };
            let Some(Conn::Client(mut client)) = self.conns.take(slot) else { continue };
            match client.take_phase() {
                Phase::AwaitCache(waiting) if waiting.request_id == request_id => {
                    let AwaitCache { head, route, on_miss, token, .. } = *waiting;
                    match (reply, on_miss, token) {
                        (reply, on_miss @ OnMiss::AskCloud(_), Some(token)) => {
                            let looked_up = (reply, on_miss);
                            self.token_looked_up_first(slot, &mut client, head, token, looked_up);
                        }
                        (reply, on_miss, Some(token)) => {
                            self.answer_token(&mut client, &token, reply, &on_miss);
                        }
                        (Reply::Miss | Reply::Failed(_), OnMiss::AskCloud(proxy), None) => {
                            self.proxy_request(slot, &mut client, head, *proxy, None);
                        }
                        (reply, on_miss, None) => {
                            let rewrite = self.in_cluster_rewrite(client.peer_cn(), &head);
                            let metrics = &self.metrics;
                            let answer = offline::Answer { route, on_miss, rewrite };
                            offline::answer(&mut client, &head, reply, answer, metrics);
                        }
                    }
                }
                other => client.restore_phase(other),
            }
            self.conns.put(slot, Conn::Client(client));
            self.drive_client(slot);
        }
    }
}
