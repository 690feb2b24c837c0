//! Integration tests of certificate rotation (issue 4): the real lite-apiserver binary in
//! front of the fake kube-apiserver, whose `X-Fake-User`/`X-Fake-Serial` response headers
//! say which client certificate the proxy presented upstream. Files are rotated on disk the
//! way operators and the kubelet do it (renamed into place, or overwritten in place) and the
//! tests poll, with deadlines, until the proxy follows — or check that it does not follow
//! material that must not be applied. `--sync-duration=1` keeps reloads quick.

mod common;

use std::fs;
use std::time::Duration;

use common::rotation::{
    expired_client_pem, file_serial, rogue_server_pem, served_serial, tls_json, write_in_place,
    write_tls_json,
};
use common::*;
use lite_apiserver::x509;
use serde_json::Value;

const PODS: &str = "/api/v1/namespaces/default/pods";
const KUBELET_CN: &str = "system:node:edge-1";
const EDGE9_CN: &str = "system:node:edge-9";
const ANONYMOUS: &str = "system:anonymous";
const IDENTITIES: [&str; 3] = ["kubelet", "kube-proxy", "admin"];
const FAST_SYNC: &str = "--sync-duration=1";
/// Generous: a reload takes one sync period (1 s here), a retry one second.
const RELOAD_DEADLINE: Duration = Duration::from_secs(20);
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// A fake apiserver with a lite-apiserver in front of it and its diagnostics port. Fields
/// drop in order: the proxy, then the fake, then the PKI directory.
struct Rotating {
    lite: Lite,
    fake: FakeApiserver,
    env: TestEnv,
    diagnostics: Diagnostics,
}

/// Where the failure counter and the certificate warnings stood before a file was broken.
#[derive(Clone, Copy)]
struct Mark {
    failures: u64,
    warnings: usize,
}

impl Rotating {
    fn start(label: &str, lite_args: &[&str]) -> Rotating {
        Rotating::start_with(label, |_, args| {
            args.extend(lite_args.iter().map(|arg| arg.to_string()))
        })
    }

    /// Like `start`, with `customise` editing the proxy's flags (the defaults plus the
    /// diagnostics port) before it starts.
    fn start_with(label: &str, customise: impl FnOnce(&Pki, &mut Vec<String>)) -> Rotating {
        let env = TestEnv::new(label);
        let fake = env.fake(&[]);
        let (port, diagnostics, cache) =
            (free_port(), Diagnostics::on_free_port(), TempDir::new("cache"));
        let mut args = Lite::default_args(&env.pki, fake.port, port, cache.path());
        args.push(diagnostics.flag());
        customise(&env.pki, &mut args);
        let lite = Lite::start_with_args(port, cache, args);
        diagnostics.wait_up(&lite);
        Rotating { lite, fake, env, diagnostics }
    }

    fn client(&self, cert: Option<&str>) -> Client {
        self.env.client(self.lite.port, cert)
    }

    fn pki(&self) -> &Pki {
        &self.env.pki
    }

    fn reload_failures(&self) -> u64 {
        self.diagnostics.metric("lite_apiserver_cert_reload_failures_total")
    }

    fn debug_certs(&self) -> Value {
        let (status, body) = self.diagnostics.get("/debug/certs");
        assert_eq!(status, 200, "/debug/certs: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/debug/certs is not JSON ({e}): {body}"))
    }

    /// Warning lines logged by the certificate reloader so far.
    fn cert_warnings(&self) -> usize {
        self.lite
            .stderr()
            .lines()
            .filter(|line| line.contains("WARN") && line.contains("lite_apiserver::certs"))
            .count()
    }

    fn mark(&self) -> Mark {
        Mark { failures: self.reload_failures(), warnings: self.cert_warnings() }
    }

    /// After a file was broken (since `mark`): the reloader fails on it tick after tick,
    /// warns about it once, and `still_in_use` (which asserts the old material is served)
    /// holds throughout.
    fn assert_failing_quietly(&self, mark: Mark, mut still_in_use: impl FnMut()) {
        // Two failed ticks: the second one started after the broken file was complete, so
        // whatever it has to say about it has been said.
        self.wait_failures(mark.failures + 2, &mut still_in_use);
        let warnings = self.cert_warnings();
        assert!(
            warnings > mark.warnings,
            "no warning about the broken file:\n{}",
            self.lite.stderr()
        );
        let failures = self.reload_failures();
        self.wait_failures(failures + 3, &mut still_in_use);
        assert_eq!(
            self.cert_warnings(),
            warnings,
            "the warning repeats on every retry:\n{}",
            self.lite.stderr()
        );
    }

    fn wait_failures(&self, at_least: u64, still_in_use: &mut impl FnMut()) {
        let reached = wait_for(RELOAD_DEADLINE, || {
            still_in_use();
            (self.reload_failures() >= at_least).then_some(())
        });
        assert!(
            reached.is_some(),
            "lite_apiserver_cert_reload_failures_total stayed below {at_least}:\n{}",
            self.lite.stderr()
        );
    }

    /// Polls until `condition` holds, failing with the proxy's log after the deadline.
    fn eventually(&self, what: &str, mut condition: impl FnMut() -> bool) {
        if wait_for(RELOAD_DEADLINE, || condition().then_some(())).is_none() {
            panic!("{what}: not within {RELOAD_DEADLINE:?}:\n{}", self.lite.stderr());
        }
    }
}

/// Who the fake apiserver saw behind the proxy: `X-Fake-User` and `X-Fake-Serial`.
fn upstream_view(client: &mut Client) -> (String, Option<String>) {
    let resp = client.get(PODS).expect_status(200);
    let user = resp
        .header("x-fake-user")
        .unwrap_or_else(|| panic!("no X-Fake-User in {:?}", resp.headers));
    (user.to_string(), resp.header("x-fake-serial").map(str::to_string))
}

/// The serial of the client certificate the proxy presented upstream.
fn upstream_serial(client: &mut Client) -> String {
    let (user, serial) = upstream_view(client);
    serial.unwrap_or_else(|| panic!("the proxy presented no client certificate (user {user})"))
}

fn assert_upstream_serial(client: &mut Client, expected: &str) {
    assert_eq!(
        upstream_serial(client),
        expected,
        "the proxy presented another certificate upstream"
    );
}

fn pki_file(pki: &Pki, name: &str) -> Vec<u8> {
    fs::read(pki.path(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn first_half(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len() / 2]
}

fn create_pod(client: &mut Client, name: &str) {
    let body = serde_json::to_vec(&pod(name)).expect("serialize pod");
    client.request("POST", PODS, &[("Content-Type", "application/json")], &body).expect_status(201);
}

/// The `/debug/certs` entry for `cn`, if listed.
fn listed_identity(certs: &Value, cn: &str) -> Option<Value> {
    let identities =
        certs["identities"].as_array().unwrap_or_else(|| panic!("no identities list: {certs}"));
    identities.iter().find(|identity| identity["commonName"] == cn).cloned()
}

// ---------------------------------------------------------------------------------------
// Client identities
// ---------------------------------------------------------------------------------------

#[test]
fn rotated_identity_reaches_upstream_with_its_new_serial_while_old_watches_stream_on() {
    let setup = Rotating::start("rotate-identity", &[FAST_SYNC]);
    let mut kubelet = setup.client(Some("kubelet"));
    let old = file_serial(&setup.pki().path("kubelet.crt"));
    // This also leaves an idle pooled upstream connection of the old identity behind.
    assert_upstream_serial(&mut kubelet, &old);
    let version = resource_version(&kubelet.get(PODS).expect_status(200).json());
    let mut watcher = setup.client(Some("kubelet"));
    let mut watch = watcher.watch(&format!("{PODS}?watch=true&resourceVersion={version}"));

    let new = setup.pki().issue_client("kubelet", KUBELET_CN).expect("re-issue kubelet cert");
    assert_ne!(new, old);
    setup.eventually("the rotated kubelet cert is presented upstream", || {
        upstream_serial(&mut kubelet) == new
    });
    for _ in 0..5 {
        assert_upstream_serial(&mut kubelet, &new);
    }
    assert_upstream_serial(&mut setup.client(Some("kubelet")), &new);

    // The watch opened before the rotation is not cut: it still delivers events.
    create_pod(&mut setup.client(Some("admin")), "after-rotation");
    watch.expect_change(EVENT_TIMEOUT, "ADDED", "after-rotation");

    let listed =
        listed_identity(&setup.debug_certs(), KUBELET_CN).expect("kubelet listed in /debug/certs");
    assert_eq!(listed["serial"], new.as_str(), "{listed}");
    let stderr = setup.lite.stderr();
    assert!(
        stderr
            .lines()
            .any(|line| line.contains(KUBELET_CN) && line.contains(&old) && line.contains(&new)),
        "no log line names the rotated CN with its old and new serial:\n{stderr}"
    );
}

#[test]
fn half_written_identity_is_not_applied_until_complete() {
    let setup = Rotating::start("half-written", &[FAST_SYNC]);
    let mut kubelet = setup.client(Some("kubelet"));
    let old = upstream_serial(&mut kubelet);
    // The next cert and key, written in place over kubelet.crt/.key piece by piece.
    let next =
        setup.pki().issue_client("kubelet-next", KUBELET_CN).expect("issue next kubelet cert");
    let (cert, key) =
        (pki_file(setup.pki(), "kubelet-next.crt"), pki_file(setup.pki(), "kubelet-next.key"));
    let (cert_path, key_path) = (setup.pki().path("kubelet.crt"), setup.pki().path("kubelet.key"));

    let mark = setup.mark();
    write_in_place(&cert_path, first_half(&cert));
    setup.assert_failing_quietly(mark, || assert_upstream_serial(&mut kubelet, &old));
    write_in_place(&key_path, &key);
    let mark = setup.mark();
    setup.wait_failures(mark.failures + 2, &mut || assert_upstream_serial(&mut kubelet, &old));
    write_in_place(&cert_path, &cert);
    setup.eventually("the completed cert is presented upstream", || {
        upstream_serial(&mut kubelet) == next
    });
}

/// Ways the kubelet identity's files can be wrong on disk.
#[derive(Debug, Clone, Copy)]
enum Breakage {
    TruncatedPem,
    KeyOfAnotherCert,
    ExpiredCert,
    MissingCert,
}

impl Breakage {
    const ALL: [Breakage; 4] = [
        Breakage::TruncatedPem,
        Breakage::KeyOfAnotherCert,
        Breakage::ExpiredCert,
        Breakage::MissingCert,
    ];

    /// Breaks `kubelet.crt`/`kubelet.key` this way.
    fn apply(self, pki: &Pki) {
        let (cert_path, key_path) = (pki.path("kubelet.crt"), pki.path("kubelet.key"));
        match self {
            Breakage::TruncatedPem => {
                write_in_place(&cert_path, first_half(&pki_file(pki, "kubelet.crt")))
            }
            Breakage::KeyOfAnotherCert => write_in_place(&key_path, &pki_file(pki, "admin.key")),
            Breakage::ExpiredCert => {
                let (cert, key) = expired_client_pem(pki, KUBELET_CN);
                // Cert first: the expiry is then the only fault the reloader ever sees.
                write_in_place(&cert_path, cert.as_bytes());
                write_in_place(&key_path, key.as_bytes());
            }
            Breakage::MissingCert => fs::remove_file(&cert_path).expect("remove kubelet.crt"),
        }
    }
}

#[test]
fn broken_identity_files_keep_the_old_identity_until_fixed() {
    let setup = Rotating::start("broken-identity", &[FAST_SYNC]);
    let pki = setup.pki();
    let mut kubelet = setup.client(Some("kubelet"));
    let mut in_use = upstream_serial(&mut kubelet);
    for breakage in Breakage::ALL {
        let mark = setup.mark();
        breakage.apply(pki);
        setup.assert_failing_quietly(mark, || {
            let serial = upstream_serial(&mut kubelet);
            assert_eq!(
                serial, in_use,
                "{breakage:?}: the proxy stopped presenting the old identity"
            );
        });
        let fixed = pki.issue_client("kubelet", KUBELET_CN).expect("re-issue kubelet cert");
        let what = format!("after {breakage:?}, a fixed cert applies");
        setup.eventually(&what, || upstream_serial(&mut kubelet) == fixed);
        in_use = fixed;
    }
    let listed =
        listed_identity(&setup.debug_certs(), KUBELET_CN).expect("kubelet listed in /debug/certs");
    assert_eq!(listed["serial"], in_use.as_str(), "{listed}");
}

/// The kubelet's own layout: `kubelet-client-current.pem` holds cert and key together and is
/// a symlink the kubelet swaps to a new `kubelet-client-<date>.pem` when it renews.
#[test]
fn kubelet_style_combined_pem_behind_a_symlink_rotates() {
    let setup = Rotating::start_with("kubelet-pem", |pki, args| {
        combine_pem(pki, "kubelet", "kubelet-client-1.pem");
        std::os::unix::fs::symlink(
            pki.path("kubelet-client-1.pem"),
            pki.path("kubelet-client-current.pem"),
        )
        .expect("symlink kubelet-client-current.pem");
        let current = pki.path("kubelet-client-current.pem");
        let entries = serde_json::json!([{"cert": current, "key": current}, {"cert": pki.path("admin.crt"), "key": pki.path("admin.key")}]);
        write_in_place(&pki.path("kubelet-tls.json"), entries.to_string().as_bytes());
        for arg in args.iter_mut() {
            *arg = arg.replace("/tls.json", "/kubelet-tls.json");
        }
        args.push(FAST_SYNC.to_string());
    });
    let pki = setup.pki();
    let mut kubelet = setup.client(Some("kubelet"));
    assert_upstream_serial(&mut kubelet, &file_serial(&pki.path("kubelet-client-1.pem")));

    let renewed =
        pki.issue_client("kubelet-renewed", KUBELET_CN).expect("issue renewed kubelet cert");
    combine_pem(pki, "kubelet-renewed", "kubelet-client-2.pem");
    let link = pki.path("kubelet-client-current.pem.tmp");
    std::os::unix::fs::symlink(pki.path("kubelet-client-2.pem"), &link)
        .expect("symlink the renewed pem");
    fs::rename(&link, pki.path("kubelet-client-current.pem")).expect("swap the symlink");
    setup.eventually("the renewed kubelet pem is presented upstream", || {
        upstream_serial(&mut kubelet) == renewed
    });
}

/// Writes `<name>.crt` followed by `<name>.key` into one file, as the kubelet stores them.
fn combine_pem(pki: &Pki, name: &str, combined: &str) {
    let mut pem = pki_file(pki, &format!("{name}.crt"));
    pem.extend(pki_file(pki, &format!("{name}.key")));
    write_in_place(&pki.path(combined), &pem);
}

/// A file broken, restored to what is in use, then broken the same way again: that second
/// breakage is a new change and must be reported too.
#[test]
fn the_same_breakage_warns_again_after_the_file_was_restored() {
    let setup = Rotating::start("broken-twice", &[FAST_SYNC]);
    let pki = setup.pki();
    let mut kubelet = setup.client(Some("kubelet"));
    let in_use = upstream_serial(&mut kubelet);
    let cert_path = pki.path("kubelet.crt");
    let good = pki_file(pki, "kubelet.crt");

    let mark = setup.mark();
    write_in_place(&cert_path, first_half(&good));
    setup.assert_failing_quietly(mark, || assert_upstream_serial(&mut kubelet, &in_use));

    // Restore the cert, and add an entry in the same go: once the new entry is served, the
    // reloader has read the restored cert too.
    write_in_place(&cert_path, &good);
    pki.issue_client("edge-9", EDGE9_CN).expect("issue edge-9 cert");
    write_tls_json(pki, &["kubelet", "kube-proxy", "admin", "edge-9"]);
    let mut edge9 = setup.client(Some("edge-9"));
    setup.eventually("the edge-9 entry applies", || upstream_view(&mut edge9).0 == EDGE9_CN);
    assert_upstream_serial(&mut kubelet, &in_use);

    let mark = setup.mark();
    write_in_place(&cert_path, first_half(&good));
    setup.assert_failing_quietly(mark, || assert_upstream_serial(&mut kubelet, &in_use));
}

#[test]
fn tls_config_entries_added_and_removed_select_and_release_their_cn() {
    let setup = Rotating::start("tls-config", &[FAST_SYNC]);
    let pki = setup.pki();
    let edge9_serial = pki.issue_client("edge-9", EDGE9_CN).expect("issue edge-9 cert");
    let mut edge9 = setup.client(Some("edge-9"));
    let mut kubelet = setup.client(Some("kubelet"));
    let mut admin = setup.client(Some("admin"));
    let kubelet_serial = upstream_serial(&mut kubelet);
    assert_eq!(
        upstream_view(&mut edge9),
        (ANONYMOUS.to_string(), None),
        "an unlisted CN uses the default identity"
    );

    // A half-written list is not applied: the old entries keep working, edge-9 stays default.
    let with_edge9 = tls_json(pki, &["kubelet", "kube-proxy", "admin", "edge-9"]);
    let tls_json_path = pki.path("tls.json");
    let mark = setup.mark();
    write_in_place(&tls_json_path, first_half(&with_edge9));
    setup.assert_failing_quietly(mark, || {
        assert_upstream_serial(&mut kubelet, &kubelet_serial);
        assert_eq!(upstream_view(&mut edge9).0, ANONYMOUS);
    });

    write_in_place(&tls_json_path, &with_edge9);
    setup.eventually("the added edge-9 entry is selected by its CN", || {
        upstream_view(&mut edge9) == (EDGE9_CN.to_string(), Some(edge9_serial.clone()))
    });
    assert_upstream_serial(&mut kubelet, &kubelet_serial);
    let listed =
        listed_identity(&setup.debug_certs(), EDGE9_CN).expect("edge-9 listed in /debug/certs");
    assert_eq!(listed["serial"], edge9_serial.as_str(), "{listed}");

    write_tls_json(pki, &["kube-proxy", "admin"]);
    setup.eventually("removed entries fall back to the default identity", || {
        upstream_view(&mut edge9) == (ANONYMOUS.to_string(), None)
            && upstream_view(&mut kubelet) == (ANONYMOUS.to_string(), None)
    });
    assert_eq!(upstream_view(&mut admin).0, "admin", "a kept entry still works");
    let certs = setup.debug_certs();
    assert!(listed_identity(&certs, KUBELET_CN).is_none(), "removed kubelet still listed: {certs}");
    assert!(listed_identity(&certs, EDGE9_CN).is_none(), "removed edge-9 still listed: {certs}");
}

// ---------------------------------------------------------------------------------------
// Serving certificate, cloud CA, SIGHUP, /debug/certs
// ---------------------------------------------------------------------------------------

#[test]
fn rotated_serving_cert_is_presented_on_new_handshakes() {
    let setup = Rotating::start("serving", &[FAST_SYNC]);
    let pki = setup.pki();
    assert_eq!(served_serial(pki, setup.lite.port), file_serial(&pki.path("server.crt")));
    let mut kept = setup.client(Some("kubelet"));
    kept.get(PODS).expect_status(200);

    let second = pki.reissue_server().expect("re-issue serving cert");
    setup.eventually("new handshakes see the re-issued serving cert", || {
        served_serial(pki, setup.lite.port) == second
    });
    kept.get(PODS).expect_status(200);
    assert_eq!(kept.connections_opened(), 1, "a connection made before the rotation was dropped");

    let mark = setup.mark();
    write_in_place(&pki.path("server.crt"), first_half(&pki_file(pki, "server.crt")));
    setup.assert_failing_quietly(mark, || assert_eq!(served_serial(pki, setup.lite.port), second));
    let third = pki.reissue_server().expect("re-issue serving cert");
    setup.eventually("a fixed serving cert applies", || {
        served_serial(pki, setup.lite.port) == third
    });
}

#[test]
fn sighup_applies_rotations_at_once_despite_a_long_sync_duration() {
    let mut setup = Rotating::start("sighup", &["--sync-duration=3600"]);
    let pki = setup.pki();
    let mut kubelet = setup.client(Some("kubelet"));
    let old_identity = upstream_serial(&mut kubelet);
    let old_serving = served_serial(pki, setup.lite.port);
    let new_identity = pki.issue_client("kubelet", KUBELET_CN).expect("re-issue kubelet cert");
    let new_serving = pki.reissue_server().expect("re-issue serving cert");

    // Nothing re-reads the files for an hour: the old material stays in use.
    for _ in 0..5 {
        assert_upstream_serial(&mut kubelet, &old_identity);
        assert_eq!(served_serial(pki, setup.lite.port), old_serving);
        std::thread::sleep(Duration::from_millis(100));
    }

    setup.lite.proc().signal(libc::SIGHUP);
    let pki = setup.pki();
    setup.eventually("SIGHUP applies the rotated identity", || {
        upstream_serial(&mut kubelet) == new_identity
    });
    setup.eventually("SIGHUP applies the rotated serving cert", || {
        served_serial(pki, setup.lite.port) == new_serving
    });
}

/// The cloud's serving cert moves to a new CA: the CA bundle first gains the new CA, then the
/// cloud switches certs. The proxy must keep reaching the cloud — including its health probe,
/// which decides whether requests go to the cloud at all.
#[test]
fn cloud_ca_rotation_keeps_the_cloud_reachable() {
    // The proxy's own serving cert and the cloud CA bundle are separate files here, so the
    // cloud's cert can change under the fake alone.
    let mut setup = Rotating::start_with("cloud-ca", |pki, args| {
        for (from, to) in
            [("server.crt", "lite.crt"), ("server.key", "lite.key"), ("ca.crt", "cloud-ca.crt")]
        {
            fs::copy(pki.path(from), pki.path(to)).expect("copy PKI file");
        }
        for arg in args.iter_mut() {
            *arg = arg.replace("/server.crt", "/lite.crt").replace("/server.key", "/lite.key");
        }
        args.push(format!("--apiserver-ca-file={}", pki.path("cloud-ca.crt").display()));
        args.push(FAST_SYNC.to_string());
    });
    let mut kubelet = setup.client(Some("kubelet"));
    let kubelet_serial = upstream_serial(&mut kubelet);

    // Trust both CAs, and wait until the reloader has taken the bundle (it logs the change).
    let pki = &setup.env.pki;
    let mut bundle = pki_file(pki, "ca.crt");
    bundle.extend(pki_file(pki, "rogue-ca.crt"));
    let infos_before = cert_infos(&setup.lite.stderr());
    write_in_place(&pki.path("cloud-ca.crt"), &bundle);
    setup.eventually("the CA bundle is reloaded", || {
        cert_infos(&setup.lite.stderr()) > infos_before
    });

    // The cloud goes away and comes back with a cert from the new CA.
    setup.fake.stop();
    setup.eventually("the proxy notices the cloud is down", || {
        let _ = kubelet.try_get(PODS);
        setup.diagnostics.get("/readyz").0 == 503
    });
    let (cert, key) = rogue_server_pem(pki);
    write_in_place(&pki.path("server.crt"), cert.as_bytes());
    write_in_place(&pki.path("server.key"), key.as_bytes());
    setup.fake.restart();
    setup.eventually("the cloud, now with a cert of the new CA, is reachable again", || {
        setup.diagnostics.get("/readyz").0 == 200
    });
    assert_upstream_serial(&mut kubelet, &kubelet_serial);
}

/// Info lines of the certificate reloader so far.
fn cert_infos(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|line| line.contains("INFO") && line.contains("lite_apiserver::certs"))
        .count()
}

#[test]
fn debug_certs_lists_cn_serial_and_expiry_without_key_material() {
    let setup = Rotating::start("debug-certs", &[]);
    let pki = setup.pki();
    let (status, body) = setup.diagnostics.get("/debug/certs");
    assert_eq!(status, 200, "{body}");
    let certs: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    for name in IDENTITIES {
        let pem = pki_file(pki, &format!("{name}.crt"));
        let der =
            rustls_pemfile::certs(&mut pem.as_slice()).next().expect("a cert").expect("parse cert");
        let summary = x509::summarize(&der).expect("summarize cert");
        let cn = summary.common_name.clone().expect("a CN");
        let listed =
            listed_identity(&certs, &cn).unwrap_or_else(|| panic!("{cn} not listed: {certs}"));
        assert_eq!(listed["serial"], summary.serial_hex.as_str(), "{listed}");
        assert_eq!(
            listed["notAfter"],
            x509::format_unix(summary.not_after_unix).as_str(),
            "{listed}"
        );

        let key = String::from_utf8(pki_file(pki, &format!("{name}.key"))).expect("PEM is text");
        for line in key.lines().filter(|line| !line.starts_with("-----") && line.len() >= 16) {
            assert!(!body.contains(line), "/debug/certs shows key material of {name}: {body}");
        }
    }
    assert!(!body.contains("PRIVATE KEY"), "/debug/certs shows a private key: {body}");
}
