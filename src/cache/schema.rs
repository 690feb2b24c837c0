//! The SQLite cache's tables, their version history (`PRAGMA user_version`) and the in-place
//! upgrades between versions. An upgrade never empties a node's cache: the node may be
//! offline while it is upgraded, with nothing to fill the cache again from. A change of the
//! tables bumps `VERSION` and adds a step to `MIGRATIONS`, and the migration test opens a
//! file of each older version (`testdata/cache-v<N>.sql`) and checks that all of it is still
//! answered.
//!
//! What opening does, by the version found:
//! - 0 and no tables: a new file; the current tables are created.
//! - 1 to `VERSION - 1`: upgraded in place, all steps in one transaction. If that fails (a
//!   full disk), it is rolled back: `StoreError::UpgradeFailed`, the file as it was, the
//!   cache in memory until the next start tries again.
//!   - 1 → 2: `stored_at` (unix seconds) on entries and lists, for the age of cached answers.
//!     Version 1 never recorded when a row was stored: its rows count as stored at the
//!     upgrade, their age is counted from then.
//! - `VERSION`: used as it is.
//! - anything else: newer (a rollback to an older release) or 0 with tables (not a cache of
//!   ours). `StoreError::UnknownSchema`, and the file is left untouched: never rebuilt,
//!   moved or deleted, as the release that wrote it may run again. The cache then runs in
//!   memory (`cache::start`). A damaged file is another matter: it is moved aside before
//!   its version is even read (`sqlite`).
//!
//! `items.json` holds an item as its list is encoded (`lists.content_type`): the JSON
//! object, or since protobuf lists are decomposed too the bare protobuf message. The
//! column kept its name: renaming it would take a schema version for no change of meaning
//! to a version-2 file, whose items are all JSON.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::store::StoreError;

/// The version this build writes.
pub const VERSION: i64 = 2;

const TABLES: &str = "
CREATE TABLE entries(
    key TEXT PRIMARY KEY, identity TEXT NOT NULL, resource TEXT NOT NULL,
    status INTEGER NOT NULL, content_type TEXT NOT NULL, body BLOB NOT NULL,
    bytes INTEGER NOT NULL, last_access INTEGER NOT NULL, stored_at INTEGER NOT NULL);
CREATE INDEX entries_by_access ON entries(last_access);
CREATE TABLE lists(
    scope TEXT PRIMARY KEY, identity TEXT NOT NULL, resource TEXT NOT NULL,
    content_type TEXT NOT NULL, envelope BLOB NOT NULL, items_at INTEGER NOT NULL,
    resource_version TEXT NOT NULL, bytes INTEGER NOT NULL, last_access INTEGER NOT NULL,
    stored_at INTEGER NOT NULL);
CREATE INDEX lists_by_access ON lists(last_access);
CREATE TABLE items(
    scope TEXT NOT NULL, key TEXT NOT NULL, resource_version TEXT NOT NULL,
    json BLOB NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY(scope, key));
";

/// One upgrade step; its argument is the time migrated rows are stamped with.
type Migration = fn(&Transaction<'_>, u64) -> rusqlite::Result<()>;

/// `MIGRATIONS[n]` upgrades version `n + 1` to `n + 2`.
const MIGRATIONS: [Migration; VERSION as usize - 1] = [add_stored_at];

/// The file's version, if this build knows it. Only reads: an unknown file stays as it was.
pub fn known_version(connection: &Connection) -> Result<i64, StoreError> {
    let version: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let tables: i64 =
        connection.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0))?;
    let known = (0..=VERSION).contains(&version) && !(version == 0 && tables > 0);
    if known {
        Ok(version)
    } else {
        Err(StoreError::UnknownSchema { found: version, known: VERSION })
    }
}

/// Brings a file of the known `version` to `VERSION`; `now` (unix seconds) stamps the rows
/// an upgrade cannot date.
pub fn prepare(connection: &mut Connection, version: i64, now: u64) -> Result<(), StoreError> {
    match version {
        0 => create(connection),
        VERSION => Ok(()),
        older => upgrade(connection, older, now),
    }
}

fn create(connection: &Connection) -> Result<(), StoreError> {
    // Set before the first table (or followed by VACUUM): the file then shrinks on eviction.
    connection.execute_batch("PRAGMA auto_vacuum=INCREMENTAL; VACUUM;")?;
    connection.execute_batch(&format!("BEGIN; {TABLES} PRAGMA user_version={VERSION}; COMMIT;"))?;
    Ok(())
}

/// Runs every step from `from` on, and the new version, in one transaction: a crash or a
/// full disk midway leaves the file at `from`, to be upgraded at the next start. A failure
/// is `UpgradeFailed`, never taken for damage: the file is not moved aside.
fn upgrade(connection: &mut Connection, from: i64, now: u64) -> Result<(), StoreError> {
    run_steps(connection, from, now).map_err(|error| StoreError::UpgradeFailed { from, error })?;
    log::info!("cache: database upgraded in place from schema version {from} to {VERSION}");
    Ok(())
}

fn run_steps(connection: &mut Connection, from: i64, now: u64) -> rusqlite::Result<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let first = usize::try_from(from - 1).unwrap_or(0);
    for step in &MIGRATIONS[first..] {
        step(&transaction, now)?;
    }
    transaction.pragma_update(None, "user_version", VERSION)?;
    transaction.commit()
}

/// 1 → 2. Adding a column with a constant default rewrites no row, however big the cache.
fn add_stored_at(transaction: &Transaction<'_>, now: u64) -> rusqlite::Result<()> {
    transaction.execute_batch(&format!(
        "ALTER TABLE entries ADD COLUMN stored_at INTEGER NOT NULL DEFAULT {now};
         ALTER TABLE lists ADD COLUMN stored_at INTEGER NOT NULL DEFAULT {now};"
    ))
}
