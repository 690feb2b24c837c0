//! The in-memory object store: objects keyed by (resource, namespace, name), one global
//! resourceVersion counter, a bounded history of watch events, and a condition variable
//! that wakes watchers after every write.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::clock;
use crate::resources::{self, ResourceId};
use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write, as watchers see it. `previous` is the object before a modification, so a
/// filtered watch can turn "moved out of my selector" into DELETED, as kube does.
pub struct Event {
    pub rv: u64,
    pub resource: ResourceId,
    pub kind: EventType,
    pub object: Value,
    pub previous: Option<Value>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub resource: ResourceId,
    pub namespace: String,
    pub name: String,
}

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
}

impl Store {
    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    pub fn contains_namespace(&self, name: &str) -> bool {
        self.objects.contains_key(&namespace_key(name))
    }

    /// Objects of one resource, optionally in one namespace, sorted by namespace then name.
    pub fn list(
        &self,
        resource: ResourceId,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = &Value> {
        let from =
            Key { resource, namespace: namespace.unwrap_or("").to_string(), name: String::new() };
        self.objects
            .range(from..)
            .take_while(move |(key, _)| {
                key.resource == resource && namespace.is_none_or(|ns| key.namespace == ns)
            })
            .map(|(_, object)| object)
    }

    /// Stores a new object: fills uid, creationTimestamp (`created` Unix time) and
    /// resourceVersion. The caller has set name, namespace, kind and apiVersion.
    pub fn create(&mut self, key: Key, mut object: Value, created: i64) -> Result<Value, ApiError> {
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(
                &resources::get(key.resource).qualified_name(),
                &key.name,
            ));
        }
        let metadata = &mut object["metadata"];
        metadata["uid"] = json!(random_uid());
        metadata["creationTimestamp"] = json!(clock::rfc3339(created));
        Ok(self.commit(key, EventType::Added, object, None))
    }

    /// Replaces an existing object. A non-empty `metadata.resourceVersion` in `object` must
    /// equal the stored one (optimistic concurrency); identity fields are kept from storage.
    pub fn replace(&mut self, key: Key, mut object: Value) -> Result<Value, ApiError> {
        let resource = resources::get(key.resource).qualified_name();
        let Some(current) = self.objects.get(&key) else {
            return Err(ApiError::not_found(&resource, &key.name));
        };
        let expected = object["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !expected.is_empty()
            && expected != current["metadata"]["resourceVersion"].as_str().unwrap_or("")
        {
            return Err(ApiError::conflict(&resource, &key.name));
        }
        for field in ["uid", "creationTimestamp"] {
            object["metadata"][field] = current["metadata"][field].clone();
        }
        let previous = current.clone();
        Ok(self.commit(key, EventType::Modified, object, Some(previous)))
    }

    pub fn delete(&mut self, key: &Key) -> Result<Value, ApiError> {
        let Some(object) = self.objects.remove(key) else {
            return Err(ApiError::not_found(
                &resources::get(key.resource).qualified_name(),
                &key.name,
            ));
        };
        self.rv += 1;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(key.resource, EventType::Deleted, object.clone(), None);
        Ok(object)
    }

    /// Events with a resourceVersion greater than `after`, or `Expired` if some of them have
    /// already left the history.
    pub fn events_after(&self, after: u64) -> Result<Vec<Arc<Event>>, ApiError> {
        let oldest_kept = self.history.front().map_or(self.rv + 1, |e| e.rv);
        if after < self.rv && after + 1 < oldest_kept {
            return Err(ApiError::expired(after, oldest_kept.saturating_sub(1)));
        }
        let start = self.history.partition_point(|e| e.rv <= after);
        Ok(self.history.range(start..).cloned().collect())
    }

    fn commit(
        &mut self,
        key: Key,
        kind: EventType,
        mut object: Value,
        previous: Option<Value>,
    ) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.record(key.resource, kind, object.clone(), previous);
        object
    }

    fn record(
        &mut self,
        resource: ResourceId,
        kind: EventType,
        object: Value,
        previous: Option<Value>,
    ) {
        self.history.push_back(Arc::new(Event { rv: self.rv, resource, kind, object, previous }));
        while self.history.len() > self.history_limit {
            self.history.pop_front();
        }
    }
}

fn namespace_key(name: &str) -> Key {
    // `find` cannot fail for a type listed in RESOURCES.
    let resource = resources::find_by_plural("namespaces").unwrap_or_default();
    Key { resource, namespace: String::new(), name: name.to_string() }
}

/// A random RFC 4122 version-4 UUID.
pub fn random_uid() -> String {
    let mut b = [0u8; 16];
    // The system RNG failing leaves zeros: still a well-formed (if non-unique) uid.
    let _ = SystemRandom::new().fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// The store shared by all connection threads; writers notify watchers through `changed`.
pub struct Shared {
    store: Mutex<Store>,
    changed: Condvar,
}

impl Shared {
    pub fn new(history_limit: usize) -> Shared {
        let store =
            Store { rv: 0, objects: BTreeMap::new(), history: VecDeque::new(), history_limit };
        Shared { store: Mutex::new(store), changed: Condvar::new() }
    }

    /// A read-only view. A panicking thread cannot leave the store half-written (every
    /// mutation is a single insert/remove), so a poisoned lock is still usable.
    pub fn read(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs a mutation and wakes every watcher.
    pub fn write<T>(&self, mutate: impl FnOnce(&mut Store) -> T) -> T {
        let result = mutate(&mut self.read());
        self.changed.notify_all();
        result
    }

    /// Waits until the resourceVersion passes `seen` or `timeout` elapses; returns the guard.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> MutexGuard<'_, Store> {
        let guard = self.read();
        if guard.rv > seen {
            return guard;
        }
        match self.changed.wait_timeout(guard, timeout) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }
}
