//! rustls over a non-blocking mio `TcpStream`, the same for both sides (the client
//! connection we serve and the upstream connection we open).
//!
//! Readiness is edge-triggered, so this type remembers whether the socket may still
//! have bytes (`readable`) or room (`writable`) and clears those flags on `WouldBlock` —
//! or sooner, on a short read or write: a TCP read that returns less than it was offered
//! emptied the receive queue, and a write that takes less than it was given filled the
//! send buffer, so the next call would only return `WouldBlock` (a syscall per request
//! saved; tokio does the same). A later arrival raises a new edge. Once the peer hung up
//! (`mark_hung_up`), reads go on until EOF, since no new edge will come. rustls is treated as a bounded buffer: plaintext writes are refused
//! once its send buffer holds `SEND_BUFFER_LIMIT` bytes, which is how backpressure
//! reaches the other side of the proxy.
//!
//! Ciphertext is read from the socket a full TLS record at a time into one buffer shared by
//! every connection, then handed to rustls, which would read 4 KiB per call: a 100 KB
//! answer costs 7 reads, not 25. What rustls cannot take yet (its plaintext buffer is
//! full until the reader drains it) waits in `unfed`, which is empty otherwise.
//!
//! Every byte read from or written to the socket is counted (`ByteCount`, metrics.rs):
//! a client session is a client connection, a client-side session the cloud link.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::Connection;

use crate::metrics::{ByteCount, Link};

/// Most bytes rustls may hold for sending (plaintext plus records) per connection.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;
/// Ciphertext read from the socket per call: one full-size record (16 KiB of plaintext,
/// its header and tag), with room to spare.
const READ_CHUNK: usize = 16 * 1024 + 512;
/// rustls refuses ciphertext once this much plaintext waits to be read (its fixed default).
const PLAINTEXT_LIMIT: usize = 16 * 1024;

thread_local! {
    /// The reactor's one read buffer: reused by every connection, so never zeroed again.
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

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
    /// Ciphertext read but not yet taken by rustls.
    unfed: Vec<u8>,
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
            unfed: Vec::new(),
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
            if !self.can_pull() {
                return Ok(ReadOutcome::WouldBlock);
            }
            self.pull_records()?;
        }
    }

    /// Drives the handshake (or any pending TLS work) without reading plaintext.
    pub fn drive(&mut self) -> Result<(), TransportError> {
        while self.tls.is_handshaking() && self.can_pull() && !self.peer_closed {
            self.flush()?;
            self.pull_records()?;
        }
        self.flush()
    }

    /// Records may be waiting: in the socket, or read and not yet taken by rustls.
    fn can_pull(&self) -> bool {
        self.readable || !self.unfed.is_empty()
    }

    /// Gives rustls what it could not take before, or one socket read's worth of records.
    fn pull_records(&mut self) -> Result<(), TransportError> {
        if !self.unfed.is_empty() {
            let unfed = std::mem::take(&mut self.unfed);
            return self.feed(&unfed);
        }
        READ_BUFFER.with_borrow_mut(|chunk| match self.socket.read(chunk) {
            Ok(0) => {
                self.peer_closed = true;
                Ok(())
            }
            Ok(n) => {
                self.bytes.received(n);
                self.readable = n == chunk.len() || self.hung_up;
                self.feed(&chunk[..n])
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(TransportError::Io(e)),
        })
    }

    /// Hands `records` to rustls and decrypts them, keeping back what does not fit while a
    /// full record's plaintext waits to be read.
    fn feed(&mut self, mut records: &[u8]) -> Result<(), TransportError> {
        while !records.is_empty() {
            match self.tls.read_tls(&mut records) {
                // The peer's close_notify came: what follows it is not read.
                Ok(0) => self.peer_closed = true,
                Ok(_) => {}
                Err(e) => return Err(TransportError::Io(e)),
            }
            let state = match self.tls.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    // Send the alert rustls queued, then report the failure.
                    let _ = self.flush();
                    return Err(TransportError::Tls(error));
                }
            };
            if self.peer_closed || state.plaintext_bytes_to_read() >= PLAINTEXT_LIMIT {
                break;
            }
        }
        if !self.peer_closed {
            self.unfed.extend_from_slice(records);
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
            let mut socket = ShortWrite::new(&mut self.socket);
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

/// The socket as rustls writes to it, noting whether the last write took fewer bytes than
/// it was offered.
struct ShortWrite<'a> {
    socket: &'a mut TcpStream,
    short: bool,
}

impl<'a> ShortWrite<'a> {
    fn new(socket: &'a mut TcpStream) -> ShortWrite<'a> {
        ShortWrite { socket, short: false }
    }
}

impl Write for ShortWrite<'_> {
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
    /// it: reads must go on until it is all out, though rustls takes only one full record's
    /// plaintext at a time and the last socket read is short.
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
    fn records_rustls_cannot_take_yet_are_read_without_a_new_event() {
        let cloud = FakeCloud::new();
        // Whether the last, short socket read leaves records rustls cannot take yet depends
        // on where records end within reads: a range of sizes and record lengths covers it.
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
