//! The fake's service-account token keys: JWTs signed RS256 (fixed test keys committed under
//! `examples/support/`, so tests can also forge or pre-date tokens with them) or ES256 (a
//! P-256 key generated at start), the JWKS of every key used so far (old keys stay published
//! after a rotation, as kube keeps verifying tokens of its previous keys), and the signature
//! check of a token it signed. Key ids are base64url(SHA-256(SubjectPublicKeyInfo DER)), as
//! kube-apiserver computes them.

use std::sync::{Mutex, MutexGuard, PoisonError};

use ring::digest::{SHA256, digest};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};

/// TEST-ONLY RSA keys, PKCS#8: the first signs by default, each RS256 rotation takes the next.
const RSA_TEST_KEYS: &str = include_str!("../support/sa-signing-keys.test-only.pem");

// DER pieces of a SubjectPublicKeyInfo.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const TAG_SEQUENCE: u8 = 0x30;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OID: u8 = 0x06;
const DER_NULL: &[u8] = &[0x05, 0x00];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    pub fn parse(text: &str) -> Option<Alg> {
        match text {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }
}

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A public key as published in the JWKS and used to verify.
struct Published {
    kid: String,
    alg: Alg,
    /// RSAPublicKey DER, or the uncompressed P-256 point.
    public: Vec<u8>,
    jwk: Value,
}

struct State {
    kid: String,
    pair: Pair,
    published: Vec<Published>,
    rsa_keys_used: usize,
}

/// Why a bearer token is not one this signer vouches for.
#[derive(Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// Not three base64url segments with a JSON header and payload.
    Malformed,
    /// A `kid`/`alg` that no published key has.
    UnknownKey,
    BadSignature,
}

pub struct Signer {
    rsa_keys: Vec<Vec<u8>>,
    rng: SystemRandom,
    state: Mutex<State>,
}

impl Signer {
    pub fn new(alg: Alg) -> Result<Signer, String> {
        let rsa_keys = rustls_pemfile::pkcs8_private_keys(&mut RSA_TEST_KEYS.as_bytes())
            .map(|key| key.map(|k| k.secret_pkcs8_der().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the RSA test keys: {e}"))?;
        let rng = SystemRandom::new();
        let (pair, rsa_keys_used) = new_pair(alg, &rsa_keys, 0, &rng)?;
        let published = publish(&pair);
        let state =
            State { kid: published.kid.clone(), pair, published: vec![published], rsa_keys_used };
        Ok(Signer { rsa_keys, rng, state: Mutex::new(state) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Signs with a new key from now on; the old public keys stay published. Returns the new
    /// key's id.
    pub fn rotate(&self, alg: Alg) -> Result<String, String> {
        let mut state = self.state();
        let (pair, rsa_keys_used) = new_pair(alg, &self.rsa_keys, state.rsa_keys_used, &self.rng)?;
        let published = publish(&pair);
        state.kid = published.kid.clone();
        state.pair = pair;
        state.rsa_keys_used = rsa_keys_used;
        state.published.push(published);
        Ok(state.kid.clone())
    }

    /// A compact JWS of `claims` with the current key (`alg`, `kid` in the header).
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let state = self.state();
        let alg = match state.pair {
            Pair::Rsa(_) => Alg::Rs256,
            Pair::Ec(_) => Alg::Es256,
        };
        let header = json!({ "alg": alg.name(), "kid": state.kid });
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = match &state.pair {
            Pair::Rsa(pair) => {
                let mut signature = vec![0u8; pair.public().modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    signing_input.as_bytes(),
                    &mut signature,
                )
                .map_err(|_| "RSA signing failed".to_string())?;
                signature
            }
            Pair::Ec(pair) => pair
                .sign(&self.rng, signing_input.as_bytes())
                .map_err(|_| "ECDSA signing failed".to_string())?
                .as_ref()
                .to_vec(),
        };
        Ok(format!("{signing_input}.{}", base64url(&signature)))
    }

    /// The claims of a token signed by one of the published keys (expiry is the caller's).
    pub fn verify(&self, token: &str) -> Result<Value, VerifyError> {
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let json = |segment: &str| -> Result<Value, VerifyError> {
            let bytes = base64url_decode(segment).ok_or(VerifyError::Malformed)?;
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .filter(Value::is_object)
                .ok_or(VerifyError::Malformed)
        };
        let header = json(header)?;
        let signature = base64url_decode(signature).ok_or(VerifyError::Malformed)?;
        let state = self.state();
        let key = state
            .published
            .iter()
            .find(|k| header["kid"] == k.kid.as_str() && header["alg"] == k.alg.name())
            .ok_or(VerifyError::UnknownKey)?;
        let algorithm: &dyn signature::VerificationAlgorithm = match key.alg {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
        };
        let signing_input = &token[..header_and_payload_len(token)];
        UnparsedPublicKey::new(algorithm, &key.public)
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| VerifyError::BadSignature)?;
        json(payload)
    }

    /// `{"keys": [...]}`: every key used since start, newest last.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.state().published.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// The algorithms of the published keys, for the discovery document.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs: Vec<&str> = self.state().published.iter().map(|k| k.alg.name()).collect();
        algs.sort_unstable();
        algs.dedup();
        algs
    }
}

/// The byte length of `header.payload` in a token known to have three segments.
fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn new_pair(
    alg: Alg,
    rsa_keys: &[Vec<u8>],
    rsa_keys_used: usize,
    rng: &SystemRandom,
) -> Result<(Pair, usize), String> {
    match alg {
        Alg::Rs256 => {
            let der = rsa_keys.get(rsa_keys_used).ok_or_else(|| {
                format!("all {} RSA test keys have been used; rotate to ES256", rsa_keys.len())
            })?;
            let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| format!("RSA test key: {e}"))?;
            Ok((Pair::Rsa(pair), rsa_keys_used + 1))
        }
        Alg::Es256 => {
            let ecdsa = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(ecdsa, rng)
                .map_err(|_| "cannot generate a P-256 key".to_string())?;
            let pair = EcdsaKeyPair::from_pkcs8(ecdsa, pkcs8.as_ref(), rng)
                .map_err(|e| format!("P-256 key: {e}"))?;
            Ok((Pair::Ec(pair), rsa_keys_used))
        }
    }
}

fn publish(pair: &Pair) -> Published {
    match pair {
        Pair::Rsa(pair) => {
            let public = pair.public().as_ref().to_vec();
            let kid =
                key_id(&spki(&[der(TAG_OID, OID_RSA_ENCRYPTION), DER_NULL.to_vec()], &public));
            let components = PublicKeyComponents::<Vec<u8>>::from(pair.public());
            let jwk = json!({
                "use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
                "n": base64url(&components.n), "e": base64url(&components.e),
            });
            Published { kid, alg: Alg::Rs256, public, jwk }
        }
        Pair::Ec(pair) => {
            // The uncompressed point: 0x04 || x || y.
            let public = pair.public_key().as_ref().to_vec();
            let algorithm = [der(TAG_OID, OID_EC_PUBLIC_KEY), der(TAG_OID, OID_PRIME256V1)];
            let kid = key_id(&spki(&algorithm, &public));
            let jwk = json!({
                "use": "sig", "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
                "x": base64url(&public[1..33]), "y": base64url(&public[33..65]),
            });
            Published { kid, alg: Alg::Es256, public, jwk }
        }
    }
}

fn key_id(spki_der: &[u8]) -> String {
    base64url(digest(&SHA256, spki_der).as_ref())
}

/// SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { algorithm... }, BIT STRING { 0, key } }.
fn spki(algorithm: &[Vec<u8>], key: &[u8]) -> Vec<u8> {
    let bit_string = der(TAG_BIT_STRING, &[&[0u8][..], key].concat());
    der(TAG_SEQUENCE, &[der(TAG_SEQUENCE, &algorithm.concat()), bit_string].concat())
}

/// One DER TLV with a definite length.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|&b| b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url, as JWTs and JWKs write it.
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let mut padded = [0u8; 3];
        padded[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, padded[0], padded[1], padded[2]]);
        for i in 0..=chunk.len() {
            out.push(BASE64URL[((bits >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut bits = 0u32;
        for &c in chunk {
            bits = (bits << 6) | BASE64URL.iter().position(|&a| a == c)? as u32;
        }
        bits <<= 6 * (4 - chunk.len() as u32);
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_both_algorithms_and_keeps_old_keys_after_rotation() {
        let signer = Signer::new(Alg::Rs256).unwrap();
        let claims = json!({ "sub": "system:serviceaccount:default:web", "exp": 1 });
        let rsa_token = signer.sign(&claims).unwrap();
        assert_eq!(signer.verify(&rsa_token), Ok(claims.clone()));

        let es_kid = signer.rotate(Alg::Es256).unwrap();
        let es_token = signer.sign(&claims).unwrap();
        assert_eq!(signer.verify(&es_token), Ok(claims.clone()));
        assert_eq!(signer.verify(&rsa_token), Ok(claims.clone()), "old key still verifies");
        let jwks = signer.jwks();
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
        assert_eq!(jwks["keys"][1]["kid"], es_kid.as_str());
        assert_eq!(jwks["keys"][1]["crv"], "P-256");
        assert_eq!(jwks["keys"][0]["kty"], "RSA");
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
        assert_eq!(signer.algorithms(), ["ES256", "RS256"]);

        let rsa_kid = signer.rotate(Alg::Rs256).unwrap();
        assert_ne!(Some(rsa_kid.as_str()), jwks["keys"][0]["kid"].as_str(), "a new RSA key");
    }

    #[test]
    fn a_tampered_or_foreign_token_does_not_verify() {
        let signer = Signer::new(Alg::Es256).unwrap();
        let token = signer.sign(&json!({ "sub": "a" })).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged_payload = base64url(br#"{"sub":"b"}"#);
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(signer.verify(&forged), Err(VerifyError::BadSignature));

        let other = Signer::new(Alg::Es256).unwrap().sign(&json!({ "sub": "a" })).unwrap();
        assert_eq!(signer.verify(&other), Err(VerifyError::UnknownKey));
        let none = format!("{}.{}.", base64url(br#"{"alg":"none"}"#), parts[1]);
        assert_eq!(signer.verify(&none), Err(VerifyError::UnknownKey));
        for malformed in ["", "a.b", "a.b.c.d", "!!.e30.", "e30.e30.!!"] {
            assert_eq!(signer.verify(malformed), Err(VerifyError::Malformed), "{malformed}");
        }
    }

    #[test]
    fn key_ids_are_the_sha256_of_the_subject_public_key_info() {
        // The SPKI of the first RSA test key as openssl writes it would hash to the same kid;
        // here: its DER has the fixed RSA prefix and a 270-byte RSAPublicKey.
        let signer = Signer::new(Alg::Rs256).unwrap();
        let state = signer.state();
        let spki_der = spki(
            &[der(TAG_OID, OID_RSA_ENCRYPTION), DER_NULL.to_vec()],
            &state.published[0].public,
        );
        assert_eq!(&spki_der[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(state.kid, key_id(&spki_der));
        assert_eq!(state.kid.len(), 43);
    }

    #[test]
    fn base64url_round_trips() {
        for input in [&b""[..], b"f", b"fo", b"foo", b"foob", &[0xfb, 0xff, 0xfe, 0x00]] {
            assert_eq!(base64url_decode(&base64url(input)).as_deref(), Some(input));
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
