//! Shared harness for the integration tests: per-test temp dirs and PKI, the fake
//! kube-apiserver and lite-apiserver as child processes, a small blocking HTTPS client, and
//! [`Edge`], the one fixture putting them together.
//! Every wait in here has a deadline, so a broken proxy fails a test instead of hanging it.

// Each test crate uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

#[path = "../../examples/support/pki.rs"]
pub mod pki;

pub mod client;
pub mod diagnostics;
pub mod edge;
pub mod kube;
pub mod process;
pub mod protobuf;
pub mod relay;
pub mod rotation;
pub mod token_request;
pub mod wire;

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use client::{Client, Tunnel, WatchStream};
pub use diagnostics::{Diagnostics, metric_value};
pub use edge::{Edge, EdgeSpec};
pub use kube::*;
pub use pki::Pki;
pub use process::{FakeApiserver, Lite, Proc};
pub use relay::{Relay, RelayMode};
pub use wire::{Headers, Response};

/// How often conditions are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A directory under the system temp dir, unique per call; removed on drop unless the test
/// is failing, so the files of a failed test (PKI, cache) can be inspected.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos =
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let name = format!(
            "lite-apiserver-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping {} for inspection", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `condition` every [`POLL_INTERVAL`] until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut condition: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One test's world: a temp dir holding a freshly generated PKI. Declare it first in a test
/// so it is dropped last, after the processes that use its files.
pub struct TestEnv {
    pub pki: Pki,
    pub dir: TempDir,
}

impl TestEnv {
    pub fn new(label: &str) -> TestEnv {
        let dir = TempDir::new(label);
        let pki = Pki::generate(&dir.join("pki")).expect("generate test PKI");
        TestEnv { pki, dir }
    }

    /// A fake kube-apiserver on an ephemeral port.
    pub fn fake(&self, extra_args: &[&str]) -> FakeApiserver {
        FakeApiserver::start(&self.pki, extra_args)
    }

    /// lite-apiserver in front of `upstream_port`, with the default flags plus `extra_args`.
    pub fn lite(&self, upstream_port: u16, extra_args: &[&str]) -> Lite {
        Lite::start(&self.pki, upstream_port, extra_args)
    }

    /// A client presenting the certificate `<name>.crt` (e.g. "kubelet"), or none.
    pub fn client(&self, port: u16, cert: Option<&str>) -> Client {
        match cert {
            Some(name) => Client::with_cert(&self.pki, port, name),
            None => Client::anonymous(&self.pki, port),
        }
    }
}
