//! Outage modes for the cloud-health tests: one process-wide mode, switched at runtime.
//! - `POST /debug/fault?mode=<m>` sets it (`none` clears it); `GET /debug/fault` reads it;
//!   both answer `{"mode": "<m>"}`. `/debug/*` is never faulty, so a test can always switch.
//! - `etcd-down`: an apiserver that lost etcd, behind a load balancer: `/readyz` answers
//!   `500` with kube's check list (`[-]etcd failed: reason withheld`), everything else `503`
//!   with a `ServiceUnavailable` `Status`.
//! - `lb-dead`: a load balancer with no live backend: every request answers its `503` page.
//! - `throttle`: API priority and fairness rejecting: every request but the health probes
//!   (`/readyz`, `/healthz`, `/livez`) answers `429` `TooManyRequests` with `Retry-After: 1`.
//! - `bad-gzip`: answers are served as usual, but a gzipped one (http.rs) has its deflate
//!   data overwritten right after the gzip header.
//!
//! The mode applies before authentication, as a load balancer in front would.

use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::json;

use crate::http::{Request, Response};
use crate::status::ApiError;

const FAULT_PATH: &str = "/debug/fault";
const HEALTH_PATHS: [&str; 3] = ["/readyz", "/healthz", "/livez"];
const RETRY_AFTER_SECONDS: u64 = 1;

/// The readyz body kube-apiserver sends when its etcd check fails.
const ETCD_DOWN_READYZ: &str = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n\
                                [+]informer-sync ok\n\
                                [+]poststarthook/generic-apiserver-start-informers ok\n\
                                readyz check failed\n";
/// What HAProxy says when no backend is up.
const LB_DEAD_PAGE: &str = "<html><body><h1>503 Service Unavailable</h1>\n\
                            No server is available to handle this request.\n</body></html>\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    EtcdDown,
    LbDead,
    Throttle,
    BadGzip,
}

const FAULTS: [(Fault, &str); 5] = [
    (Fault::None, "none"),
    (Fault::EtcdDown, "etcd-down"),
    (Fault::LbDead, "lb-dead"),
    (Fault::Throttle, "throttle"),
    (Fault::BadGzip, "bad-gzip"),
];

static MODE: AtomicU8 = AtomicU8::new(Fault::None as u8);

impl Fault {
    fn current() -> Fault {
        let mode = MODE.load(Ordering::Relaxed);
        FAULTS.iter().map(|(fault, _)| *fault).find(|f| *f as u8 == mode).unwrap_or(Fault::None)
    }

    fn name(self) -> &'static str {
        FAULTS.iter().find(|(fault, _)| *fault == self).map_or("none", |(_, name)| name)
    }

    fn parse(name: &str) -> Option<Fault> {
        FAULTS.iter().find(|(_, n)| *n == name).map(|(fault, _)| *fault)
    }
}

/// Serves `/debug/fault`, or the current mode's answer to `request`; `None` when the
/// request is to be served normally.
pub fn handle(request: &Request) -> Option<Response> {
    if request.path == FAULT_PATH {
        return Some(switch(request));
    }
    if request.path.starts_with("/debug/") {
        return None;
    }
    let health = HEALTH_PATHS.iter().any(|p| request.path == *p);
    match Fault::current() {
        Fault::None | Fault::BadGzip => None,
        Fault::EtcdDown if request.path == "/readyz" => Some(Response::text(500, ETCD_DOWN_READYZ)),
        Fault::EtcdDown => Some(
            ApiError::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            )
            .to_response(),
        ),
        Fault::LbDead => Some(Response::new(503, "text/html", LB_DEAD_PAGE.as_bytes().to_vec())),
        Fault::Throttle if health => None,
        Fault::Throttle => Some(throttled()),
    }
}

fn switch(request: &Request) -> Response {
    if request.method == "POST" {
        let name = request.query_param("mode").unwrap_or_default();
        let Some(fault) = Fault::parse(name) else {
            let known: Vec<&str> = FAULTS.iter().map(|(_, name)| *name).collect();
            let message = format!("unknown fault mode {name:?}; known: {}", known.join(", "));
            return ApiError::bad_request(message).to_response();
        };
        MODE.store(fault as u8, Ordering::Relaxed);
        log::info!("fault mode: {}", fault.name());
    } else if request.method != "GET" {
        return ApiError::method_not_allowed(&request.method).to_response();
    }
    Response::json(200, &json!({ "mode": Fault::current().name() }))
}

/// Whether gzipped answers are to be corrupted (`bad-gzip`).
pub fn corrupts_gzip() -> bool {
    Fault::current() == Fault::BadGzip
}

/// kube-apiserver's API priority and fairness rejection.
fn throttled() -> Response {
    let error = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.");
    let mut status = error.to_status();
    status["details"] = json!({ "retryAfterSeconds": RETRY_AFTER_SECONDS });
    let mut response = Response::json(429, &status);
    response.headers.push(("Retry-After".into(), RETRY_AFTER_SECONDS.to_string()));
    response
}
