//! systemd readiness notification (`Type=notify`), by hand: one datagram to the
//! socket named by `NOTIFY_SOCKET`, as `sd_notify(3)` describes — no libsystemd, so
//! the static binary stays static. Outside systemd the variable is unset and every
//! call is a no-op; a failed send is logged at debug and never stops the proxy,
//! because systemd's own start timeout is the right judge of a missing `READY=1`.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable systemd sets for `Type=notify` services.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Tells systemd the service is up: call once, after the listeners are bound.
pub fn ready() {
    notify("READY=1");
}

/// Tells systemd a graceful shutdown has begun.
pub fn stopping() {
    notify("STOPPING=1");
}

/// Sends `state` (newline-separated `KEY=value` lines) to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else { return };
    let Some(socket) = socket.to_str() else {
        log::debug!("sd_notify: {NOTIFY_SOCKET} is not UTF-8; not sending {state:?}");
        return;
    };
    if let Err(e) = notify_to(socket, state) {
        log::debug!("sd_notify: cannot send {state:?} to {socket}: {e}");
    }
}

/// Sends `state` as one datagram to `socket`: a filesystem path, or `@name` for a
/// socket in the abstract namespace.
pub fn notify_to(socket: &str, state: &str) -> io::Result<()> {
    let addr = socket_addr(socket)?;
    let sender = UnixDatagram::unbound()?;
    let sent = sender.send_to_addr(state.as_bytes(), &addr)?;
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"))
    }
}

fn socket_addr(socket: &str) -> io::Result<SocketAddr> {
    match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name),
        None if socket.starts_with('/') => SocketAddr::from_pathname(socket),
        // systemd also knows `vsock:` addresses (for VMs); an edge node never gets one.
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor @abstract",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(listener: &UnixDatagram) -> String {
        listener.set_read_timeout(Some(Duration::from_secs(5))).expect("set timeout");
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("sdnotify-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        notify_to(path.to_str().expect("utf-8 temp path"), "READY=1").expect("send");
        assert_eq!(receive(&listener), "READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("lite-apiserver-sdnotify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(&name).expect("abstract addr");
        let listener = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        notify_to(&format!("@{name}"), "STOPPING=1").expect("send");
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn rejects_what_is_not_a_socket_address() {
        assert!(notify_to("relative/notify.sock", "READY=1").is_err());
        assert!(notify_to("/nonexistent/dir/notify.sock", "READY=1").is_err());
    }
}
