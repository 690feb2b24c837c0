//! `OutQueue`: bytes waiting to go into a transport, one per direction of a connection.
//! Backpressure is the caller's: a source is read only while its destination queue is
//! short, so a queue holds about one read's worth, not a growing stream.

use crate::transport::{Transport, TransportError};

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
