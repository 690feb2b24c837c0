//! Child processes of the tests: the fake kube-apiserver example and the lite-apiserver
//! binary. Output is drained by threads into shared strings (so pipes never fill and
//! failures can show stderr); every child is killed when its handle drops.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pki::Pki;
use super::{TempDir, free_port, wait_for};

/// How long a process gets to become ready (listening) or to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running child process with its stdout and stderr captured.
pub struct Proc {
    name: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[String]) -> Proc {
        let name =
            program.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Proc { name, child, stdout, stderr, status: None }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Both streams, for failure messages (a logger may write to either).
    pub fn output(&self) -> String {
        format!("[stderr]\n{}[stdout]\n{}", self.stderr(), self.stdout())
    }

    /// The exit status if the process has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Polls for exit up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.exit_status())
    }

    /// Waits until the process exits and its output pipes are drained (the drain threads
    /// finish at EOF, shortly after exit).
    pub fn wait_output(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = self.wait_exit(timeout)?;
        // The pipes close at exit; give the drain threads a moment to see EOF.
        wait_for(Duration::from_secs(2), || {
            (Arc::strong_count(&self.stdout) == 1 && Arc::strong_count(&self.stderr) == 1)
                .then_some(())
        });
        Some(status)
    }

    /// Kills the process and returns all it wrote (for failure messages: reading the pipes
    /// while it runs can miss the lines it logged just before the failure).
    pub fn final_output(&mut self) -> String {
        let exited = self
            .exit_status()
            .map(|status| format!("[exited by itself: {status}]\n"))
            .unwrap_or_default();
        self.kill();
        self.wait_output(Duration::ZERO);
        format!("{exited}{}", self.output())
    }

    /// Resident set size, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let kib = status
            .lines()
            .find_map(|line| {
                line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
            })
            .unwrap_or_else(|| panic!("no VmRSS in {path}"));
        kib * 1024
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// Polls until a TCP connect to `port` succeeds; panics with stderr if the process exits
    /// first or the deadline passes.
    pub fn wait_listening(&mut self, port: u16) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let ready = wait_for(START_TIMEOUT, || {
            if let Some(status) = self.exit_status() {
                panic!(
                    "{} exited ({status}) before listening on {port}:\n{}",
                    self.name,
                    self.output()
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok().map(|_| ())
        });
        if ready.is_none() {
            panic!(
                "{} not listening on {port} after {START_TIMEOUT:?}:\n{}",
                self.name,
                self.output()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end on a thread, appending to the returned string.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(mut pipe) = pipe {
        let sink = text.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            }
        });
    }
    text
}

/// `<target>/<profile>/examples/fake_apiserver`, found from the test executable
/// (`<target>/<profile>/deps/<test>-<hash>`).
pub fn fake_apiserver_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir =
        exe.parent().and_then(Path::parent).expect("test exe lives in <target>/<profile>/deps");
    let bin = profile_dir.join("examples").join("fake_apiserver");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --examples` (with --release for release tests); \
         a plain `cargo test` builds it, `cargo test --test <name>` does not",
        bin.display()
    );
    bin
}

pub fn lite_apiserver_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lite-apiserver"))
}

/// The fake kube-apiserver example, serving `server.crt` and accepting client certs of the
/// PKI's CA.
pub struct FakeApiserver {
    pub port: u16,
    args: Vec<String>,
    proc: Option<Proc>,
}

impl FakeApiserver {
    /// Starts on an ephemeral port (read back from its `listening on` line).
    pub fn start(pki: &Pki, extra_args: &[&str]) -> FakeApiserver {
        FakeApiserver::start_on(pki, 0, extra_args)
    }

    /// Starts on `port` (0 = ephemeral).
    pub fn start_on(pki: &Pki, port: u16, extra_args: &[&str]) -> FakeApiserver {
        let mut args: Vec<String> = [
            "--cert",
            &pki.path("server.crt").to_string_lossy(),
            "--key",
            &pki.path("server.key").to_string_lossy(),
            "--client-ca",
            &pki.path("ca.crt").to_string_lossy(),
            "--address",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut fake = FakeApiserver { port, args, proc: None };
        fake.launch();
        fake
    }

    /// Kills the fake (the port stays reserved for [`FakeApiserver::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts again on the same port with the same flags.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(Proc::stderr).unwrap_or_default()
    }

    fn launch(&mut self) {
        let mut args = self.args.clone();
        args.extend(["--port".to_string(), self.port.to_string()]);
        let mut proc = Proc::spawn(&fake_apiserver_bin(), &args);
        let port = wait_for(START_TIMEOUT, || {
            if let Some(status) = proc.exit_status() {
                panic!("fake_apiserver exited ({status}) at start; stderr:\n{}", proc.stderr());
            }
            listening_port(&proc.stdout())
        });
        self.port = port.unwrap_or_else(|| {
            panic!("fake_apiserver printed no `listening on` line; stderr:\n{}", proc.stderr())
        });
        self.proc = Some(proc);
    }
}

impl Drop for FakeApiserver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- fake_apiserver output ---\n{}",
                self.proc.as_mut().map(Proc::final_output).unwrap_or_default()
            );
        }
    }
}

/// The port of a `listening on 127.0.0.1:<port>` line.
fn listening_port(stdout: &str) -> Option<u16> {
    stdout.lines().find_map(|line| {
        line.trim().strip_prefix("listening on ")?.rsplit(':').next()?.parse().ok()
    })
}

/// A lite-apiserver process, its port and its cache directory (kept across restarts).
pub struct Lite {
    pub port: u16,
    pub args: Vec<String>,
    proc: Option<Proc>,
    // Dropped after `proc` is killed (see Drop), so the process never sees its dir vanish.
    cache: TempDir,
}

impl Lite {
    /// The default flags (see [`Lite::default_args`]) plus `extra_args`; waits until ready.
    pub fn start(pki: &Pki, upstream_port: u16, extra_args: &[&str]) -> Lite {
        Lite::start_in(pki, upstream_port, TempDir::new("cache"), extra_args)
    }

    /// As [`Lite::start`], caching into `cache` (which the test may have prepared).
    pub fn start_in(pki: &Pki, upstream_port: u16, cache: TempDir, extra_args: &[&str]) -> Lite {
        let port = free_port();
        let mut args = Lite::default_args(pki, upstream_port, port, cache.path());
        args.extend(extra_args.iter().map(|s| s.to_string()));
        Lite::start_with_args(port, cache, args)
    }

    /// Runs exactly `args` (which must make it listen on `port`) and waits until ready.
    pub fn start_with_args(port: u16, cache: TempDir, args: Vec<String>) -> Lite {
        let mut lite = Lite { port, args, proc: None, cache };
        lite.launch();
        lite
    }

    /// Flags for a proxy on `port` in front of the fake at `upstream_port`, using the PKI's
    /// CA, serving cert and `tls.json`, and the diagnostics listener on an ephemeral port
    /// (its default port would collide between tests running in parallel).
    pub fn default_args(pki: &Pki, upstream_port: u16, port: u16, cache_dir: &Path) -> Vec<String> {
        let path = |file: &str| pki.path(file).to_string_lossy().into_owned();
        vec![
            format!("--ca-file={}", path("ca.crt")),
            format!("--tls-cert-file={}", path("server.crt")),
            format!("--tls-private-key-file={}", path("server.key")),
            format!("--tls-config-file={}", path("tls.json")),
            format!("--kube-apiserver-url=https://127.0.0.1:{upstream_port}"),
            format!("--port={port}"),
            format!("--file-cache-path={}", cache_dir.display()),
            "--diagnostics-port=0".to_string(),
            "--log-level=debug".to_string(),
        ]
    }

    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    pub fn proc(&mut self) -> &mut Proc {
        self.proc.as_mut().expect("lite-apiserver is running")
    }

    pub fn stderr(&self) -> String {
        self.proc.as_ref().map(Proc::stderr).unwrap_or_default()
    }

    /// Panics (with stderr) if the process has exited.
    pub fn assert_alive(&mut self) {
        let proc = self.proc();
        if let Some(status) = proc.exit_status() {
            panic!("lite-apiserver exited ({status}):\n{}", proc.output());
        }
    }

    pub fn kill9(&mut self) {
        if let Some(proc) = self.proc.as_mut() {
            proc.kill();
        }
    }

    pub fn sigterm(&mut self) {
        self.proc().signal(libc::SIGTERM);
    }

    /// Starts again with the same flags, port and cache dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    fn launch(&mut self) {
        let mut proc = Proc::spawn(&lite_apiserver_bin(), &self.args);
        proc.wait_listening(self.port);
        self.proc = Some(proc);
    }
}

impl Drop for Lite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- lite-apiserver output ---\n{}",
                self.proc.as_mut().map(Proc::final_output).unwrap_or_default()
            );
        }
        self.kill9();
    }
}

/// Runs lite-apiserver with `args` to completion (killing it after `timeout`).
pub fn run_lite(args: &[String], timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut proc = Proc::spawn(&lite_apiserver_bin(), args);
    let status = proc.wait_output(timeout);
    proc.kill();
    (status, proc.stdout(), proc.stderr())
}
