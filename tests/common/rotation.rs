//! Certificate material for the rotation tests beyond what `pki.rs` offers: certificates
//! with a chosen issuer and validity (expired, or signed by the rogue CA), in-place
//! (non-atomic) file writes that a reader can catch half-done, `tls.json` rewrites, and the
//! serials of a certificate file and of the certificate a TLS server presents.

use std::fs;
use std::io::{BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::pki::Pki;

/// How long an issued certificate is valid.
#[derive(Clone, Copy)]
pub enum Validity {
    /// 2020 to 2099.
    Current,
    /// 2020 to 2021: expired, everything else about it right.
    Expired,
}

/// A leaf certificate for `cn` (and `sans`) signed by one of the PKI's CAs, `"ca"` or
/// `"rogue-ca"`; nothing is written. Returns `(cert_pem, key_pem)`.
pub fn leaf_pem(
    pki: &Pki,
    ca: &str,
    cn: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    validity: Validity,
) -> (String, String) {
    let ca_key = fs::read_to_string(pki.path(&format!("{ca}.key"))).expect("read CA key");
    let issuer = Issuer::new(ca_params(ca), KeyPair::from_pem(&ca_key).expect("parse CA key"));
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("valid SANs");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = match validity {
        Validity::Current => rcgen::date_time_ymd(2099, 1, 1),
        Validity::Expired => rcgen::date_time_ymd(2021, 1, 1),
    };
    let key = KeyPair::generate().expect("generate key");
    let cert = params.signed_by(&key, &issuer).expect("sign certificate");
    (cert.pem(), key.serialize_pem())
}

/// A client certificate for `cn`, signed by the cluster CA, expired since 2021.
pub fn expired_client_pem(pki: &Pki, cn: &str) -> (String, String) {
    leaf_pem(pki, "ca", cn, &[], ExtendedKeyUsagePurpose::ClientAuth, Validity::Expired)
}

/// A serving certificate for localhost/127.0.0.1 signed by the rogue CA: what the cloud
/// apiserver presents after its CA was replaced.
pub fn rogue_server_pem(pki: &Pki) -> (String, String) {
    let sans = ["localhost", "127.0.0.1"];
    leaf_pem(
        pki,
        "rogue-ca",
        "kube-apiserver",
        &sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        Validity::Current,
    )
}

/// The issuer side of `pki.rs`'s CA `ca`: an issued certificate's issuer must match the
/// CA's subject byte for byte, and `pki.rs` names its CAs so.
fn ca_params(ca: &str) -> CertificateParams {
    let cn = match ca {
        "ca" => "lite-apiserver-test-ca",
        "rogue-ca" => "lite-apiserver-rogue-ca",
        other => panic!("the test PKI has no CA named {other}"),
    };
    let mut params = CertificateParams::new(Vec::new()).expect("empty SAN list");
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
}

/// Overwrites `path` in place (truncate, then write), as `cp` or an editor does: unlike
/// `pki.rs`'s rename, a reader can see the file empty or partly written.
pub fn write_in_place(path: &Path, contents: &[u8]) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    file.sync_all().unwrap_or_else(|e| panic!("sync {}: {e}", path.display()));
}

/// Rewrites `tls.json` (through a rename) to list exactly the identities `<name>.crt`/`.key`.
pub fn write_tls_json(pki: &Pki, names: &[&str]) {
    let tmp = pki.path("tls.json.tmp");
    write_in_place(&tmp, &tls_json(pki, names));
    fs::rename(&tmp, pki.path("tls.json")).expect("rename tls.json into place");
}

/// The text of a `tls.json` listing the identities `<name>.crt`/`.key`.
pub fn tls_json(pki: &Pki, names: &[&str]) -> Vec<u8> {
    let entries: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            serde_json::json!({
                "cert": pki.path(&format!("{name}.crt")),
                "key": pki.path(&format!("{name}.key")),
            })
        })
        .collect();
    serde_json::to_vec_pretty(&entries).expect("serialize tls.json")
}

/// The serial (lowercase hex, as `pki::serial_hex`) of the first certificate in a PEM file.
pub fn file_serial(path: &Path) -> String {
    let pem = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let cert = rustls_pemfile::certs(&mut BufReader::new(pem.as_slice()))
        .next()
        .unwrap_or_else(|| panic!("no certificate in {}", path.display()))
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    der_serial(&cert)
}

/// The serial of the certificate presented by the TLS server on 127.0.0.1:`port`, read from
/// a fresh handshake (verified against the PKI's CA, as `localhost`, no client certificate).
pub fn served_serial(pki: &Pki, port: u16) -> String {
    let mut roots = RootCertStore::empty();
    let ca = fs::read(pki.path("ca.crt")).expect("read ca.crt");
    for cert in rustls_pemfile::certs(&mut BufReader::new(ca.as_slice())) {
        roots.add(cert.expect("parse ca.crt")).expect("add CA to root store");
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("valid server name");
    let mut tls = ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut sock = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10))).expect("set read timeout");
    sock.set_write_timeout(Some(Duration::from_secs(10))).expect("set write timeout");
    while tls.is_handshaking() {
        tls.complete_io(&mut sock)
            .unwrap_or_else(|e| panic!("TLS handshake with port {port}: {e}"));
    }
    let leaf =
        tls.peer_certificates().and_then(|chain| chain.first()).expect("server sent a certificate");
    der_serial(leaf)
}

fn der_serial(cert: &CertificateDer<'_>) -> String {
    lite_apiserver::x509::summarize(cert).expect("summarize certificate").serial_hex
}
