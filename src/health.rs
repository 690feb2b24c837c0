//! Cloud health: a prober thread that asks the cloud apiserver `/readyz` with the
//! default identity every few seconds (every second while it is down) and reports
//! transitions to the reactor. Any HTTP answer, even 401, proves the cloud is
//! reachable. The reactor also kicks the prober when a request fails to connect,
//! so recovery is noticed quickly.
//!
//! Name resolution happens here too, off the reactor thread: each report carries the
//! address to connect to.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

const INTERVAL_UP: Duration = Duration::from_secs(5);
const INTERVAL_DOWN: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub enum HealthReport {
    Up(SocketAddr),
    Down(String),
}

pub struct ProbeTarget {
    pub host: String,
    pub port: u16,
    pub server_name: ServerName<'static>,
    pub config: Arc<ClientConfig>,
    pub timeout: Duration,
}

/// What the reactor tells the prober.
enum ProberMessage {
    /// A request failed: probe now.
    Kick,
    /// The default identity was rebuilt (e.g. for a new cloud CA): probe with it from now on.
    Config(Arc<ClientConfig>),
}

/// Handle to the prober thread: `kick` asks for a probe now.
pub struct Prober {
    kicks: Sender<ProberMessage>,
}

impl Prober {
    pub fn kick(&self) {
        let _ = self.kicks.send(ProberMessage::Kick);
    }

    /// Probes with `config` from now on (and at once).
    pub fn use_config(&self, config: Arc<ClientConfig>) {
        let _ = self.kicks.send(ProberMessage::Config(config));
    }
}

/// Starts the prober; reports go to `reports`, and `wake` is called after each one.
pub fn spawn(
    target: ProbeTarget,
    reports: Sender<HealthReport>,
    wake: impl Fn() + Send + 'static,
) -> std::io::Result<Prober> {
    let (kicks, kicked) = mpsc::channel();
    thread::Builder::new()
        .name("cloud-prober".into())
        .spawn(move || run(target, kicked, reports, wake))?;
    Ok(Prober { kicks })
}

fn run(
    mut target: ProbeTarget,
    kicked: Receiver<ProberMessage>,
    reports: Sender<HealthReport>,
    wake: impl Fn(),
) {
    let mut last_up: Option<bool> = None;
    loop {
        let report = probe(&target);
        let up = matches!(report, HealthReport::Up(_));
        if last_up != Some(up) {
            if reports.send(report).is_err() {
                return; // the reactor is gone
            }
            wake();
            last_up = Some(up);
        }
        let interval = if up { INTERVAL_UP } else { INTERVAL_DOWN };
        match kicked.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(message) => {
                for message in std::iter::once(message).chain(kicked.try_iter()) {
                    if let ProberMessage::Config(config) = message {
                        target.config = config;
                    }
                }
                // The reactor saw a failure: report the next probe even if unchanged,
                // since the reactor may have marked the cloud down meanwhile.
                last_up = None;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One probe: resolve, connect, TLS, `GET /readyz`, read a status line.
pub fn probe(target: &ProbeTarget) -> HealthReport {
    let addr = match (target.host.as_str(), target.port).to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => addr,
        Ok(None) => return HealthReport::Down(format!("{} has no address", target.host)),
        Err(e) => return HealthReport::Down(format!("cannot resolve {}: {e}", target.host)),
    };
    match request_readyz(target, addr) {
        Ok(()) => HealthReport::Up(addr),
        Err(e) => HealthReport::Down(format!("probe of {addr} failed: {e}")),
    }
}

fn request_readyz(target: &ProbeTarget, addr: SocketAddr) -> std::io::Result<()> {
    let socket = TcpStream::connect_timeout(&addr, target.timeout)?;
    socket.set_read_timeout(Some(target.timeout))?;
    socket.set_write_timeout(Some(target.timeout))?;
    let tls = rustls::ClientConnection::new(target.config.clone(), target.server_name.clone())
        .map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(tls, socket);
    let host = host_header(&target.host, target.port);
    stream.write_all(
        format!("GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(std::io::Error::other("not an HTTP response"))
    }
}

/// `Host` header value for the cloud apiserver (IPv6 literals in brackets).
pub fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}
