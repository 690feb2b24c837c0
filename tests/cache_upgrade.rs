//! An upgrade never empties a node's cache (the node may be offline when it is upgraded): the
//! real binary, its cloud unreachable, opens a `cache.db` written by an older release —
//! schema version 1, `src/cache/testdata/cache-v1.sql` — upgrades it in place and serves
//! every answer in it byte for byte, with `X-Lite-Apiserver-Cache-Age`. A database of a
//! schema it does not know (a newer release's) is left untouched.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const V1_DATABASE: &str = include_str!("../src/cache/testdata/cache-v1.sql");
/// What the version-1 database answers: request path → exact body, for kubelet.
const V1_ANSWERS: &str = include_str!("../src/cache/testdata/cache-v1-answers.json");
const CACHE_HEADER: &str = "x-lite-apiserver-cache";
const AGE_HEADER: &str = "x-lite-apiserver-cache-age";

/// `<cache>/cache.db` holding what version 1 wrote.
fn write_v1_database(cache: &TempDir) {
    let connection = rusqlite::Connection::open(cache.join("cache.db")).expect("create cache.db");
    connection.execute_batch(V1_DATABASE).expect("load the version-1 database");
}

/// lite-apiserver on `cache`, its cloud a port nobody listens on.
fn offline_lite(env: &TestEnv, cache: TempDir) -> Lite {
    let port = free_port();
    let args = Lite::default_args(&env.pki, free_port(), port, cache.path());
    Lite::start_with_args(port, cache, args)
}

fn schema_version(db: &Path) -> i64 {
    let connection = rusqlite::Connection::open(db).expect("open cache.db");
    connection.query_row("PRAGMA user_version", [], |row| row.get(0)).expect("user_version")
}

/// GETs every answer of the version-1 database as kubelet; returns their ages.
fn assert_v1_answers_served(env: &TestEnv, lite: &Lite) -> Vec<u64> {
    let fixture: Value = serde_json::from_str(V1_ANSWERS).expect("answers json");
    let answers = fixture["answers"].as_object().expect("answers");
    let mut kubelet = env.client(lite.port, Some("kubelet"));
    let mut ages = Vec::new();
    for (path, body) in answers {
        let resp = kubelet.get(path);
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        assert_eq!(resp.header(CACHE_HEADER), Some("hit"), "{path}: {:?}", resp.headers);
        assert_eq!(resp.text(), body.as_str().expect("body"), "{path}: body");
        let age = resp.header(AGE_HEADER).and_then(|age| age.parse::<u64>().ok());
        ages.push(age.unwrap_or_else(|| panic!("{path}: no whole-second age: {:?}", resp.headers)));
    }
    ages
}

#[test]
fn a_version_1_cache_is_served_offline_after_the_upgrade_with_its_age() {
    let env = TestEnv::new("upgrade-v1");
    let cache = TempDir::new("v1-cache");
    write_v1_database(&cache);
    let db = cache.join("cache.db");
    let mut lite = offline_lite(&env, cache);
    assert_v1_answers_served(&env, &lite);
    lite.kill9();
    assert_eq!(schema_version(&db), 2, "upgraded in place");

    // A day older: the age is counted from the stored time, across a restart.
    let connection = rusqlite::Connection::open(&db).expect("open cache.db");
    connection
        .execute_batch(
            "UPDATE entries SET stored_at = stored_at - 86400;
             UPDATE lists SET stored_at = stored_at - 86400;",
        )
        .expect("age the answers");
    drop(connection);
    lite.restart();
    for age in assert_v1_answers_served(&env, &lite) {
        assert!(age >= 86_400, "an answer stored a day ago is {age} s old");
    }
}

#[test]
fn a_cache_of_an_unknown_schema_is_left_untouched() {
    let env = TestEnv::new("upgrade-unknown");
    let cache = TempDir::new("newer-cache");
    write_v1_database(&cache);
    let db = cache.join("cache.db");
    let connection = rusqlite::Connection::open(&db).expect("open cache.db");
    connection.pragma_update(None, "user_version", 99).expect("a newer release's version");
    drop(connection);
    let bytes = std::fs::read(&db).expect("read cache.db");

    let mut lite = offline_lite(&env, cache);
    let mut kubelet = env.client(lite.port, Some("kubelet"));
    let resp = kubelet.get("/api/v1/namespaces/default/pods");
    assert_eq!(resp.status, 503, "not served from a database it cannot read: {}", resp.text());
    let stderr = lite.stderr();
    assert!(
        stderr.contains("schema version 99") && stderr.contains(&db.display().to_string()),
        "no warning naming the file and its version:\n{stderr}"
    );
    lite.kill9();
    assert_eq!(std::fs::read(&db).expect("read cache.db"), bytes, "cache.db was changed");
}
