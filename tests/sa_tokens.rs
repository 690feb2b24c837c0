//! Integration tests of service-account tokens verified with the cloud issuer's keys
//! (issue 14), with real processes: the fake signs tokens (TokenRequest) and publishes its
//! keys, lite-apiserver learns them online and files a verified token's answers under its
//! service account, `sa:<ns>/<name>`. A pod whose token rotated reads offline what its
//! old token cached and what its watch kept current; tokens the cloud signed with a
//! rotated key verify once the keys are refetched, and keys kept in the cache directory
//! verify after a restart with the cloud cut. Forged tokens (a wrong signature, `alg:
//! none`, a key or an issuer that is not the cloud's) never get the account's cache, and
//! online are the cloud's to refuse; an expired token gets `401` offline. `/debug/cache`
//! names identities, never tokens.
//!
//! Tokens are forged here with `ring`: ES256 with a key of the test's own, RS256 with the
//! fake's committed test-only keys (examples/support/sa-signing-keys.test-only.pem).

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use serde_json::{Value, json};

const PODS: &str = "/api/v1/namespaces/default/pods";
const CONFIG_MAP: &str = "/api/v1/namespaces/default/configmaps/app-config";
const CONFIG_MAPS: &str = "/api/v1/namespaces/default/configmaps";
/// The fake's issuer (examples/fake_apiserver/tokens.rs).
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The cache identity of the `default` service account of `default`.
const ACCOUNT: &str = "sa:default/default";
/// The seeded pod the tokens are bound to (it runs as `default`).
const POD: &str = "web-1";
const GREETING: &str = "hello from the cloud";
const CACHE_HEADER: &str = "x-lite-apiserver-cache";
/// The fake's RS256 keys: the first signs by default, the second after an RS256 rotation.
const RSA_TEST_KEYS: &str = include_str!("../examples/support/sa-signing-keys.test-only.pem");
/// One failed probe takes the node offline.
const LITE_ARGS: &[&str] = &["--cloud-down-after=1"];
/// The deadline of every read: a proxy that hangs fails the test.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Generous bound for anything asynchronous (probes, cache writes, a watch event).
const SETTLE: Duration = Duration::from_secs(20);
/// A refetch asked for an unknown `kid` waits until a minute after the last fetch.
const KEY_REFRESH: Duration = Duration::from_secs(90);

// ----- the node ---------------------------------------------------------------------

/// The fake, a relay standing for the link, and lite-apiserver in front; returns once the
/// cloud is up.
fn start(label: &str, fake_args: &[&str]) -> Edge {
    let edge = Edge::build(label).fake_args(fake_args).lite_args(LITE_ARGS).through_relay().start();
    let up = wait_for(SETTLE, || (edge.metric("lite_apiserver_cloud_up") == 1).then_some(()));
    assert!(up.is_some(), "the cloud never came up: {:?}", edge.diag("/readyz"));
    edge
}

/// A client of the proxy as a pod is: no client certificate, a bearer token per request.
fn pod_client(edge: &Edge) -> Client {
    edge.client(None).timeout(READ_TIMEOUT)
}

fn read(client: &mut Client, path: &str, token: &str) -> Response {
    let authorization = format!("Bearer {token}");
    let headers = [("Authorization", authorization.as_str()), ("Accept", "application/json")];
    client.request("GET", path, &headers, b"")
}

/// Cuts the open connections to the cloud (the prober's kept one too), refuses new ones,
/// and waits until the proxy says it is offline.
fn cut_cloud(edge: &Edge) {
    edge.relay().set_mode(RelayMode::Refuse);
    edge.relay().cut_all();
    wait_offline(edge);
}

fn wait_offline(edge: &Edge) {
    let offline = wait_for(SETTLE, || (edge.diag("/readyz").0 == 503).then_some(()));
    assert!(offline.is_some(), "the proxy never went offline: {:?}", edge.diag("/readyz"));
}

/// Waits until the proxy keeps the key `kid` in its cache directory (it stores fetched
/// keys just before handing them to the event loop).
fn wait_keys(edge: &Edge, kid: &str) {
    let path = edge.lite.cache_dir().join("issuer-keys.json");
    let kept = wait_for(KEY_REFRESH, || stored_keys(&path).contains(kid).then_some(()));
    assert!(
        kept.is_some(),
        "the proxy never kept key {kid} in {}: {}",
        path.display(),
        stored_keys(&path)
    );
}

fn stored_keys(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A `200` answered from the cache; its body.
fn expect_hit(resp: Response, what: &str) -> Value {
    assert_eq!(resp.status, 200, "{what}: {}", resp.text());
    assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "{what}: not from the cache");
    resp.json()
}

fn pod_names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().unwrap_or_else(|| panic!("not a list: {list}"));
    items.iter().filter_map(|pod| pod["metadata"]["name"].as_str()).map(String::from).collect()
}

// ----- tokens the cloud issues ------------------------------------------------------

/// A token of service account `default/<account>` from a TokenRequest at the fake
/// (as kubelet would get it), bound to pod `pod` if one is given, for `audiences` (none:
/// the apiserver's own).
fn token_request(edge: &Edge, account: &str, pod: Option<&str>, audiences: &[&str]) -> String {
    let mut admin = edge.cloud_admin().timeout(READ_TIMEOUT);
    let mut spec = json!({ "expirationSeconds": 3600, "audiences": audiences });
    if let Some(name) = pod {
        let object = admin.get(&format!("{PODS}/{name}")).expect_status(200).json();
        let uid = object["metadata"]["uid"].as_str().expect("pod uid").to_string();
        spec["boundObjectRef"] = json!({ "kind": "Pod", "apiVersion": "v1", "name": name,
                                         "uid": uid });
    }
    let body = json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": spec });
    let path = format!("/api/v1/namespaces/default/serviceaccounts/{account}/token");
    let headers = [("Content-Type", "application/json")];
    let resp = admin.request("POST", &path, &headers, body.to_string().as_bytes());
    let answer = resp.expect_status(201).json();
    answer["status"]["token"].as_str().expect("status.token").to_string()
}

/// A token of the pod's own account, as kubelet rotates it.
fn pod_token(edge: &Edge) -> String {
    token_request(edge, "default", Some(POD), &[])
}

// ----- JWTs -------------------------------------------------------------------------

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn encode_base64url(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(BASE64URL[((word >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn decode_base64url(text: &str) -> Vec<u8> {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let sextet = BASE64URL.iter().position(|&b| b == c).expect("base64url character");
        acc = (acc << 6) | sextet as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The three segments of a compact JWS.
fn segments(token: &str) -> [&str; 3] {
    let parts: Vec<&str> = token.split('.').collect();
    parts.try_into().unwrap_or_else(|_| panic!("not a compact JWS"))
}

fn segment_json(segment: &str) -> Value {
    serde_json::from_slice(&decode_base64url(segment)).expect("JSON segment")
}

fn header_of(token: &str) -> Value {
    segment_json(segments(token)[0])
}

fn claims_of(token: &str) -> Value {
    segment_json(segments(token)[1])
}

fn kid(token: &str) -> String {
    header_of(token)["kid"].as_str().expect("kid").to_string()
}

fn encode_json(value: &Value) -> String {
    encode_base64url(value.to_string().as_bytes())
}

/// `header.claims.` + `sign(signing input)`.
fn compact(header: &Value, claims: &Value, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let input = format!("{}.{}", encode_json(header), encode_json(claims));
    let signature = sign(input.as_bytes());
    format!("{input}.{}", encode_base64url(&signature))
}

/// The fake's `index`th RS256 test key.
fn fake_rsa_key(index: usize) -> RsaKeyPair {
    let mut pem = RSA_TEST_KEYS.as_bytes();
    let key = rustls_pemfile::pkcs8_private_keys(&mut pem).nth(index).expect("test key").unwrap();
    RsaKeyPair::from_pkcs8(key.secret_pkcs8_der()).expect("RSA test key")
}

fn rs256(key: &RsaKeyPair) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    move |input| {
        let mut signature = vec![0; key.public().modulus_len()];
        let rng = SystemRandom::new();
        key.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut signature).expect("RS256");
        signature
    }
}

/// A P-256 key of the test's own: one the cloud never published.
fn foreign_ec_key() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 key");
    EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("P-256 key")
}

fn es256(key: &EcdsaKeyPair) -> impl FnOnce(&[u8]) -> Vec<u8> + '_ {
    move |input| key.sign(&SystemRandom::new(), input).expect("ES256").as_ref().to_vec()
}

fn unix_now() -> i64 {
    let elapsed = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    i64::try_from(elapsed.as_secs()).expect("seconds")
}

/// Tokens that claim `account_token`'s service account and must not get its cache, by
/// what is wrong with them.
fn forgeries(edge: &Edge, account_token: &str) -> Vec<(&'static str, String)> {
    let claims = claims_of(account_token);
    assert_eq!(claims["iss"], ISSUER, "{claims}");
    let header = header_of(account_token);
    let intruder = token_request(edge, "intruder", None, &[]);
    let mut claimed = claims_of(&intruder);
    claimed["sub"] = claims["sub"].clone();
    claimed["kubernetes.io"] = claims["kubernetes.io"].clone();
    let [intruder_header, _, intruder_signature] = segments(&intruder);
    let other_account = format!("{intruder_header}.{}.{intruder_signature}", encode_json(&claimed));
    let alg_none =
        format!("{}.{}.", encode_json(&json!({"alg": "none", "typ": "JWT"})), encode_json(&claims));
    let own_key = foreign_ec_key();
    let foreign_header = json!({"alg": "ES256", "kid": "a-key-the-cloud-never-published"});
    let foreign_key = compact(&foreign_header, &claims, es256(&own_key));
    let under_cloud_kid =
        compact(&json!({"alg": "ES256", "kid": kid(account_token)}), &claims, es256(&own_key));
    let unpublished_rsa = fake_rsa_key(1);
    let unpublished = compact(&header, &claims, rs256(&unpublished_rsa));
    let mut other_issuer_claims = claims.clone();
    other_issuer_claims["iss"] = json!("https://another-cluster.example");
    other_issuer_claims["aud"] = json!(["https://another-cluster.example"]);
    let cloud_key = fake_rsa_key(0);
    let other_issuer = compact(&header, &other_issuer_claims, rs256(&cloud_key));
    vec![
        ("another account's signature under this account's sub", other_account),
        ("alg none", alg_none),
        ("ES256 with a key the cloud never published", foreign_key),
        ("ES256 by a foreign key under the cloud's kid", under_cloud_kid),
        ("RS256 by an unpublished key under the cloud's kid", unpublished),
        ("another issuer, signed with the cloud's key", other_issuer),
    ]
}

// ----- tests ------------------------------------------------------------------------

/// A pod reads and watches with token A; kubelet rotates its token to B; the cloud
/// changes while A's watch streams; the link is cut: B reads from what A cached, and the
/// list A's watch kept current is B's list too.
#[test]
fn a_rotated_token_reads_what_the_old_one_cached_and_its_watch_kept_current() {
    let edge = start("sa-rotation", &[]);
    let token_a = pod_token(&edge);
    wait_keys(&edge, &kid(&token_a));
    let mut pod = pod_client(&edge);
    let list = read(&mut pod, PODS, &token_a).expect_status(200).json();
    assert!(!pod_names(&list).contains(&"rotated-in".to_string()));
    read(&mut pod, CONFIG_MAP, &token_a).expect_status(200);
    edge.wait_stored(2);
    let mut watcher = pod_client(&edge);
    let watch_path = format!("{PODS}?watch=true&resourceVersion={}", resource_version(&list));
    let authorization = format!("Bearer {token_a}");
    let mut watch = watcher
        .try_watch(&watch_path, &[("Authorization", &authorization)])
        .unwrap_or_else(|e| panic!("watch with token A: {e}"));

    let token_b = pod_token(&edge);
    assert_ne!(token_a, token_b, "a rotation issues a new token");
    edge.create_pod_upstream("rotated-in");
    watch.expect_change(SETTLE, "ADDED", "rotated-in");
    cut_cloud(&edge);

    // The cache applies watch events on its own thread: wait for the list to show it.
    let mut last = Vec::new();
    let current = wait_for(SETTLE, || {
        last = pod_names(&expect_hit(read(&mut pod, PODS, &token_b), "LIST with token B"));
        last.contains(&"rotated-in".to_string()).then_some(())
    });
    assert!(current.is_some(), "token B's cached list misses the watched pod: {last:?}");
    assert!(last.contains(&POD.to_string()), "{last:?}");
    let config_map = expect_hit(read(&mut pod, CONFIG_MAP, &token_b), "GET with token B");
    assert_eq!(config_map["data"]["greeting"], GREETING);
}

/// Tokens that claim the account but are not the cloud's (a wrong signature, `alg: none`,
/// a key the cloud never published, another issuer) are the cloud's to refuse online and
/// never get the account's cache offline.
#[test]
fn forged_tokens_never_get_the_accounts_cache() {
    let edge = start("sa-forged", &[]);
    let token = pod_token(&edge);
    wait_keys(&edge, &kid(&token));
    // The signing used for forgeries is right: the cloud's key re-signs the token exactly.
    let (header, claims) = (header_of(&token), claims_of(&token));
    assert_eq!(compact(&header, &claims, rs256(&fake_rsa_key(0))), token);
    let mut pod = pod_client(&edge);
    read(&mut pod, PODS, &token).expect_status(200);
    read(&mut pod, CONFIG_MAP, &token).expect_status(200);
    edge.wait_stored(2);
    let forgeries = forgeries(&edge, &token);

    for (what, forged) in &forgeries {
        for path in [PODS, CONFIG_MAP] {
            let resp = read(&mut pod, path, forged);
            assert_eq!(resp.status, 401, "{what}, GET {path} online: {}", resp.text());
            assert_eq!(resp.header(CACHE_HEADER), None, "{what}, GET {path} online");
        }
    }

    // The cloud's own token of the account, minted for another audience (kube-apiserver
    // refuses it; the fake does not check audiences, so it is only tried offline).
    let vault = token_request(&edge, "default", Some(POD), &["vault"]);
    let mut offline_tries = forgeries.clone();
    offline_tries.push(("the account's token for another audience", vault));

    cut_cloud(&edge);
    expect_hit(read(&mut pod, PODS, &token), "the account's own token offline");
    for (what, forged) in &offline_tries {
        for path in [PODS, CONFIG_MAP] {
            let resp = read(&mut pod, path, forged);
            let text = resp.text();
            assert!(
                resp.status == 404 || resp.status == 503,
                "{what}, GET {path} offline: {} {text}",
                resp.status
            );
            assert_eq!(resp.header(CACHE_HEADER), None, "{what}, GET {path} offline");
            assert!(!text.contains(GREETING) && !text.contains(POD), "{what}: {text}");
        }
    }
}

/// A token the cloud signed that has expired gets `401` from the cache offline, where a
/// fresh token of the same account reads the account's entries.
#[test]
fn an_expired_token_gets_401_offline() {
    let edge = start("sa-expired", &[]);
    let token = pod_token(&edge);
    wait_keys(&edge, &kid(&token));
    let mut pod = pod_client(&edge);
    read(&mut pod, PODS, &token).expect_status(200);
    edge.wait_stored(1);
    let mut claims = claims_of(&token);
    let now = unix_now();
    claims["iat"] = json!(now - 7200);
    claims["nbf"] = json!(now - 7200);
    claims["exp"] = json!(now - 3600);
    let expired = compact(&header_of(&token), &claims, rs256(&fake_rsa_key(0)));
    let resp = read(&mut pod, PODS, &expired);
    assert_eq!(resp.status, 401, "expired token online: {}", resp.text());

    cut_cloud(&edge);
    expect_hit(read(&mut pod, PODS, &token), "the fresh token offline");
    let resp = read(&mut pod, PODS, &expired);
    assert_status_body(&resp, 401);
    assert_eq!(resp.header(CACHE_HEADER), None, "an expired token got cached data");
    assert!(!resp.text().contains(POD), "{}", resp.text());
}

/// The cloud rotates its signing key to ES256 (new `kid`, old key still published): once
/// the proxy refetched the keys, a new-key token reads offline what an old-key token of the
/// same account cached, and the old key's token reads what the new one cached.
#[test]
fn tokens_of_a_rotated_signing_key_verify_and_old_ones_keep_working() {
    let edge = start("sa-key-rotation", &[]);
    let old = pod_token(&edge);
    wait_keys(&edge, &kid(&old));
    let mut pod = pod_client(&edge);
    read(&mut pod, PODS, &old).expect_status(200);
    read(&mut pod, CONFIG_MAP, &old).expect_status(200);

    let mut admin = edge.cloud_admin().timeout(READ_TIMEOUT);
    let path = "/debug/rotate-signing-key?alg=ES256";
    let rotated = admin.request("POST", path, &[], b"").expect_status(200).json();
    let new = pod_token(&edge);
    assert_eq!(header_of(&new)["alg"], "ES256");
    assert_eq!(rotated["kid"].as_str(), Some(kid(&new).as_str()));
    assert_ne!(kid(&new), kid(&old));
    // Online the cloud takes both; the new kid makes the proxy refetch the keys.
    read(&mut pod, PODS, &new).expect_status(200);
    read(&mut pod, PODS, &old).expect_status(200);
    wait_keys(&edge, &kid(&new));
    // Read only with the new token, so a hit with the old one offline is the account's.
    read(&mut pod, CONFIG_MAPS, &new).expect_status(200);
    edge.wait_stored(4);

    cut_cloud(&edge);
    let config_map = expect_hit(read(&mut pod, CONFIG_MAP, &new), "new-key token, old entry");
    assert_eq!(config_map["data"]["greeting"], GREETING);
    let list = expect_hit(read(&mut pod, PODS, &new), "new-key token, LIST");
    assert!(pod_names(&list).contains(&POD.to_string()), "{list}");
    expect_hit(read(&mut pod, CONFIG_MAPS, &old), "old-key token, new entry");
    expect_hit(read(&mut pod, CONFIG_MAP, &old), "old-key token, old entry");
}

/// Keys fetched online are kept in the cache directory: after a `kill -9` and a restart
/// with the cloud still cut, a token of a new rotation reads the account's entries.
#[test]
fn keys_kept_on_disk_verify_tokens_after_a_restart_offline() {
    let mut edge = start("sa-restart-offline", &[]);
    let before = pod_token(&edge);
    wait_keys(&edge, &kid(&before));
    let mut pod = pod_client(&edge);
    read(&mut pod, PODS, &before).expect_status(200);
    read(&mut pod, CONFIG_MAP, &before).expect_status(200);
    edge.wait_stored(2);
    cut_cloud(&edge);
    let accepted = edge.relay().stats().accepted;

    edge.restart_lite();
    wait_offline(&edge);
    let after = pod_token(&edge);
    assert_ne!(after, before);
    let mut pod = pod_client(&edge);
    let list = expect_hit(read(&mut pod, PODS, &after), "new token after the restart, LIST");
    assert!(pod_names(&list).contains(&POD.to_string()), "{list}");
    let config_map = expect_hit(read(&mut pod, CONFIG_MAP, &after), "new token, GET");
    assert_eq!(config_map["data"]["greeting"], GREETING);
    assert_eq!(edge.relay().stats().accepted, accepted, "the restarted proxy reached the cloud");
}

/// `/debug/cache` names a verified token's entries by its service account and another
/// token's by a hash of it; no token shows there, in `/metrics` or in the log.
#[test]
fn debug_cache_names_identities_never_tokens() {
    const STATIC_TOKEN: &str = "static-token-of-jane-0123456789";
    let token_flag = format!("{STATIC_TOKEN}=jane");
    let edge = start("sa-debug-cache", &["--token", &token_flag]);
    let token = pod_token(&edge);
    wait_keys(&edge, &kid(&token));
    let mut pod = pod_client(&edge);
    read(&mut pod, PODS, &token).expect_status(200);
    read(&mut pod, PODS, STATIC_TOKEN).expect_status(200);
    edge.wait_stored(2);

    let summary = edge.wait_cache_summary(|summary| {
        let identities = summary["identities"].as_object();
        identities.is_some_and(|ids| ids.len() >= 2 && ids.contains_key(ACCOUNT))
    });
    let identities: Vec<&String> = summary["identities"].as_object().unwrap().keys().collect();
    let hashed: Vec<&&String> = identities.iter().filter(|id| id.starts_with("token:")).collect();
    assert_eq!(hashed.len(), 1, "{identities:?}");
    let hash = hashed[0].trim_start_matches("token:");
    assert!(hash.len() >= 16 && sha256_hex(STATIC_TOKEN.as_bytes()).starts_with(hash), "{hash}");
    assert_eq!(summary["identities"][ACCOUNT]["pods"]["lists"], 1, "{summary}");

    let (_, debug_cache) = edge.diag("/debug/cache");
    let secrets = [STATIC_TOKEN, segments(&token)[1], segments(&token)[2]];
    for (what, text) in [("/debug/cache", debug_cache), ("/metrics", edge.metrics())] {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows a token:\n{text}");
        }
    }
    let log = edge.lite.stderr();
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows a token");
    }
}

/// A cluster whose `--api-audiences` are not its issuer (EKS- and GKE-style): its tokens
/// name an audience lite-apiserver does not accept at first. Once the cloud has accepted
/// a request made with such a token, that audience is learned, and tokens of the account
/// — a rotated one included — share the account's cache. A token for an audience the cloud
/// refuses teaches nothing.
#[test]
fn an_audience_the_cloud_accepts_is_learned_and_one_it_refuses_is_not() {
    const API_AUDIENCE: &str = "https://kubernetes.default.svc";
    let edge = start("sa-audience", &["--api-audience", API_AUDIENCE]);
    let first = pod_token(&edge);
    assert_eq!(claims_of(&first)["aud"], json!([API_AUDIENCE]), "the apiserver's audience");
    wait_keys(&edge, &kid(&first));
    let mut pod = pod_client(&edge);
    let vault = token_request(&edge, "default", Some(POD), &["vault"]);
    assert_eq!(read(&mut pod, PODS, &vault).status, 401, "the cloud refuses a vault token");
    assert_eq!(read(&mut pod, PODS, &first).status, 200, "the cloud accepts the first token");
    // From now on the account's tokens verify: this read fills the account's cache.
    assert_eq!(read(&mut pod, CONFIG_MAP, &first).status, 200);
    let rotated = pod_token(&edge);
    cut_cloud(&edge);
    expect_hit(read(&mut pod, CONFIG_MAP, &rotated), "the rotated token, offline");
    let vault_offline = read(&mut pod, CONFIG_MAP, &vault);
    assert_ne!(vault_offline.status, 200, "a vault token must not get the account's cache");
}
