//! Connections to the cloud kube-apiserver: non-blocking connect, one rustls client
//! session each, and a small pool of idle keep-alive connections per identity.
//!
//! A pooled connection belongs to the identity (and its generation) it was opened
//! with: after a certificate rotation, older connections are closed, not reused.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;

use crate::tls::Identity;
use crate::transport::{ReadOutcome, Transport};

/// Idle connections kept per identity.
const MAX_IDLE_PER_IDENTITY: usize = 8;

pub struct UpstreamConn {
    pub transport: Transport,
    pub identity: Arc<Identity>,
    connected: bool,
    /// Taken from the pool: the cloud may have closed it meanwhile.
    pub reused: bool,
    pub idle_since: Instant,
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
}

/// Idle upstream connections by identity name; values are slab slots.
#[derive(Default)]
pub struct Pool {
    idle: HashMap<String, Vec<usize>>,
}

impl Pool {
    /// Takes the most recently idled slot for `identity`, if any.
    pub fn take(&mut self, identity: &str) -> Option<usize> {
        self.idle.get_mut(identity).and_then(Vec::pop)
    }

    /// Offers a slot back; false when the pool for that identity is full.
    pub fn offer(&mut self, identity: &str, slot: usize) -> bool {
        let idle = self.idle.entry(identity.to_string()).or_default();
        if idle.len() >= MAX_IDLE_PER_IDENTITY {
            return false;
        }
        idle.push(slot);
        true
    }

    /// Forgets a slot (closed while idle).
    pub fn remove(&mut self, slot: usize) {
        for idle in self.idle.values_mut() {
            idle.retain(|&s| s != slot);
        }
    }

    /// Every idle slot, for retiring after a certificate change.
    pub fn drain_all(&mut self) -> Vec<usize> {
        self.idle.drain().flat_map(|(_, slots)| slots).collect()
    }
}
