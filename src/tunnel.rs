//! An upgraded connection (exec, attach, port-forward after `101 Switching Protocols`):
//! raw bytes copied both ways between the client and the cloud, each direction read only
//! while the other side's queue has room. It has no deadline: either peer ends it.

use crate::client::{ClientConn, Step};
use crate::metrics::OpenWatch;
use crate::queue::OutQueue;
use crate::transport::ReadOutcome;
use crate::upstream::UpstreamConn;

/// Read from the cloud only while the client's queue is below this.
const CLIENT_QUEUE_HIGH_WATER: usize = 16 * 1024;

/// What a turn of the tunnel came to.
pub enum TunnelStep {
    Step(Step),
    /// The cloud ended the stream: the client gets what was sent, then the close.
    CloudClosed,
}

pub struct Tunnel {
    /// Counted among open watches (long-running streams) while it lives.
    _counted: OpenWatch,
    pub upstream: Box<UpstreamConn>,
    pub upstream_slot: usize,
    to_upstream: OutQueue,
}

impl Tunnel {
    pub fn new(counted: OpenWatch, upstream: Box<UpstreamConn>, upstream_slot: usize) -> Tunnel {
        Tunnel { _counted: counted, upstream, upstream_slot, to_upstream: OutQueue::default() }
    }

    /// Copies what both sides allow now. The client closing ends the tunnel at once.
    pub fn step(&mut self, client: &mut ClientConn, scratch: &mut [u8]) -> TunnelStep {
        let Ok(mut moved) = self.client_to_cloud(client, scratch) else {
            return TunnelStep::Step(Step::Close);
        };
        while client.out.len() < CLIENT_QUEUE_HIGH_WATER {
            match self.upstream.transport.read_plain(scratch) {
                Ok(ReadOutcome::Data(n)) => {
                    client.out.push(&scratch[..n]);
                    moved = true;
                }
                Ok(ReadOutcome::WouldBlock) => break,
                Ok(ReadOutcome::Eof) | Err(_) => return TunnelStep::CloudClosed,
            }
        }
        if client.flush().is_err() {
            return TunnelStep::Step(Step::Close);
        }
        TunnelStep::Step(if moved { Step::Again } else { Step::Wait })
    }

    /// Client → cloud; `Err` when either side is gone.
    fn client_to_cloud(&mut self, client: &mut ClientConn, scratch: &mut [u8]) -> Result<bool, ()> {
        let mut moved = false;
        loop {
            moved |= self.to_upstream.drain_into(&mut self.upstream.transport).map_err(|_| ())? > 0;
            if !self.to_upstream.is_empty() {
                return Ok(moved);
            }
            match client.transport.read_plain(scratch) {
                Ok(ReadOutcome::Data(n)) => self.to_upstream.push(&scratch[..n]),
                Ok(ReadOutcome::WouldBlock) => return Ok(moved),
                Ok(ReadOutcome::Eof) | Err(_) => return Err(()),
            }
        }
    }
}
