//! The SQLite store (`--cache-type=file`): `<dir>/cache.db`, WAL, synchronous=NORMAL, one
//! transaction per change set, a damaged or unreadable file moved aside and replaced by a
//! fresh one. The tables and their upgrades live in `schema`: an older version is migrated
//! in place, one this build does not know is left untouched (`StoreError::UnknownSchema`).

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::list::{ListHead, ListItem};
use super::store::{
    Change, Store, StoreError, StoredHead, StoredKey, SummaryRow, Totals, entry_bytes, head_bytes,
    item_bytes,
};
use super::{CachedResponse, schema};
use crate::clock::unix_seconds;

/// How many least-recently-used candidates one eviction query fetches.
const EVICTION_BATCH: i64 = 64;

pub const FILE_NAME: &str = "cache.db";

/// Accesses remembered before they are written in one transaction.
const MAX_PENDING_TOUCHES: usize = 256;

pub struct SqliteStore {
    connection: Connection,
    clock: i64,
    totals: Totals,
    /// Accesses not yet written: (UPDATE statement, key, access time). Offline, every
    /// hit is an access; one transaction per hit would make reads cost writes.
    pending_touches: Vec<(&'static str, String, i64)>,
}

/// Totals changed by a transaction, applied only once it committed.
#[derive(Default)]
struct Delta {
    entries: i64,
    bytes: i64,
}

impl Delta {
    fn add(&mut self, entries: i64, added: u64, removed: u64) {
        self.entries += entries;
        self.bytes += as_i64(added) - as_i64(removed);
    }
}

fn as_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn as_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) `<dir>/cache.db`, upgrading an older
    /// schema in place. A file that cannot be opened or fails its integrity check is renamed
    /// `cache.db.corrupt-<unix time>`; one of an unknown schema, or whose upgrade failed, is
    /// refused, untouched.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        // An existing directory keeps its mode otherwise; the cache holds secrets.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(FILE_NAME);
        match SqliteStore::open_file(&path) {
            Ok(store) => Ok(store),
            // Not damage: moving such a file aside would empty the cache.
            Err(error @ (StoreError::UnknownSchema { .. } | StoreError::UpgradeFailed { .. })) => {
                Err(error)
            }
            Err(error) if path.exists() => {
                let aside = move_aside(&path)?;
                log::warn!(
                    "cache database {} unusable ({error}); moved to {}, starting empty",
                    path.display(),
                    aside.display()
                );
                SqliteStore::open_file(&path)
            }
            Err(error) => Err(error),
        }
    }

    fn open_file(path: &Path) -> Result<SqliteStore, StoreError> {
        // Created by hand first so the file (and SQLite's -wal/-shm, which copy its mode) is 0600.
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        let mut connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        // Read-only checks before anything writes: a file that is not ours must stay as it is.
        check_integrity(&connection)?;
        let version = schema::known_version(&connection)?;
        let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!("cache database journal mode is {mode}, not wal");
        }
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        // 1 MiB of page cache instead of SQLite's 2 MiB: entries are read rarely (offline)
        // and written whole, so a bigger cache buys little on a small board.
        connection.pragma_update(None, "cache_size", -1024)?;
        schema::prepare(&mut connection, version, unix_seconds())?;
        let mut store = SqliteStore {
            connection,
            clock: 0,
            totals: Totals::default(),
            pending_touches: Vec::new(),
        };
        store.load_totals()?;
        Ok(store)
    }

    fn load_totals(&mut self) -> Result<(), StoreError> {
        let sql = "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(MAX(last_access), 0) FROM entries
                   UNION ALL
                   SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(MAX(last_access), 0) FROM lists";
        let mut statement = self.connection.prepare(sql)?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })?;
        for row in rows {
            let (count, bytes, last_access) = row?;
            self.totals.entries += as_u64(count);
            self.totals.bytes += as_u64(bytes);
            self.clock = self.clock.max(last_access);
        }
        Ok(())
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1;
        self.clock
    }

    /// Records an access, written later in a batch; failing to write it (disk full,
    /// read-only) must not fail the read, and losing it in a crash costs nothing.
    fn touch(&mut self, update_sql: &'static str, key: &str) {
        let now = self.tick();
        self.pending_touches.push((update_sql, key.to_string(), now));
        if self.pending_touches.len() >= MAX_PENDING_TOUCHES {
            self.flush_touches();
        }
    }

    fn flush_touches(&mut self) {
        if self.pending_touches.is_empty() {
            return;
        }
        let touches = std::mem::take(&mut self.pending_touches);
        let written = self.connection.transaction().and_then(|transaction| {
            for (update_sql, key, now) in &touches {
                transaction.prepare_cached(update_sql)?.execute(params![now, key])?;
            }
            transaction.commit()
        });
        if let Err(error) = written {
            log::debug!("cache: recording accesses failed: {error}");
        }
    }

    fn commit(&mut self, changes: Vec<Change>) -> Result<Delta, StoreError> {
        self.flush_touches();
        let now = self.tick();
        let transaction =
            self.connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut delta = Delta::default();
        for change in changes {
            apply_change(&transaction, change, now, &mut delta)?;
        }
        transaction.commit()?;
        Ok(delta)
    }

    /// Up to `EVICTION_BATCH` (is_list, key, bytes), least recently used first.
    fn oldest(&self) -> Result<Vec<(bool, String, u64)>, StoreError> {
        let sql = "SELECT last_access, 0, key, bytes FROM entries
                   UNION ALL SELECT last_access, 1, scope, bytes FROM lists
                   ORDER BY 1 LIMIT ?1";
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map([EVICTION_BATCH], |row| {
            Ok((row.get::<_, i64>(1)? == 1, row.get::<_, String>(2)?, as_u64(row.get(3)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn apply_delta(&mut self, delta: &Delta) {
        self.totals.entries = self.totals.entries.saturating_add_signed(delta.entries);
        self.totals.bytes = self.totals.bytes.saturating_add_signed(delta.bytes);
    }
}

fn check_integrity(connection: &Connection) -> Result<(), StoreError> {
    let verdict: String = connection.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if verdict == "ok" {
        return Ok(());
    }
    Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!("quick_check: {verdict}")),
    )))
}

/// Renames the database (and its WAL files, which must not be replayed into a new one) aside.
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = PathBuf::from(format!("{}.corrupt-{seconds}", path.display()));
    std::fs::rename(path, &aside)?;
    for suffix in ["-wal", "-shm"] {
        let companion = PathBuf::from(format!("{}{suffix}", path.display()));
        if companion.exists() {
            std::fs::rename(&companion, format!("{}{suffix}", aside.display()))?;
        }
    }
    Ok(aside)
}

fn apply_change(
    tx: &Transaction<'_>,
    change: Change,
    now: i64,
    delta: &mut Delta,
) -> Result<(), StoreError> {
    match change {
        Change::PutEntry { key, owner, response } => {
            remove_entry(tx, &key, delta)?;
            let bytes = entry_bytes(&key, &response);
            tx.prepare_cached(
                "INSERT INTO entries(key, identity, resource, status, content_type, body, bytes,
                                     last_access, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                key,
                owner.identity,
                owner.resource,
                response.status,
                response.content_type,
                response.body,
                as_i64(bytes),
                now,
                as_i64(response.stored_at)
            ])?;
            delta.add(1, bytes, 0);
        }
        Change::RemoveEntry { key } => remove_entry(tx, &key, delta)?,
        Change::RemoveList { scope } => remove_list(tx, &scope, delta)?,
        Change::PutList { scope, owner, head, items, stored_at } => {
            remove_list(tx, &scope, delta)?;
            let bytes = head_bytes(&scope, &head) + items.iter().map(item_bytes).sum::<u64>();
            tx.prepare_cached(
                "INSERT INTO lists(scope, identity, resource, content_type, envelope, items_at,
                                   resource_version, bytes, last_access, stored_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                scope,
                owner.identity,
                owner.resource,
                head.content_type,
                head.envelope,
                as_i64(head.items_at as u64),
                head.resource_version,
                as_i64(bytes),
                now,
                as_i64(stored_at)
            ])?;
            for item in &items {
                insert_item(tx, &scope, item)?;
            }
            delta.add(1, bytes, 0);
        }
        Change::PutItem { scope, item } => {
            if list_exists(tx, &scope)? {
                let removed = remove_item(tx, &scope, &item.key)?;
                insert_item(tx, &scope, &item)?;
                adjust_list_bytes(tx, &scope, item_bytes(&item), removed, delta)?;
            }
        }
        Change::RemoveItem { scope, key } => {
            let removed = remove_item(tx, &scope, &key)?;
            adjust_list_bytes(tx, &scope, 0, removed, delta)?;
        }
        Change::SetListVersion { scope, resource_version } => {
            let old: Option<String> = tx
                .prepare_cached("SELECT resource_version FROM lists WHERE scope = ?1")?
                .query_row([&scope], |row| row.get(0))
                .optional()?;
            if let Some(old) = old {
                tx.prepare_cached("UPDATE lists SET resource_version = ?2 WHERE scope = ?1")?
                    .execute(params![scope, resource_version])?;
                adjust_list_bytes(
                    tx,
                    &scope,
                    resource_version.len() as u64,
                    old.len() as u64,
                    delta,
                )?;
            }
        }
        Change::Refresh { key, stored_at } => {
            let (sql, key) = match key {
                StoredKey::Entry(key) => ("UPDATE entries SET stored_at = ?2 WHERE key = ?1", key),
                StoredKey::List(scope) => {
                    ("UPDATE lists SET stored_at = ?2 WHERE scope = ?1", scope)
                }
            };
            tx.prepare_cached(sql)?.execute(params![key, as_i64(stored_at)])?;
        }
    }
    Ok(())
}

fn remove_entry(tx: &Transaction<'_>, key: &str, delta: &mut Delta) -> Result<(), StoreError> {
    let old: Option<i64> = tx
        .prepare_cached("DELETE FROM entries WHERE key = ?1 RETURNING bytes")?
        .query_row([key], |row| row.get(0))
        .optional()?;
    if let Some(old) = old {
        delta.add(-1, 0, as_u64(old));
    }
    Ok(())
}

fn remove_list(tx: &Transaction<'_>, scope: &str, delta: &mut Delta) -> Result<(), StoreError> {
    let old: Option<i64> = tx
        .prepare_cached("DELETE FROM lists WHERE scope = ?1 RETURNING bytes")?
        .query_row([scope], |row| row.get(0))
        .optional()?;
    tx.prepare_cached("DELETE FROM items WHERE scope = ?1")?.execute([scope])?;
    if let Some(old) = old {
        delta.add(-1, 0, as_u64(old));
    }
    Ok(())
}

fn list_exists(tx: &Transaction<'_>, scope: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM lists WHERE scope = ?1")?
        .query_row([scope], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

fn insert_item(tx: &Transaction<'_>, scope: &str, item: &ListItem) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO items(scope, key, resource_version, json, bytes) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        scope,
        item.key,
        item.resource_version,
        item.encoded,
        as_i64(item_bytes(item))
    ])?;
    Ok(())
}

/// Deletes one item, returning the bytes it held.
fn remove_item(tx: &Transaction<'_>, scope: &str, key: &str) -> Result<u64, StoreError> {
    let old: Option<i64> = tx
        .prepare_cached("DELETE FROM items WHERE scope = ?1 AND key = ?2 RETURNING bytes")?
        .query_row([scope, key], |row| row.get(0))
        .optional()?;
    Ok(old.map_or(0, as_u64))
}

fn adjust_list_bytes(
    tx: &Transaction<'_>,
    scope: &str,
    added: u64,
    removed: u64,
    delta: &mut Delta,
) -> Result<(), StoreError> {
    let change = as_i64(added) - as_i64(removed);
    if change != 0 {
        tx.prepare_cached("UPDATE lists SET bytes = bytes + ?2 WHERE scope = ?1")?
            .execute(params![scope, change])?;
        delta.add(0, added, removed);
    }
    Ok(())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.flush_touches();
    }
}

impl Store for SqliteStore {
    fn entry(&mut self, key: &str, touch: bool) -> Result<Option<CachedResponse>, StoreError> {
        let found = self
            .connection
            .prepare_cached(
                "SELECT status, content_type, body, stored_at FROM entries WHERE key = ?1",
            )?
            .query_row([key], |row| {
                Ok(CachedResponse {
                    status: row.get(0)?,
                    content_type: row.get(1)?,
                    body: row.get(2)?,
                    stored_at: as_u64(row.get(3)?),
                })
            })
            .optional()?;
        if touch && found.is_some() {
            self.touch("UPDATE entries SET last_access = ?1 WHERE key = ?2", key);
        }
        Ok(found)
    }

    fn list_head(&mut self, scope: &str, touch: bool) -> Result<Option<StoredHead>, StoreError> {
        let found = self
            .connection
            .prepare_cached(
                "SELECT content_type, envelope, items_at, resource_version, stored_at FROM lists
                 WHERE scope = ?1",
            )?
            .query_row([scope], |row| {
                let text = |i| row.get::<_, String>(i);
                let number = |i| row.get::<_, i64>(i);
                Ok((text(0)?, row.get::<_, Vec<u8>>(1)?, number(2)?, text(3)?, number(4)?))
            })
            .optional()?;
        let head = found.and_then(|(content_type, envelope, items_at, resource_version, at)| {
            // A head whose split point lies outside its envelope is unusable, not a panic.
            let items_at = usize::try_from(items_at).ok().filter(|at| *at <= envelope.len())?;
            let head = ListHead { content_type, envelope, items_at, resource_version };
            Some(StoredHead { head, stored_at: as_u64(at) })
        });
        if touch && head.is_some() {
            self.touch("UPDATE lists SET last_access = ?1 WHERE scope = ?2", scope);
        }
        Ok(head)
    }

    fn list_items(&mut self, scope: &str) -> Result<Vec<ListItem>, StoreError> {
        let mut statement = self.connection.prepare_cached(
            "SELECT key, resource_version, json FROM items WHERE scope = ?1 ORDER BY key",
        )?;
        let rows = statement.query_map([scope], |row| {
            Ok(ListItem { key: row.get(0)?, resource_version: row.get(1)?, encoded: row.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn item_version(&mut self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .connection
            .prepare_cached("SELECT resource_version FROM items WHERE scope = ?1 AND key = ?2")?
            .query_row([scope, key], |row| row.get(0))
            .optional()?)
    }

    fn keys_containing(&mut self, needle: &str) -> Result<Vec<StoredKey>, StoreError> {
        // instr, not LIKE: the needle is text, never a pattern.
        let sql = "SELECT 0, key FROM entries WHERE instr(key, ?1) > 0
                   UNION ALL SELECT 1, scope FROM lists WHERE instr(scope, ?1) > 0";
        let mut statement = self.connection.prepare_cached(sql)?;
        let rows = statement.query_map([needle], |row| {
            let key: String = row.get(1)?;
            Ok(if row.get::<_, i64>(0)? == 1 {
                StoredKey::List(key)
            } else {
                StoredKey::Entry(key)
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        let delta = self.commit(changes)?;
        self.apply_delta(&delta);
        Ok(())
    }

    fn evict_to(&mut self, target_bytes: u64) -> Result<u64, StoreError> {
        self.flush_touches();
        let mut evicted = 0;
        while self.totals.bytes > target_bytes {
            let victims = self.oldest()?;
            if victims.is_empty() {
                break;
            }
            let mut excess = self.totals.bytes - target_bytes;
            let mut changes = Vec::new();
            for (is_list, key, bytes) in victims {
                if excess == 0 {
                    break;
                }
                excess = excess.saturating_sub(bytes);
                changes.push(if is_list {
                    Change::RemoveList { scope: key }
                } else {
                    Change::RemoveEntry { key }
                });
            }
            evicted += changes.len() as u64;
            self.apply(changes)?;
        }
        if evicted > 0 {
            // Hands freed pages back to the file system so the file shrinks with the cache.
            self.connection.execute_batch("PRAGMA incremental_vacuum")?;
        }
        Ok(evicted)
    }

    fn totals(&self) -> Totals {
        self.totals
    }

    fn summary(&mut self) -> Result<Vec<SummaryRow>, StoreError> {
        let sql = "SELECT identity, resource, content_type, COUNT(*), 0, 0, SUM(bytes) FROM entries
                   GROUP BY identity, resource, content_type
                   UNION ALL
                   SELECT identity, resource, content_type, 0, COUNT(*), SUM((SELECT COUNT(*) FROM items i WHERE i.scope = l.scope)), SUM(bytes)
                   FROM lists l GROUP BY identity, resource, content_type";
        let mut statement = self.connection.prepare(sql)?;
        let rows = statement.query_map([], |row| {
            Ok(SummaryRow {
                identity: row.get(0)?,
                resource: row.get(1)?,
                content_type: row.get(2)?,
                entries: as_u64(row.get(3)?),
                lists: as_u64(row.get(4)?),
                list_items: as_u64(row.get(5)?),
                bytes: as_u64(row.get(6)?),
            })
        })?;
        let mut merged: Vec<SummaryRow> = Vec::new();
        for row in rows {
            let row = row?;
            match merged.iter_mut().find(|m| {
                (&m.identity, &m.resource, &m.content_type)
                    == (&row.identity, &row.resource, &row.content_type)
            }) {
                Some(existing) => {
                    existing.entries += row.entries;
                    existing.lists += row.lists;
                    existing.list_items += row.list_items;
                    existing.bytes += row.bytes;
                }
                None => merged.push(row),
            }
        }
        Ok(merged)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cache::store::suite;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, unique per test run and call.
    pub fn temp_dir(name: &str) -> PathBuf {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("lite-apiserver-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn passes_the_store_suite() {
        suite::run_all(|| SqliteStore::open(&temp_dir("suite")).expect("open"));
    }

    #[test]
    fn data_survives_reopen() {
        let dir = temp_dir("reopen");
        let mut store = SqliteStore::open(&dir).expect("open");
        let entry = Change::PutEntry {
            key: "k".into(),
            owner: suite::owner("a"),
            response: suite::response("body"),
        };
        store.apply(vec![entry]).expect("put");
        let totals = store.totals();
        drop(store);
        let mut store = SqliteStore::open(&dir).expect("reopen");
        assert_eq!(store.entry("k", true).expect("read"), Some(suite::response("body")));
        assert_eq!(store.totals(), totals);
    }

    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("modes");
        let _store = SqliteStore::open(&dir).expect("open");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
    }

    #[test]
    fn pragmas_are_durable_and_shrinkable() {
        let store = SqliteStore::open(&temp_dir("pragmas")).expect("open");
        let pragma = |name: &str| -> String {
            store
                .connection
                .query_row(&format!("PRAGMA {name}"), [], |row| {
                    row.get::<_, rusqlite::types::Value>(0)
                })
                .map(|v| format!("{v:?}"))
                .expect("pragma")
        };
        assert_eq!(pragma("journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma("synchronous"), "Integer(1)", "NORMAL");
        assert_eq!(pragma("auto_vacuum"), "Integer(2)", "INCREMENTAL");
        assert_eq!(pragma("user_version"), format!("Integer({})", schema::VERSION));
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(FILE_NAME), vec![0x5a; 8192]).expect("garbage");
        let mut store = SqliteStore::open(&dir).expect("open despite garbage");
        assert_eq!(store.totals(), Totals::default());
        store.apply(vec![Change::RemoveEntry { key: "k".into() }]).expect("usable");
        let aside = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("cache.db.corrupt-"));
        assert!(aside, "the garbage file is kept aside");
    }

    /// A `cache.db` in a new directory, holding what version 1 wrote (see the fixture).
    pub fn version_1_database(name: &str) -> PathBuf {
        let dir = temp_dir(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let connection = Connection::open(dir.join(FILE_NAME)).expect("create");
        connection.execute_batch(include_str!("testdata/cache-v1.sql")).expect("fixture");
        connection.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).expect("wal");
        dir
    }

    /// Every row of a database: entries (key, answer with `stored_at` 0) and lists (scope,
    /// head, items), in key order.
    type Rows = (Vec<(String, CachedResponse)>, Vec<(String, ListHead, Vec<ListItem>)>);

    /// Reads every row through raw SQL, in the columns version 1 and 2 share.
    fn raw_rows(connection: &Connection) -> Rows {
        let strings = |sql: &str| -> Vec<String> {
            let mut statement = connection.prepare(sql).expect("prepare");
            let rows = statement.query_map([], |row| row.get(0)).expect("query");
            rows.collect::<Result<_, _>>().expect("rows")
        };
        let entries = strings("SELECT key FROM entries ORDER BY key")
            .into_iter()
            .map(|key| {
                let response = connection
                    .query_row(
                        "SELECT status, content_type, body FROM entries WHERE key = ?1",
                        [&key],
                        |row| {
                            Ok(CachedResponse {
                                status: row.get(0)?,
                                content_type: row.get(1)?,
                                body: row.get(2)?,
                                stored_at: 0,
                            })
                        },
                    )
                    .expect("entry");
                (key, response)
            })
            .collect();
        let lists = strings("SELECT scope FROM lists ORDER BY scope")
            .into_iter()
            .map(|scope| {
                let head = connection
                    .query_row(
                        "SELECT content_type, envelope, items_at, resource_version FROM lists
                         WHERE scope = ?1",
                        [&scope],
                        |row| {
                            Ok(ListHead {
                                content_type: row.get(0)?,
                                envelope: row.get(1)?,
                                items_at: row.get::<_, i64>(2)? as usize,
                                resource_version: row.get(3)?,
                            })
                        },
                    )
                    .expect("list");
                let mut statement = connection
                    .prepare(
                        "SELECT key, resource_version, json FROM items WHERE scope = ?1
                         ORDER BY key",
                    )
                    .expect("prepare");
                let items = statement
                    .query_map([&scope], |row| {
                        Ok(ListItem {
                            key: row.get(0)?,
                            resource_version: row.get(1)?,
                            encoded: row.get(2)?,
                        })
                    })
                    .expect("items")
                    .collect::<Result<_, _>>()
                    .expect("items");
                (scope, head, items)
            })
            .collect();
        (entries, lists)
    }

    #[test]
    fn version_1_database_is_upgraded_in_place() {
        let dir = version_1_database("upgrade");
        let (v1_entries, v1_lists) =
            raw_rows(&Connection::open(dir.join(FILE_NAME)).expect("open v1"));
        assert_eq!((v1_entries.len(), v1_lists.len()), (2, 1), "the fixture's rows");

        let before = unix_seconds();
        let mut store = SqliteStore::open(&dir).expect("open and upgrade");
        let after = unix_seconds();
        let stamped = |at: u64| (before..=after).contains(&at);
        let version: i64 =
            store.connection.query_row("PRAGMA user_version", [], |row| row.get(0)).expect("v");
        assert_eq!(version, schema::VERSION);
        for (key, v1) in &v1_entries {
            let entry = store.entry(key, false).expect("read").expect("entry kept");
            assert!(stamped(entry.stored_at), "{key}: stored at {}", entry.stored_at);
            assert_eq!(CachedResponse { stored_at: 0, ..entry }, *v1, "{key}");
        }
        for (scope, v1_head, v1_items) in &v1_lists {
            let stored = store.list_head(scope, false).expect("head").expect("list kept");
            assert!(stamped(stored.stored_at), "{scope}: stored at {}", stored.stored_at);
            assert_eq!(stored.head, *v1_head, "{scope}");
            assert_eq!(store.list_items(scope).expect("items"), *v1_items, "{scope}");
        }
        assert_eq!(store.totals().entries, 3);
        assert_eq!(raw_rows(&store.connection), (v1_entries, v1_lists), "nothing else changed");

        // Usable as version 2, and not upgraded a second time.
        let entry = Change::PutEntry {
            key: "new".into(),
            owner: suite::owner("a"),
            response: suite::response("n"),
        };
        store.apply(vec![entry]).expect("write after the upgrade");
        let totals = store.totals();
        drop(store);
        let mut store = SqliteStore::open(&dir).expect("reopen");
        assert_eq!(store.totals(), totals);
        assert_eq!(store.entry("new", false).expect("read"), Some(suite::response("n")));
    }

    #[test]
    fn version_1_answers_are_replayed_byte_for_byte_after_the_upgrade() {
        use crate::cache::engine::Engine;
        use crate::cache::{Classified, Lookup, Reply, classify};
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("testdata/cache-v1-answers.json")).expect("json");
        let identity = fixture["identity"].as_str().expect("identity");
        let answers = fixture["answers"].as_object().expect("answers");
        let store = SqliteStore::open(&version_1_database("replay")).expect("open and upgrade");
        let mut engine = Engine::new(store, 1 << 30);
        for (path, body) in answers {
            let Classified::Read(key) = classify(identity, "GET", path, None) else {
                panic!("{path}: not a read");
            };
            let reply = engine.answer(&Lookup::Read(key)).expect("lookup");
            let Reply::Hit(cached) = reply else { panic!("{path}: {reply:?}") };
            assert_eq!(String::from_utf8_lossy(&cached.body), body.as_str().expect("body"));
            assert!(cached.stored_at > 0, "{path}: no stored time");
        }
    }

    /// The file's bytes (its WAL was checkpointed into it when the last connection closed).
    fn file_bytes(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(FILE_NAME)).expect("read")
    }

    /// Opens `dir`, which must fail without changing its file or adding one; the error.
    fn refused_untouched(dir: &Path) -> StoreError {
        let bytes = file_bytes(dir);
        let Err(error) = SqliteStore::open(dir) else {
            panic!("{} was opened", dir.display());
        };
        assert_eq!(file_bytes(dir), bytes, "the file was changed");
        let names: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name != FILE_NAME)
            .collect();
        assert!(names.is_empty(), "nothing moved aside or added: {names:?}");
        error
    }

    fn is_unknown_schema(error: &StoreError, version: i64) -> bool {
        matches!(error, StoreError::UnknownSchema { found, known }
                 if *found == version && *known == schema::VERSION)
    }

    #[test]
    fn newer_schema_version_is_refused_and_left_untouched() {
        let dir = temp_dir("newer");
        let mut store = SqliteStore::open(&dir).expect("open");
        let entry = Change::PutEntry {
            key: "k".into(),
            owner: suite::owner("a"),
            response: suite::response("body"),
        };
        store.apply(vec![entry]).expect("put");
        store.connection.pragma_update(None, "user_version", schema::VERSION + 1).expect("bump");
        drop(store);
        let error = refused_untouched(&dir);
        assert!(is_unknown_schema(&error, schema::VERSION + 1), "{error}");
        let connection = Connection::open(dir.join(FILE_NAME)).expect("open raw");
        let body: Vec<u8> = connection
            .query_row("SELECT body FROM entries WHERE key = 'k'", [], |row| row.get(0))
            .expect("the entry is still there");
        assert_eq!(body, b"body");
    }

    #[test]
    fn a_database_that_is_not_a_cache_is_refused_and_left_untouched() {
        let dir = temp_dir("foreign");
        std::fs::create_dir_all(&dir).expect("dir");
        let connection = Connection::open(dir.join(FILE_NAME)).expect("create");
        connection
            .execute_batch("CREATE TABLE notes(text TEXT); INSERT INTO notes VALUES ('x');")
            .expect("foreign tables");
        drop(connection);
        let error = refused_untouched(&dir);
        assert!(is_unknown_schema(&error, 0), "{error}");
    }

    #[test]
    fn a_failed_upgrade_is_rolled_back_and_the_file_kept() {
        let dir = version_1_database("failed-upgrade");
        // The upgrade's second statement fails: lists already has the column it adds.
        let connection = Connection::open(dir.join(FILE_NAME)).expect("open v1");
        connection.execute_batch("ALTER TABLE lists ADD COLUMN stored_at INTEGER").expect("alter");
        drop(connection);
        let error = refused_untouched(&dir);
        assert!(matches!(error, StoreError::UpgradeFailed { from: 1, .. }), "{error}");
        let connection = Connection::open(dir.join(FILE_NAME)).expect("reopen raw");
        let version: i64 =
            connection.query_row("PRAGMA user_version", [], |row| row.get(0)).expect("version");
        let added: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info('entries') WHERE name = 'stored_at'",
                [],
                |row| row.get(0),
            )
            .expect("columns");
        assert_eq!((version, added), (1, 0), "the first statement was rolled back");
    }

    #[test]
    fn write_errors_are_reported_not_panicked() {
        let dir = temp_dir("readonly");
        let mut store = SqliteStore::open(&dir).expect("open");
        store.connection.pragma_update(None, "query_only", true).expect("query_only");
        let entry = Change::PutEntry {
            key: "k".into(),
            owner: suite::owner("a"),
            response: suite::response("body"),
        };
        let error = store.apply(vec![entry]).expect_err("read-only");
        assert!(!error.kind().is_empty());
        assert_eq!(store.totals(), Totals::default());
    }
}
