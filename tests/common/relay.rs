//! A TCP relay on loopback standing in for the link between the node and the cloud, with
//! faults switchable at runtime: pass, a black hole (a dead link: bytes go in, nothing
//! comes back), a refused port, a seeded fraction of connections reset, and a mid-stream
//! cut of every open connection. Point lite-apiserver's `--kube-apiserver-url` at
//! [`Relay::port`]. Threads only; at most [`MAX_LINKS`] connections at once (more are reset);
//! everything stops when the relay drops.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Most connections relayed at once; further ones are reset at once.
pub const MAX_LINKS: usize = 256;
/// How often blocked threads look at the stop, cut and mode flags.
const TICK: Duration = Duration::from_millis(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STACK_SIZE: usize = 64 * 1024;
/// A connection reset "after some bytes" gets through between 1 and this many.
const MAX_BYTES_BEFORE_RESET: u64 = 4096;
const DEFAULT_SEED: u64 = 0x5EED_1234_ABCD_0001;

/// What the relay does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RelayMode {
    /// Forward both ways.
    Pass,
    /// Accept, read and discard, never answer; open connections stop forwarding too.
    BlackHole,
    /// Not listening: connects are refused (open connections are left alone).
    Refuse,
    /// This fraction (0.0–1.0) of new connections is reset, half of them at once and half
    /// after a few bytes, chosen by the seeded generator; the rest pass.
    ResetFraction(f64),
}

/// What the relay has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub accepted: usize,
    /// Connections reset by `ResetFraction` (at once or after some bytes) or the bound.
    pub reset: usize,
    /// Connections cut by [`Relay::cut_all`].
    pub cut: usize,
}

pub struct Relay {
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    mode: Mutex<RelayMode>,
    stop: AtomicBool,
    links: Mutex<Vec<Weak<Link>>>,
    rng: Mutex<u64>,
    accepted: AtomicUsize,
    reset: AtomicUsize,
    cut: AtomicUsize,
}

/// One relayed connection, shared by its threads.
struct Link {
    /// Set to end the connection with a reset.
    cut: AtomicBool,
    /// Bytes (either way) still allowed before a planned reset.
    budget: Mutex<Option<u64>>,
}

/// What happens to one new connection.
enum Plan {
    Pass { reset_after: Option<u64> },
    Swallow,
    Reset,
}

impl Relay {
    /// A relay to `127.0.0.1:target_port`.
    pub fn start(target_port: u16) -> Relay {
        Relay::with_seed(SocketAddr::from((Ipv4Addr::LOCALHOST, target_port)), DEFAULT_SEED)
    }

    /// A relay to `target` whose `ResetFraction` choices follow `seed`.
    pub fn with_seed(target: SocketAddr, seed: u64) -> Relay {
        let listener = listen(0).expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let shared = Arc::new(Shared {
            target,
            mode: Mutex::new(RelayMode::Pass),
            stop: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            rng: Mutex::new(seed | 1),
            accepted: AtomicUsize::new(0),
            reset: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            spawn("relay-accept", move || accept_loop(Some(listener), port, &shared))
        };
        Relay { port, shared, acceptor: Some(acceptor) }
    }

    /// `https://127.0.0.1:<port>`, for `--kube-apiserver-url`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn set_mode(&self, mode: RelayMode) {
        if let RelayMode::ResetFraction(f) = mode {
            assert!((0.0..=1.0).contains(&f), "reset fraction {f} is not in 0..=1");
        }
        *self.shared.mode.lock().expect("relay mode") = mode;
    }

    pub fn mode(&self) -> RelayMode {
        self.shared.mode()
    }

    /// Resets every open connection at once (a link cut mid-stream).
    pub fn cut_all(&self) {
        for link in self.shared.live_links() {
            if !link.cut.swap(true, Ordering::Relaxed) {
                self.shared.cut.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.live_links().len()
    }

    pub fn stats(&self) -> RelayStats {
        RelayStats {
            accepted: self.shared.accepted.load(Ordering::Relaxed),
            reset: self.shared.reset.load(Ordering::Relaxed),
            cut: self.shared.cut.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn mode(&self) -> RelayMode {
        *self.mode.lock().expect("relay mode")
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn live_links(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().expect("relay links");
        links.retain(|link| link.strong_count() > 0);
        links.iter().filter_map(Weak::upgrade).collect()
    }

    /// Uniform in `[0, 1)` from the seeded xorshift.
    fn next_unit(&self) -> f64 {
        let mut state = self.rng.lock().expect("relay rng");
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    fn plan(&self) -> Plan {
        if self.live_links().len() >= MAX_LINKS {
            return Plan::Reset;
        }
        match self.mode() {
            RelayMode::BlackHole => Plan::Swallow,
            RelayMode::ResetFraction(fraction) if self.next_unit() < fraction => {
                if self.next_unit() < 0.5 {
                    Plan::Reset
                } else {
                    let bytes = 1 + (self.next_unit() * MAX_BYTES_BEFORE_RESET as f64) as u64;
                    Plan::Pass { reset_after: Some(bytes) }
                }
            }
            _ => Plan::Pass { reset_after: None },
        }
    }

    fn register(&self, reset_after: Option<u64>) -> Arc<Link> {
        let link = Arc::new(Link { cut: AtomicBool::new(false), budget: Mutex::new(reset_after) });
        self.links.lock().expect("relay links").push(Arc::downgrade(&link));
        link
    }
}

impl Link {
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// How many of `n` bytes may pass; cuts the link when the budget runs out.
    fn allow(&self, n: usize) -> usize {
        let mut budget = self.budget.lock().expect("link budget");
        let Some(left) = budget.as_mut() else { return n };
        let allowed = (*left).min(n as u64);
        *left -= allowed;
        if *left == 0 {
            self.cut.store(true, Ordering::Relaxed);
        }
        allowed as usize
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK_SIZE)
        .spawn(body)
        .expect("spawn relay thread")
}

/// Makes the socket's last close send a reset (SO_LINGER with a zero timeout).
fn arm_reset(socket: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on an open socket with a correctly sized `linger`.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Accepts until stopped; in `Refuse` mode the listener is closed, and bound again on the
/// same port when the mode changes.
fn accept_loop(mut listener: Option<TcpListener>, port: u16, shared: &Arc<Shared>) {
    while !shared.stopped() {
        if shared.mode() == RelayMode::Refuse {
            listener = None;
        } else if listener.is_none() {
            listener = listen(port).ok();
        }
        match listener.as_ref().map(TcpListener::accept) {
            Some(Ok((client, _))) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                start_link(client, shared);
            }
            Some(Err(e)) if e.kind() != ErrorKind::WouldBlock => panic!("relay accept: {e}"),
            _ => thread::sleep(TICK),
        }
    }
}

/// A non-blocking listener on `127.0.0.1:<port>` (so the accept loop sees the stop flag).
fn listen(port: u16) -> io::Result<TcpListener> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn start_link(client: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nonblocking(false);
    match shared.plan() {
        Plan::Reset => {
            shared.reset.fetch_add(1, Ordering::Relaxed);
            arm_reset(&client);
        }
        Plan::Swallow => {
            let link = shared.register(None);
            let shared = shared.clone();
            spawn("relay-black-hole", move || swallow(client, &link, &shared));
        }
        Plan::Pass { reset_after } => {
            if reset_after.is_some() {
                shared.reset.fetch_add(1, Ordering::Relaxed);
            }
            let link = shared.register(reset_after);
            let shared = shared.clone();
            spawn("relay-connect", move || connect_and_pump(client, link, shared));
        }
    }
}

/// Reads and drops what the client sends, until it closes or the link is cut.
fn swallow(mut client: TcpStream, link: &Link, shared: &Shared) {
    let _ = client.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    while !shared.stopped() && !link.is_cut() {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_tick(&e) => {}
            Err(_) => return,
        }
    }
    arm_reset(&client);
}

fn connect_and_pump(client: TcpStream, link: Arc<Link>, shared: Arc<Shared>) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) else {
        arm_reset(&client); // the target is down: the client sees the connection reset
        return;
    };
    let (Ok(client_2), Ok(upstream_2)) = (client.try_clone(), upstream.try_clone()) else {
        arm_reset(&client);
        return;
    };
    let (back_link, back_shared) = (link.clone(), shared.clone());
    spawn("relay-down", move || pump(upstream_2, client_2, &back_link, &back_shared));
    pump(client, upstream, &link, &shared);
}

fn is_tick(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Copies `from` → `to` until `from` ends (then half-closes `to`) or the link is cut (then
/// both sockets end with a reset). In `BlackHole` mode bytes are read and dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, shared: &Shared) {
    let _ = from.set_read_timeout(Some(TICK));
    let _ = to.set_write_timeout(Some(TICK));
    let mut buf = [0u8; 16 * 1024];
    while !shared.stopped() && !link.is_cut() {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if is_tick(&e) => continue,
            Err(_) => break,
        };
        if shared.mode() == RelayMode::BlackHole {
            continue;
        }
        let allowed = link.allow(n);
        if write_fully(&mut to, &buf[..allowed], link, shared).is_err() {
            break;
        }
    }
    link.cut.store(true, Ordering::Relaxed);
    arm_reset(&from);
    arm_reset(&to);
}

/// Writes all of `bytes` despite write timeouts, unless the link is cut or the relay stops.
fn write_fully(
    to: &mut TcpStream,
    mut bytes: &[u8],
    link: &Link,
    shared: &Shared,
) -> io::Result<()> {
    while !bytes.is_empty() {
        if shared.stopped() || link.is_cut() {
            return Err(ErrorKind::ConnectionAborted.into());
        }
        match to.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if is_tick(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
