//! Command-line tests of the lite-apiserver binary: config errors exit 2 with one line naming
//! the problem, `--help`/`--version` exit 0, and SuperEdge-style command lines (including
//! flags we do not implement) start a working proxy.

mod common;

use std::time::Duration;

use common::process::run_lite;
use common::*;

/// How long a command line that should be rejected may run before the test gives up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Valid flags for a proxy on a free port (with nothing upstream), with `--<name>=…`
/// flags removed for each name in `without`.
fn valid_args(env: &TestEnv, without: &[&str]) -> Vec<String> {
    let args = Lite::default_args(&env.pki, free_port(), free_port(), &env.dir.join("cache"));
    args.into_iter()
        .filter(|arg| !without.iter().any(|name| arg.starts_with(&format!("--{name}="))))
        .collect()
}

/// Runs the binary with `args` and checks it exits 2 printing exactly one non-empty stderr
/// line that contains `needle`.
fn assert_config_error(args: &[String], needle: &str) {
    let (status, stdout, stderr) = run_lite(args, EXIT_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!("still running after {EXIT_TIMEOUT:?} with {args:?}; stderr:\n{stderr}")
    });
    assert_eq!(
        status.code(),
        Some(2),
        "exit status for {args:?}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got:\n{stderr}");
    assert!(lines[0].contains(needle), "stderr line does not mention {needle:?}: {}", lines[0]);
}

#[test]
fn unknown_flag_is_rejected_naming_it() {
    let env = TestEnv::new("flag-unknown");
    let mut args = valid_args(&env, &[]);
    args.push("--no-such-flag=1".to_string());
    assert_config_error(&args, "--no-such-flag");
}

#[test]
fn missing_required_flag_is_rejected_naming_it() {
    let env = TestEnv::new("flag-missing");
    for required in ["ca-file", "tls-cert-file", "tls-private-key-file", "kube-apiserver-url"] {
        assert_config_error(&valid_args(&env, &[required]), &format!("--{required}"));
    }
}

#[test]
fn non_numeric_port_is_rejected() {
    let env = TestEnv::new("flag-port");
    let mut args = valid_args(&env, &["port"]);
    args.push("--port=notanumber".to_string());
    assert_config_error(&args, "notanumber");
}

#[test]
fn bad_boolean_is_rejected() {
    let env = TestEnv::new("flag-bool");
    let mut args = valid_args(&env, &[]);
    args.push("--insecure=maybe".to_string());
    assert_config_error(&args, "maybe");
}

#[test]
fn flag_without_its_value_is_rejected() {
    let env = TestEnv::new("flag-novalue");
    let mut args = valid_args(&env, &["timeout"]);
    args.push("--timeout".to_string());
    assert_config_error(&args, "--timeout");
}

#[test]
fn nonexistent_ca_file_is_rejected_naming_the_path() {
    let env = TestEnv::new("flag-ca-path");
    let missing = env.dir.join("no-such-dir").join("ca.crt");
    let mut args = valid_args(&env, &["ca-file"]);
    args.push(format!("--ca-file={}", missing.display()));
    assert_config_error(&args, &missing.display().to_string());
}

#[test]
fn help_prints_usage_and_exits_zero() {
    let (status, stdout, stderr) = run_lite(&["--help".to_string()], EXIT_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr:\n{stderr}");
    for flag in ["--kube-apiserver-url", "--ca-file", "--tls-config-file", "--port"] {
        assert!(stdout.contains(flag), "usage does not mention {flag}:\n{stdout}");
    }
}

#[test]
fn version_prints_version_and_exits_zero() {
    let (status, stdout, stderr) = run_lite(&["--version".to_string()], EXIT_TIMEOUT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "stderr:\n{stderr}");
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "version output: {stdout}");
}

#[test]
fn superedge_only_flags_are_accepted_with_a_warning() {
    let env = TestEnv::new("flag-superedge");
    let fake = env.fake(&[]);
    let extra = [
        "--network-interface=eth0",
        "--url-mux-cache=true",
        "--profiling=false",
        "--badger-cache-path=/tmp/x",
    ];
    let lite = env.lite(fake.port, &extra);
    env.client(lite.port, Some("kubelet")).get("/version").expect_status(200);
    let warned = wait_for(Duration::from_secs(2), || {
        lite.stderr().contains("network-interface").then_some(())
    });
    assert!(warned.is_some(), "no warning naming --network-interface; stderr:\n{}", lite.stderr());
}

/// The command line of edgeadm's lite-apiserver systemd unit (host-only url plus a separate
/// port, `--v=4`, `--sync-duration=120`), with space-separated values, must start a proxy.
#[test]
fn edgeadm_unit_command_line_starts_a_working_proxy() {
    let env = TestEnv::new("flag-edgeadm");
    let fake = env.fake(&[]);
    let port = free_port();
    let cache = TempDir::new("edgeadm-cache");
    let path = |file: &str| env.pki.path(file).display().to_string();
    let args: Vec<String> = [
        "--ca-file",
        &path("ca.crt"),
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-private-key-file",
        &path("server.key"),
        "--kube-apiserver-url",
        "127.0.0.1",
        "--kube-apiserver-port",
        &fake.port.to_string(),
        "--port",
        &port.to_string(),
        "--address",
        "127.0.0.1",
        "--tls-config-file",
        &path("tls.json"),
        "--file-cache-path",
        &cache.path().display().to_string(),
        "--sync-duration=120",
        "--timeout=3",
        "--v=4",
        "--insecure=false",
        "--modify-request-accept=true",
        "--diagnostics-port=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let lite = Lite::start_with_args(port, cache, args);
    let resp = env.client(lite.port, Some("kube-proxy")).get("/version").expect_status(200);
    assert_eq!(resp.header("x-fake-user"), Some("system:kube-proxy"));
}
