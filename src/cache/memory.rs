//! The in-memory store (`--cache-type=memory`): same behaviour as SQLite, lost on restart.

use std::collections::{BTreeMap, HashMap};

use super::CachedResponse;
use super::list::{ListHead, ListItem};
use super::store::{
    Change, Owner, Store, StoreError, StoredHead, StoredKey, SummaryRow, Totals, entry_bytes,
    head_bytes, item_bytes,
};

struct Entry {
    owner: Owner,
    response: CachedResponse,
    bytes: u64,
    last_access: u64,
}

struct List {
    owner: Owner,
    head: ListHead,
    stored_at: u64,
    items: BTreeMap<String, ListItem>,
    bytes: u64,
    last_access: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    entries: HashMap<String, Entry>,
    lists: HashMap<String, List>,
    clock: u64,
    bytes: u64,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove_entry(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.bytes -= old.bytes;
        }
    }

    fn remove_list(&mut self, scope: &str) {
        if let Some(old) = self.lists.remove(scope) {
            self.bytes -= old.bytes;
        }
    }

    fn apply_one(&mut self, change: Change) {
        let now = self.tick();
        match change {
            Change::PutEntry { key, owner, response } => {
                self.remove_entry(&key);
                let bytes = entry_bytes(&key, &response);
                self.bytes += bytes;
                self.entries.insert(key, Entry { owner, response, bytes, last_access: now });
            }
            Change::RemoveEntry { key } => self.remove_entry(&key),
            Change::PutList { scope, owner, head, items, stored_at } => {
                self.remove_list(&scope);
                let bytes = head_bytes(&scope, &head) + items.iter().map(item_bytes).sum::<u64>();
                self.bytes += bytes;
                let items = items.into_iter().map(|item| (item.key.clone(), item)).collect();
                let list = List { owner, head, stored_at, items, bytes, last_access: now };
                self.lists.insert(scope, list);
            }
            Change::RemoveList { scope } => self.remove_list(&scope),
            Change::PutItem { scope, item } => {
                if let Some(list) = self.lists.get_mut(&scope) {
                    let added = item_bytes(&item);
                    let removed =
                        list.items.insert(item.key.clone(), item).as_ref().map_or(0, item_bytes);
                    list.bytes = list.bytes + added - removed;
                    self.bytes = self.bytes + added - removed;
                }
            }
            Change::RemoveItem { scope, key } => {
                if let Some(list) = self.lists.get_mut(&scope) {
                    let removed = list.items.remove(&key).as_ref().map_or(0, item_bytes);
                    list.bytes -= removed;
                    self.bytes -= removed;
                }
            }
            Change::SetListVersion { scope, resource_version } => {
                if let Some(list) = self.lists.get_mut(&scope) {
                    let old_len = list.head.resource_version.len() as u64;
                    let new_len = resource_version.len() as u64;
                    list.bytes = list.bytes + new_len - old_len;
                    self.bytes = self.bytes + new_len - old_len;
                    list.head.resource_version = resource_version;
                }
            }
            Change::Refresh { key: StoredKey::Entry(key), stored_at } => {
                if let Some(entry) = self.entries.get_mut(&key) {
                    entry.response.stored_at = stored_at;
                }
            }
            Change::Refresh { key: StoredKey::List(scope), stored_at } => {
                if let Some(list) = self.lists.get_mut(&scope) {
                    list.stored_at = stored_at;
                }
            }
        }
    }

    /// Every entry and list, least recently used first: (last access, is_list, key).
    fn by_age(&self) -> Vec<(u64, bool, String)> {
        let entries = self.entries.iter().map(|(k, e)| (e.last_access, false, k.clone()));
        let lists = self.lists.iter().map(|(k, l)| (l.last_access, true, k.clone()));
        let mut all: Vec<_> = entries.chain(lists).collect();
        all.sort_unstable();
        all
    }
}

impl Store for MemoryStore {
    fn entry(&mut self, key: &str, touch: bool) -> Result<Option<CachedResponse>, StoreError> {
        let now = self.tick();
        Ok(self.entries.get_mut(key).map(|entry| {
            if touch {
                entry.last_access = now;
            }
            entry.response.clone()
        }))
    }

    fn list_head(&mut self, scope: &str, touch: bool) -> Result<Option<StoredHead>, StoreError> {
        let now = self.tick();
        Ok(self.lists.get_mut(scope).map(|list| {
            if touch {
                list.last_access = now;
            }
            StoredHead { head: list.head.clone(), stored_at: list.stored_at }
        }))
    }

    fn list_items(&mut self, scope: &str) -> Result<Vec<ListItem>, StoreError> {
        Ok(self
            .lists
            .get(scope)
            .map(|list| list.items.values().cloned().collect())
            .unwrap_or_default())
    }

    fn item_version(&mut self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        let item = self.lists.get(scope).and_then(|list| list.items.get(key));
        Ok(item.map(|item| item.resource_version.clone()))
    }

    fn keys_containing(&mut self, needle: &str) -> Result<Vec<StoredKey>, StoreError> {
        let matching = |key: &&String| key.contains(needle);
        let entries = self.entries.keys().filter(matching).cloned().map(StoredKey::Entry);
        let lists = self.lists.keys().filter(matching).cloned().map(StoredKey::List);
        Ok(entries.chain(lists).collect())
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<(), StoreError> {
        for change in changes {
            self.apply_one(change);
        }
        Ok(())
    }

    fn evict_to(&mut self, target_bytes: u64) -> Result<u64, StoreError> {
        let mut evicted = 0;
        for (_, is_list, key) in self.by_age() {
            if self.bytes <= target_bytes {
                break;
            }
            if is_list {
                self.remove_list(&key);
            } else {
                self.remove_entry(&key);
            }
            evicted += 1;
        }
        Ok(evicted)
    }

    fn totals(&self) -> Totals {
        Totals { entries: (self.entries.len() + self.lists.len()) as u64, bytes: self.bytes }
    }

    fn summary(&mut self) -> Result<Vec<SummaryRow>, StoreError> {
        let mut counted: BTreeMap<(String, String, String), SummaryRow> = BTreeMap::new();
        for entry in self.entries.values() {
            let row = summary_row(&mut counted, &entry.owner, &entry.response.content_type);
            row.entries += 1;
            row.bytes += entry.bytes;
        }
        for list in self.lists.values() {
            let row = summary_row(&mut counted, &list.owner, &list.head.content_type);
            row.lists += 1;
            row.list_items += list.items.len() as u64;
            row.bytes += list.bytes;
        }
        Ok(counted.into_values().collect())
    }
}

fn summary_row<'a>(
    rows: &'a mut BTreeMap<(String, String, String), SummaryRow>,
    owner: &Owner,
    content_type: &str,
) -> &'a mut SummaryRow {
    let key = (owner.identity.clone(), owner.resource.clone(), content_type.to_string());
    rows.entry(key).or_insert_with(|| SummaryRow {
        identity: owner.identity.clone(),
        resource: owner.resource.clone(),
        content_type: content_type.to_string(),
        ..SummaryRow::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_store_suite() {
        super::super::store::suite::run_all(MemoryStore::new);
    }
}
