//! One thread per client connection: TLS handshake, identity, then a keep-alive loop that
//! reads requests and routes them to probes, debug endpoints, discovery or the resource API.

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::api::{self, Reply};
use crate::debug::{self, After};
use crate::discovery;
use crate::faults;
use crate::http::{Conn, ReadError, Request, Response};
use crate::identity::{self, Identity};
use crate::signing::Signer;
use crate::status::ApiError;
use crate::store::Shared;
use crate::tokens;
use crate::watch;

/// An idle keep-alive connection (or a stalled handshake) is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A client that stops reading for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Server {
    pub shared: Shared,
    pub tokens: HashMap<String, String>,
    pub bookmark_interval: Duration,
    /// Signs and checks service-account tokens (`tokens`).
    pub signer: Signer,
    /// The audiences a bearer JWT must name one of (kube-apiserver's `--api-audiences`;
    /// the issuer when none is given).
    pub api_audiences: Vec<String>,
}

pub fn serve_connection(tcp: TcpStream, tls: Arc<ServerConfig>, server: &Server) {
    let peer = tcp.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
    match run_connection(tcp, tls, server) {
        Ok(()) => log::debug!("{peer}: connection closed"),
        Err(e) => log::debug!("{peer}: connection ended: {e}"),
    }
}

fn run_connection(mut tcp: TcpStream, tls: Arc<ServerConfig>, server: &Server) -> io::Result<()> {
    tcp.set_read_timeout(Some(IDLE_TIMEOUT))?;
    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    let mut session = ServerConnection::new(tls).map_err(io::Error::other)?;
    while session.is_handshaking() {
        session.complete_io(&mut tcp)?;
    }
    let certificate = identity::from_certificate(&session);
    let mut conn = Conn::new(StreamOwned::new(session, tcp));
    loop {
        let request = match conn.read_request() {
            Ok(request) => request,
            Err(ReadError::Closed) => return Ok(()),
            Err(ReadError::Bad { status, message }) => {
                let reason = if status == 400 { "BadRequest" } else { "RequestEntityTooLarge" };
                conn.set_common_headers(vec![connection_close()]);
                conn.send(&ApiError::new(status, reason, message).to_response(), true)?;
                return Ok(());
            }
        };
        let after = serve_request(&mut conn, &request, certificate.as_ref(), server)?;
        if matches!(after, After::Close) || !request.keep_alive {
            return Ok(());
        }
    }
}

fn serve_request(
    conn: &mut Conn,
    request: &Request,
    certificate: Option<&Identity>,
    server: &Server,
) -> io::Result<After> {
    let include_body = request.method != "HEAD";
    let identity = identity::authenticate(certificate, request, server);
    let user = identity.as_ref().map_or("<unauthorized>", |i| i.user.as_str()).to_string();
    log::debug!("{user} {} {}?{}", request.method, request.path, request.raw_query);
    let mut common_headers = identity.as_ref().map(Identity::headers).unwrap_or_default();
    if !request.keep_alive {
        common_headers.push(connection_close());
    }
    conn.set_common_headers(common_headers);
    if let Some(result) = faults::serve(request, conn, include_body) {
        return result;
    }
    if let Err(error) = identity {
        return conn.send(&error.to_response(), include_body).map(|()| After::KeepAlive);
    }

    if let Some(result) = debug::handle(request, conn, include_body) {
        return result;
    }
    let reply = route(request, server);
    match reply {
        Reply::Full(response) => conn.send(&response, include_body).map(|()| After::KeepAlive),
        Reply::Watch(spec) => watch::serve(conn, &server.shared, &spec, server.bookmark_interval)
            .map(|()| After::KeepAlive),
        Reply::Upgrade => debug::upgrade_echo(request, conn),
    }
}

fn connection_close() -> (String, String) {
    ("Connection".to_string(), "close".to_string())
}

fn route(request: &Request, server: &Server) -> Reply {
    let path = request.path.as_str();
    if ["/healthz", "/livez", "/readyz"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Reply::Full(Response::text(200, "ok"));
    }
    if let Some(response) = tokens::handle(request, server) {
        return Reply::Full(response);
    }
    if let Some(response) = discovery::handle(request) {
        return Reply::Full(response);
    }
    api::handle(request, &server.shared).unwrap_or_else(|| ApiError::not_found_path().into())
}
