//! One client connection: its TLS transport, the bytes waiting in each direction,
//! and the phase it is in.
//!
//! Phase lifecycle (the reactor drives the transitions):
//! ```text
//! Handshake ─► ReadHead ─┬─► Exchange (proxying to the cloud) ─► ReadHead | Closing
//!                        ├─► AwaitCache (cloud down) ─► ReadHead | OfflineWatch
//!                        ├─► (local Status response) ─► ReadHead | Closing
//!                        └─► Tunnel (after 101 Switching Protocols) ─► closed
//! ```

use std::time::Instant;

use crate::cache::Classified;
use crate::http1::RequestHead;
use crate::metrics::OpenWatch;
use crate::proxy::Exchange;
use crate::status::LocalResponse;
use crate::transport::{Transport, TransportError};
use crate::upstream::UpstreamConn;

/// Bytes on their way into a transport, written as fast as rustls takes them.
#[derive(Default)]
pub struct OutQueue {
    buf: Vec<u8>,
    pos: usize,
}

impl OutQueue {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Queues a buffer without copying it when nothing else is waiting.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if self.is_empty() {
            self.buf = bytes;
            self.pos = 0;
        } else {
            self.push(&bytes);
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves queued bytes into `transport` and flushes it; returns bytes moved.
    /// Flushing comes first each round: it is what makes room in rustls.
    pub fn drain_into(&mut self, transport: &mut Transport) -> Result<usize, TransportError> {
        let mut moved = 0;
        loop {
            transport.flush()?;
            if self.is_empty() {
                break;
            }
            let accepted = transport.write_plain(&self.buf[self.pos..])?;
            if accepted == 0 {
                break;
            }
            moved += accepted;
            self.pos += accepted;
        }
        if self.is_empty() {
            // Give back the memory of a large response once it is gone.
            self.buf = Vec::new();
            self.pos = 0;
        }
        Ok(moved)
    }
}

/// A watch answered from the cache while the cloud is down.
pub struct OfflineWatch {
    pub counted: OpenWatch,
    pub ends_at: Instant,
    pub next_bookmark: Option<Instant>,
    /// The BOOKMARK line to repeat (at the cached list's resourceVersion).
    pub bookmark_event: Vec<u8>,
}

/// An upgraded connection (exec, attach, port-forward): bytes copied both ways.
pub struct Tunnel {
    pub counted: OpenWatch,
    pub upstream: UpstreamConn,
    pub upstream_slot: usize,
    pub to_upstream: OutQueue,
}

pub enum Phase {
    Handshake,
    /// Waiting for a request head; `started` is when its first byte arrived.
    ReadHead {
        started: Option<Instant>,
    },
    Exchange(Box<Exchange>),
    /// A cache lookup is in flight on the cache thread.
    AwaitCache {
        request_id: u64,
        head: Box<RequestHead>,
        route: Box<Classified>,
    },
    OfflineWatch(Box<OfflineWatch>),
    /// Raw bytes both ways after `101 Switching Protocols`.
    Tunnel(Box<Tunnel>),
    /// Flushing the last bytes, then closing.
    Closing,
    /// The last answer is out and our side shut: reading and dropping what the client still
    /// sends, until it closes or `LINGER_TIMEOUT` passes. Closing with its bytes unread would
    /// make the kernel reset the connection, which can destroy that answer before the
    /// client reads it (nginx's lingering close).
    Lingering {
        write_shut: bool,
    },
}

pub struct ClientConn {
    pub transport: Transport,
    /// Common Name of the verified client certificate.
    pub peer_cn: Option<String>,
    /// Bytes read from the client and not yet consumed (heads, bodies, pipelined requests).
    pub inbuf: Vec<u8>,
    /// Bytes for the client.
    pub out: OutQueue,
    pub phase: Phase,
    /// When the current phase began (deadlines count from here).
    pub phase_since: Instant,
    /// The deadline a timer is armed for, if any.
    pub armed: Option<Instant>,
    /// The minor HTTP version of the current request, for local responses.
    pub minor_version: u8,
    /// Accepted beyond `--max-connections`: its first request gets a `503` and the close.
    pub over_limit: bool,
}

impl ClientConn {
    pub fn new(transport: Transport) -> ClientConn {
        ClientConn {
            transport,
            peer_cn: None,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            phase: Phase::Handshake,
            phase_since: Instant::now(),
            armed: None,
            minor_version: 1,
            over_limit: false,
        }
    }

    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
        self.phase_since = Instant::now();
    }

    /// Queues a complete local response; the phase after it is the caller's choice.
    pub fn queue_local(&mut self, response: &LocalResponse, head_only: bool) {
        self.out.push_owned(response.to_bytes(self.minor_version, head_only));
    }

    /// Moves queued output into the socket.
    pub fn flush(&mut self) -> Result<usize, TransportError> {
        self.out.drain_into(&mut self.transport)
    }

    /// Reads the verified client certificate's Common Name after the handshake.
    pub fn learn_peer_name(&mut self) {
        self.peer_cn = self
            .transport
            .tls()
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| crate::x509::summarize(leaf).ok())
            .and_then(|summary| summary.common_name);
    }

    pub fn is_watching(&self) -> bool {
        match &self.phase {
            Phase::Exchange(exchange) => exchange.is_long_running(),
            Phase::OfflineWatch(_) | Phase::Tunnel(_) => true,
            _ => false,
        }
    }
}
