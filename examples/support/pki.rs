//! Test PKI: a cluster CA, a serving certificate, client identities and a rogue CA, written
//! as PEM files into one directory. Shared by the examples (`gen_certs`, `fake_apiserver`)
//! and the integration tests, which include this file with `#[path = ...] mod pki;`, so it
//! depends on nothing else under `examples/`.
//!
//! Serial numbers are random, so every re-issue differs. [`serial_hex`] is the one format
//! used everywhere a serial is shown: the integer's lowercase hex digits without leading
//! zeros (no `0x`, no colons) — e.g. `5f3a…`. The fake apiserver reports the serial of a
//! presented client certificate in `X-Fake-Serial` with the same function.

// Each including binary uses a different subset of this module.
#![allow(dead_code)]

use std::error::Error;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CLUSTER_CA_CN: &str = "lite-apiserver-test-ca";
const ROGUE_CA_CN: &str = "lite-apiserver-rogue-ca";
const SERVER_CN: &str = "kube-apiserver";
const SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The client identities written by [`Pki::generate`] and listed in `tls.json`:
/// (file name, CN, O).
const CLIENT_IDENTITIES: [(&str, &str, Option<&str>); 3] = [
    ("kubelet", "system:node:edge-1", Some("system:nodes")),
    ("kube-proxy", "system:kube-proxy", None),
    ("admin", "admin", Some("system:masters")),
];

/// A directory of PEM files; see [`Pki::generate`] for its contents.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Creates `dir` and writes:
    /// - `ca.crt`/`ca.key`: the cluster CA;
    /// - `server.crt`/`server.key`: serving cert (SAN localhost, 127.0.0.1, ::1), used by both
    ///   the fake apiserver and lite-apiserver;
    /// - client certs signed by the CA: `kubelet` (CN `system:node:edge-1`, O `system:nodes`),
    ///   `kube-proxy` (CN `system:kube-proxy`), `admin` (CN `admin`, O `system:masters`);
    /// - `rogue-ca.crt`/`.key` (an unrelated CA) and `rogue.crt`/`.key` (CN `admin`, signed by it);
    /// - `tls.json`: `[{"cert": "<abs>/kubelet.crt", "key": "<abs>/kubelet.key"}, ...]` for the
    ///   three client identities.
    pub fn generate(dir: &Path) -> Result<Pki> {
        fs::create_dir_all(dir)?;
        let pki = Pki { dir: fs::canonicalize(dir)? };
        pki.write_ca("ca", CLUSTER_CA_CN)?;
        pki.reissue_server()?;
        for (name, cn, org) in CLIENT_IDENTITIES {
            pki.issue("ca", name, &leaf_params(cn, org, ExtendedKeyUsagePurpose::ClientAuth)?)?;
        }
        pki.write_ca("rogue-ca", ROGUE_CA_CN)?;
        pki.issue(
            "rogue-ca",
            "rogue",
            &leaf_params("admin", None, ExtendedKeyUsagePurpose::ClientAuth)?,
        )?;
        pki.write_tls_json()?;
        Ok(pki)
    }

    /// Issues (or re-issues, with a new serial) the client cert `<name>.crt`/`<name>.key` with
    /// the given CN, signed by the CA in `dir` (its key is read back from `ca.key`). Returns the
    /// serial in the [`serial_hex`] format.
    pub fn issue_client(&self, name: &str, cn: &str) -> Result<String> {
        self.issue("ca", name, &leaf_params(cn, None, ExtendedKeyUsagePurpose::ClientAuth)?)
    }

    /// Re-issues `server.crt`/`server.key` with a new key and serial (serving-cert rotation);
    /// returns the serial in the [`serial_hex`] format.
    pub fn reissue_server(&self) -> Result<String> {
        let mut params = leaf_params(SERVER_CN, None, ExtendedKeyUsagePurpose::ServerAuth)?;
        params.subject_alt_names =
            CertificateParams::new(SERVER_SANS.map(String::from))?.subject_alt_names;
        self.issue("ca", "server", &params)
    }

    /// The absolute path of `file` inside the PKI directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn write_ca(&self, name: &str, cn: &str) -> Result<()> {
        let key = KeyPair::generate()?;
        let cert = ca_params(cn)?.self_signed(&key)?;
        self.write_pair(name, &cert.pem(), &key.serialize_pem())
    }

    /// Signs `params` with the CA stored as `<ca>.key` and writes `<name>.crt`/`<name>.key`.
    fn issue(&self, ca: &str, name: &str, params: &CertificateParams) -> Result<String> {
        let issuer = self.load_issuer(ca)?;
        let key = KeyPair::generate()?;
        let mut params = params.clone();
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.signed_by(&key, &issuer)?;
        self.write_pair(name, &cert.pem(), &key.serialize_pem())?;
        Ok(serial_hex(&serial))
    }

    /// rcgen cannot parse certificates without its x509-parser feature, so the issuer's
    /// subject is rebuilt from the same parameters `write_ca` used; only the key is read back.
    fn load_issuer(&self, ca: &str) -> Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&fs::read_to_string(self.path(&format!("{ca}.key")))?)?;
        let cn = if ca == "rogue-ca" { ROGUE_CA_CN } else { CLUSTER_CA_CN };
        Ok(Issuer::new(ca_params(cn)?, key))
    }

    /// Writes the key first and the certificate second, each through a rename, so a reader
    /// never sees a half-written file (it may briefly see a new key with the old cert).
    fn write_pair(&self, name: &str, cert_pem: &str, key_pem: &str) -> Result<()> {
        write_atomically(&self.path(&format!("{name}.key")), key_pem.as_bytes(), 0o600)?;
        write_atomically(&self.path(&format!("{name}.crt")), cert_pem.as_bytes(), 0o644)
    }

    fn write_tls_json(&self) -> Result<()> {
        let entries: Vec<serde_json::Value> = CLIENT_IDENTITIES
            .iter()
            .map(|(name, _, _)| {
                serde_json::json!({
                    "cert": self.path(&format!("{name}.crt")),
                    "key": self.path(&format!("{name}.key")),
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&entries)?;
        write_atomically(&self.path("tls.json"), text.as_bytes(), 0o644)
    }
}

/// The canonical text form of a certificate serial (the DER INTEGER's big-endian bytes):
/// lowercase hex, leading zeros removed, `"0"` for zero.
pub fn serial_hex(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() { "0".to_string() } else { trimmed.to_string() }
}

fn ca_params(cn: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params)?;
    Ok(params)
}

fn leaf_params(
    cn: &str,
    org: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::new())?;
    params.distinguished_name.remove(DnType::CommonName);
    if let Some(org) = org {
        params.distinguished_name.push(DnType::OrganizationName, org);
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params)?;
    Ok(params)
}

/// Valid from yesterday (tolerates clock skew) to one year from now.
fn set_validity(params: &mut CertificateParams) -> Result<()> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + (since_epoch - DAY);
    params.not_after = epoch + (since_epoch + 365 * DAY);
    Ok(())
}

/// 16 random bytes, positive and without a leading zero byte, so the DER encoding keeps
/// exactly these bytes and [`serial_hex`] is always 32 digits.
fn random_serial() -> Result<[u8; 16]> {
    let mut serial = [0u8; 16];
    SystemRandom::new().fill(&mut serial).map_err(|_| "system random generator failed")?;
    serial[0] = 0x10 + serial[0] % 0x70;
    Ok(serial)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}
