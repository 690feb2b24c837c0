//! rustls over a non-blocking mio `TcpStream`, the same for both sides (the client
//! connection we serve and the upstream connection we open).
//!
//! Readiness is edge-triggered, so this type remembers whether the socket may still
//! have bytes (`readable`) or room (`writable`) and clears those flags on `WouldBlock` —
//! or sooner, on a short read or write: a TCP read that returns less than it was offered
//! emptied the receive queue, and a write that takes less than it was given filled the
//! send buffer, so the next call would only return `WouldBlock` (a syscall per request
//! saved; tokio does the same). A later arrival raises a new edge. Once the peer hung up
//! (`mark_hung_up`), reads go on until EOF, since no new edge will come.
//!
//! rustls is treated as a bounded buffer: plaintext writes are refused once its send
//! buffer holds `SEND_BUFFER_LIMIT` bytes, which is how backpressure reaches the other
//! side of the proxy.
//!
//! Every byte read from or written to the socket is counted (`ByteCount`, metrics.rs):
//! a client session is a client connection, a client-side session the cloud link.

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::Connection;

use crate::metrics::{ByteCount, Link};

/// Most bytes rustls may hold for sending (plaintext plus records) per connection.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub enum TransportError {
    Io(io::Error),
    Tls(rustls::Error),
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportError::Io(e) => write!(f, "socket error: {e}"),
            TransportError::Tls(e) => write!(f, "TLS error: {e}"),
        }
    }
}

impl std::error::Error for TransportError {}

/// What one plaintext read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Data(usize),
    /// Nothing more until the next readiness event.
    WouldBlock,
    /// The peer finished sending (close_notify or TCP FIN).
    Eof,
}

pub struct Transport {
    pub socket: TcpStream,
    tls: Connection,
    readable: bool,
    writable: bool,
    /// The last poll event said the peer closed or errored: no later edge will come.
    hung_up: bool,
    peer_closed: bool,
    bytes: ByteCount,
}

impl Transport {
    pub fn new(socket: TcpStream, mut tls: Connection) -> Transport {
        tls.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        // We are the TLS client only towards the cloud.
        let link = if matches!(tls, Connection::Client(_)) { Link::Cloud } else { Link::Client };
        let bytes = ByteCount::new(link);
        Transport {
            socket,
            tls,
            readable: false,
            writable: false,
            hung_up: false,
            peer_closed: false,
            bytes,
        }
    }

    pub fn tls(&self) -> &Connection {
        &self.tls
    }

    /// Records readiness from a poll event.
    pub fn mark_ready(&mut self, readable: bool, writable: bool) {
        self.readable |= readable;
        self.writable |= writable;
    }

    /// Records a poll event's hang-up or error: reads continue until they see it.
    pub fn mark_hung_up(&mut self) {
        self.hung_up = true;
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Reads decrypted bytes into `buf`, pulling records from the socket as needed.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, TransportError> {
        let outcome = self.read_plain_records(buf);
        self.bytes.publish();
        outcome
    }

    fn read_plain_records(&mut self, buf: &mut [u8]) -> Result<ReadOutcome, TransportError> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(ReadOutcome::Eof),
                Err(e) => return Err(TransportError::Io(e)),
            }
            if self.peer_closed {
                return Ok(ReadOutcome::Eof);
            }
            if !self.readable {
                return Ok(ReadOutcome::WouldBlock);
            }
            self.pull_records()?;
        }
    }

    /// Drives the handshake (or any pending TLS work) without reading plaintext.
    pub fn drive(&mut self) -> Result<(), TransportError> {
        while self.tls.is_handshaking() && self.readable && !self.peer_closed {
            self.flush()?;
            self.pull_records()?;
        }
        self.flush()
    }

    /// One `read_tls` + `process_new_packets`.
    fn pull_records(&mut self) -> Result<(), TransportError> {
        let mut socket = ShortIo::new(&mut self.socket);
        match self.tls.read_tls(&mut socket) {
            Ok(0) => self.peer_closed = true,
            Ok(n) => {
                self.bytes.received(n);
                self.readable = !socket.short || self.hung_up;
                if let Err(error) = self.tls.process_new_packets() {
                    // Send the alert rustls queued, then report the failure.
                    let _ = self.flush();
                    return Err(TransportError::Tls(error));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(TransportError::Io(e)),
        }
        Ok(())
    }

    /// Queues plaintext; returns how many bytes rustls accepted (0 when its buffer is full).
    pub fn write_plain(&mut self, data: &[u8]) -> Result<usize, TransportError> {
        if data.is_empty() {
            return Ok(0);
        }
        match self.tls.writer().write(data) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(TransportError::Io(e)),
        }
    }

    /// Writes queued records to the socket while it takes them.
    pub fn flush(&mut self) -> Result<(), TransportError> {
        let flushed = self.write_records();
        self.bytes.publish();
        flushed
    }

    fn write_records(&mut self) -> Result<(), TransportError> {
        while self.tls.wants_write() && self.writable {
            let mut socket = ShortIo::new(&mut self.socket);
            match self.tls.write_tls(&mut socket) {
                Ok(0) => return Err(TransportError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.bytes.sent(n);
                    self.writable = !socket.short;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
        Ok(())
    }

    /// Everything queued has reached the socket.
    pub fn is_flushed(&self) -> bool {
        !self.tls.wants_write()
    }

    pub fn send_close_notify(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush();
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }
}

/// The socket as rustls reads and writes it, noting whether the last call moved fewer
/// bytes than it was offered.
struct ShortIo<'a> {
    socket: &'a mut TcpStream,
    short: bool,
}

impl<'a> ShortIo<'a> {
    fn new(socket: &'a mut TcpStream) -> ShortIo<'a> {
        ShortIo { socket, short: false }
    }
}

impl Read for ShortIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

impl Write for ShortIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.socket.write(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let n = self.socket.write_vectored(bufs)?;
        self.short = n < bufs.iter().map(|buf| buf.len()).sum();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::testing::{FakeCloud, establish, until};

    /// Bytes waiting in a socket's receive queue.
    fn queued(socket: &TcpStream) -> usize {
        let mut waiting: libc::c_int = 0;
        // SAFETY: a valid socket descriptor and a pointer to a c_int, as FIONREAD takes.
        let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONREAD, &mut waiting) };
        assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
        waiting as usize
    }

    /// All of `sent` arrives before the one readiness event edge-triggered polling gives for
    /// it: reads must go on until it is all out, readiness cleared only by the short read
    /// that empties the socket.
    fn read_after_one_event(cloud: &FakeCloud, sent: &[u8], record: usize) -> Vec<u8> {
        let (mut upstream, mut peer) = cloud.connect();
        establish(&mut upstream, &mut peer);
        for piece in sent.chunks(record) {
            peer.send(piece);
            peer.turn();
        }
        until("the cloud's records are all in our socket", || {
            peer.turn();
            peer.unsent() == 0 && !peer.blocked && queued(&upstream.transport.socket) > sent.len()
        });
        upstream.transport.mark_ready(true, false);
        let mut received = Vec::new();
        let mut buf = [0u8; 1000];
        while let Ok(ReadOutcome::Data(n)) = upstream.transport.read_plain(&mut buf) {
            received.extend_from_slice(&buf[..n]);
        }
        assert_eq!(queued(&upstream.transport.socket), 0, "the socket was drained");
        received
    }

    #[test]
    fn everything_that_arrived_before_one_event_is_read() {
        let cloud = FakeCloud::new();
        // Where records end within rustls's reads varies with their sizes and lengths: a
        // read that fills its buffer exactly is not short and must be followed by another.
        for record in [16 * 1024, 10_000, 9_000, 6_000] {
            for kib in (18..=44).step_by(2) {
                let sent: Vec<u8> = (0..kib * 1024).map(|i| (i % 251) as u8).collect();
                let received = read_after_one_event(&cloud, &sent, record);
                let case = format!("{kib} KiB in records of {record}");
                assert_eq!(received.len(), sent.len(), "{case}: bytes read before WouldBlock");
                assert!(received == sent, "{case}: the plaintext came back changed");
            }
        }
    }
}
