//! Unix signals as poll events: a self-pipe written by an async-signal-safe handler
//! and read by the reactor. SIGTERM/SIGINT stop the proxy gracefully; SIGHUP asks
//! for an immediate certificate reload.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Reload,
}

pub struct Signals {
    read_end: OwnedFd,
    _write_end: OwnedFd,
}

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
    let byte = signal as u8;
    // SAFETY: write(2) is async-signal-safe; a full pipe just drops the byte. The handler
    // may interrupt code between a failing call and its read of errno, so errno is put
    // back as it was (__errno_location is the thread's own errno, also signal-safe).
    unsafe {
        let errno = libc::__errno_location();
        let saved = *errno;
        libc::write(fd, (&byte as *const u8).cast(), 1);
        *errno = saved;
    }
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: fds is a valid array of two ints, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by us alone.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        PIPE_WRITE_FD.store(write_end.as_raw_fd(), Ordering::Relaxed);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            // SAFETY: a zeroed sigaction with a handler of the right signature is valid.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as usize;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Signals { read_end, _write_end: write_end })
    }

    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut SourceFd(&self.read_end.as_raw_fd()), token, Interest::READABLE)
    }

    /// Every signal received since the last call.
    pub fn drain(&self) -> Vec<Signal> {
        let mut buf = [0u8; 64];
        let mut received = Vec::new();
        loop {
            // SAFETY: buf is valid for buf.len() bytes.
            let n = unsafe {
                libc::read(self.read_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            };
            if n <= 0 {
                break;
            }
            for &byte in &buf[..n as usize] {
                received.push(if i32::from(byte) == libc::SIGHUP {
                    Signal::Reload
                } else {
                    Signal::Terminate
                });
            }
        }
        received
    }
}
