//! Loopback TLS for in-process tests of the connection layer (test builds only).
//!
//! The project's test PKI (`examples/support/pki.rs`) is made once per test process; from
//! it come the serving config (`tls::server_config`, as `server.rs` builds it) and an
//! upstream identity (`Identity::load`). A `ClientConn` and an `UpstreamConn` then run
//! over real loopback sockets, and their other ends are scripted `Peer`s: a rustls
//! session over a non-blocking socket that the test turns by hand in its own thread, so
//! every interleaving of the two sides is the test's choice and nothing waits on a clock.
//! Socket buffers are made small, so "the peer stopped reading" fills them quickly.

#[path = "../examples/support/pki.rs"]
mod pki;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, Connection, ServerConfig};

use crate::client::{ClientConn, Phase};
use crate::tls::{self, Identity, KeyPair, UpstreamTrust};
use crate::transport::Transport;
use crate::upstream::UpstreamConn;

/// The CN of the certificate the scripted client presents (`admin` in the test PKI).
pub const CLIENT_CN: &str = "admin";
/// Socket buffer size asked of the kernel for every test socket (it doubles it).
const SOCKET_BUFFER: libc::c_int = 32 * 1024;
/// How long a test waits for a condition before failing: generous, since a loaded
/// machine is slow, but a hung test still ends.
const PATIENCE: Duration = Duration::from_secs(30);

/// The TLS configurations of one test process, built from the test PKI.
struct World {
    /// lite-apiserver's serving side, as `server.rs` builds it.
    serving: Arc<ServerConfig>,
    /// lite-apiserver's identity towards the cloud (the kubelet certificate).
    identity: Arc<Identity>,
    /// The scripted client: trusts the CA, presents the `admin` certificate.
    client: Arc<ClientConfig>,
    /// The fake cloud apiserver: requires a client certificate from the CA.
    cloud: Arc<ServerConfig>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("lite-conntests-{}", std::process::id()));
        let pki = pki::Pki::generate(&dir).unwrap();
        let world = build_world(&pki);
        // Everything is in memory now: leave nothing behind.
        std::fs::remove_dir_all(&dir).unwrap();
        world
    })
}

fn build_world(pki: &pki::Pki) -> World {
    let roots = tls::load_roots(&pki.path("ca.crt")).unwrap();
    let serving = KeyPair::load(&pki.path("server.crt"), &pki.path("server.key")).unwrap();
    let trust = UpstreamTrust::Roots(Arc::new(roots.clone()));
    let identity = Identity::load(&pki.path("kubelet.crt"), &pki.path("kubelet.key"), &trust);
    let admin = KeyPair::load(&pki.path("admin.crt"), &pki.path("admin.key")).unwrap();
    let client = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(admin.chain, admin.key)
        .unwrap();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), tls::provider())
            .build()
            .unwrap();
    let cloud_pair = KeyPair::load(&pki.path("server.crt"), &pki.path("server.key")).unwrap();
    let cloud = ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(cloud_pair.chain, cloud_pair.key)
        .unwrap();
    World {
        serving: tls::server_config(serving, roots).unwrap(),
        identity: Arc::new(identity.unwrap()),
        client: Arc::new(client),
        cloud: Arc::new(cloud),
    }
}

/// Asks the kernel for small socket buffers, so a peer that stops reading is felt after
/// kilobytes, not megabytes.
fn shrink_buffers(socket: &impl AsRawFd) {
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let size = SOCKET_BUFFER;
        // SAFETY: a valid socket descriptor and a pointer to a c_int of the given length.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setsockopt: {}", io::Error::last_os_error());
    }
}

/// Turns `step` until it returns true; fails the test after `PATIENCE`.
pub fn until(what: &str, mut step: impl FnMut() -> bool) {
    let give_up = Instant::now() + PATIENCE;
    while !step() {
        assert!(Instant::now() < give_up, "gave up waiting: {what}");
    }
}

/// The scripted end of a loopback connection: a rustls session over a non-blocking
/// socket, moved along only by `turn`.
pub struct Peer {
    tls: Connection,
    socket: TcpStream,
    /// Plaintext waiting to go into rustls (which takes at most its buffer limit).
    outbox: Vec<u8>,
    /// Plaintext received so far.
    pub received: Vec<u8>,
    /// While false, nothing is read from the socket (a peer that does not read).
    pub reading: bool,
    /// The other side finished sending (close_notify or FIN).
    pub eof: bool,
    /// The last turn found the socket full with bytes still to send.
    pub blocked: bool,
    /// A socket or TLS failure (a reset, say): the peer stops.
    pub broken: Option<String>,
}

impl Peer {
    fn new(mut tls: Connection, socket: TcpStream) -> Peer {
        socket.set_nonblocking(true).unwrap();
        shrink_buffers(&socket);
        tls.set_buffer_limit(Some(64 * 1024));
        Peer {
            tls,
            socket,
            outbox: Vec::new(),
            received: Vec::new(),
            reading: true,
            eof: false,
            blocked: false,
            broken: None,
        }
    }

    /// Queues plaintext to send.
    pub fn send(&mut self, bytes: &[u8]) {
        self.outbox.extend_from_slice(bytes);
    }

    /// Plaintext queued and not yet taken by rustls.
    pub fn unsent(&self) -> usize {
        self.outbox.len()
    }

    /// Ends our side: close_notify, then the TCP write side.
    pub fn close(&mut self) {
        self.tls.send_close_notify();
        self.turn();
        self.socket.shutdown(Shutdown::Write).unwrap();
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Everything the socket allows now: send, receive, and send what receiving caused
    /// (handshake messages).
    pub fn turn(&mut self) {
        if self.broken.is_some() {
            return;
        }
        self.write_out();
        if self.reading {
            self.read_in();
            self.write_out();
        }
    }

    fn write_out(&mut self) {
        self.blocked = false;
        loop {
            if !self.outbox.is_empty() && !self.tls.is_handshaking() {
                match self.tls.writer().write(&self.outbox) {
                    Ok(n) => drop(self.outbox.drain(..n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return self.fail(e),
                }
            }
            if !self.tls.wants_write() {
                return;
            }
            match self.tls.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return;
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    fn read_in(&mut self) {
        while !self.eof {
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        return self.fail(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return self.fail(e),
            }
            self.take_plaintext();
        }
        self.take_plaintext();
    }

    fn take_plaintext(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.eof = true;
                    return;
                }
                Err(e) => return self.fail(e),
            }
        }
    }

    fn fail(&mut self, error: impl std::fmt::Display) {
        self.broken = Some(error.to_string());
    }
}

/// A connection accepted by lite-apiserver, and the scripted client at its other end
/// (not yet through the TLS handshake).
pub fn accept_client() -> (ClientConn, Peer) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dialled = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    shrink_buffers(&accepted);
    let session = rustls::ServerConnection::new(world().serving.clone()).unwrap();
    let transport = Transport::new(mio::net::TcpStream::from_std(accepted), session.into());
    let name = ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(world().client.clone(), name).unwrap();
    (ClientConn::new(transport, false), Peer::new(session.into(), dialled))
}

/// Turns both sides until the client connection is through its handshake (and reads heads).
pub fn handshake(client: &mut ClientConn, peer: &mut Peer) {
    until("the client handshake", || {
        peer.turn();
        client.transport.mark_ready(true, true);
        client.step_handshake();
        assert!(peer.broken.is_none(), "client peer: {:?}", peer.broken);
        matches!(client.phase, Phase::ReadHead { .. }) && !peer.is_handshaking()
    });
}

/// A fake cloud apiserver listening on loopback: each `connect` is one `UpstreamConn`
/// and the scripted server at its other end.
pub struct FakeCloud {
    listener: TcpListener,
}

impl FakeCloud {
    pub fn new() -> FakeCloud {
        FakeCloud { listener: TcpListener::bind("127.0.0.1:0").unwrap() }
    }

    /// A connection as `UpstreamConn::connect` opens it (TCP and TLS not yet up).
    pub fn connect(&self) -> (UpstreamConn, Peer) {
        let addr = self.listener.local_addr().unwrap();
        let name = tls::upstream_server_name("localhost").unwrap();
        let upstream = UpstreamConn::connect(addr, world().identity.clone(), name).unwrap();
        shrink_buffers(&upstream.transport.socket);
        let (accepted, _) = self.listener.accept().unwrap();
        let session = rustls::ServerConnection::new(world().cloud.clone()).unwrap();
        (upstream, Peer::new(session.into(), accepted))
    }
}

/// Turns both sides until TCP and TLS are up, as for a connection taken from the pool.
pub fn establish(upstream: &mut UpstreamConn, cloud: &mut Peer) {
    until("the upstream handshake", || {
        cloud.turn();
        upstream.transport.mark_ready(true, true);
        let connected = upstream.poll_connected().unwrap();
        if connected {
            upstream.transport.drive().unwrap();
        }
        assert!(cloud.broken.is_none(), "cloud peer: {:?}", cloud.broken);
        upstream.is_established() && !cloud.is_handshaking()
    });
}
