//! The cache helper thread and the reactor's handle to it. The reactor only ever takes a
//! mutex held for a queue push/pop: writes that do not fit the bounded queue are dropped and
//! counted, lookups that do not fit are refused, replies come back through the mio waker.
//! Lookups are served before queued writes, so an offline read never waits behind them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::engine::Engine;
use super::key::{ListScope, ObjectWrite, ReadKey, WatchRequest};
use super::store::{Store, StoreError, SummaryRow, Totals};
use super::write::WriteAnswer;
use super::{CacheError, CacheStats, Lookup, Reply};

/// Bytes of response bodies waiting beyond which further stores are dropped (one larger
/// body is still accepted when none wait: large responses are stored, not truncated).
const QUEUED_BYTES_CAP: usize = 4 << 20;

/// Bytes of watch events waiting beyond which a stream is interrupted. Watch events have
/// their own allowance so a burst of GET answers can never crowd them out: a dropped
/// event stops that stream's updates for good, a dropped GET only costs a fresher copy.
const QUEUED_WATCH_BYTES_CAP: usize = 16 << 20;

/// How often an unchanged or busy cache refreshes its /debug/cache snapshot at most.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(2);

/// One warning per kind of write failure per this interval.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

enum Job {
    Store {
        key: ReadKey,
        content_type: String,
        body: Vec<u8>,
    },
    /// What the cloud answered to a write of one object; queued like a `Store`.
    WriteAnswered(WriteAnswer),
    WatchOpened {
        watch_id: u64,
        request: WatchRequest,
    },
    WatchBytes {
        watch_id: u64,
        bytes: Vec<u8>,
    },
    WatchInterrupted {
        watch_id: u64,
    },
    WatchClosed {
        watch_id: u64,
    },
}

impl Job {
    fn payload_len(&self) -> usize {
        match self {
            Job::Store { body, .. } => body.len(),
            Job::WriteAnswered(answer) => answer.body.len(),
            Job::WatchBytes { bytes, .. } => bytes.len(),
            _ => 0,
        }
    }

    /// Stores and write answers share one lane: its job count and body bytes are capped.
    fn in_store_lane(&self) -> bool {
        matches!(self, Job::Store { .. } | Job::WriteAnswered(_))
    }
}

impl Queues {
    /// Adds a data-carrying job if its lane has room. Watch bytes following bytes of the
    /// same stream are appended to that job, so a busy stream is one job, not thousands.
    fn admit(&mut self, job: Job, max_stores: usize) -> bool {
        let len = job.payload_len();
        match job {
            Job::WatchBytes { watch_id, bytes } => {
                if self.watch_bytes > 0 && self.watch_bytes + len > QUEUED_WATCH_BYTES_CAP {
                    return false;
                }
                self.watch_bytes += len;
                match self.jobs.back_mut() {
                    Some(Job::WatchBytes { watch_id: last, bytes: pending })
                        if *last == watch_id =>
                    {
                        pending.extend_from_slice(&bytes)
                    }
                    _ => self.jobs.push_back(Job::WatchBytes { watch_id, bytes }),
                }
                true
            }
            job => {
                if let Job::Store { key, .. } = &job {
                    self.remove_store_of(key);
                }
                let fits_bytes =
                    self.queued_bytes == 0 || self.queued_bytes + len <= QUEUED_BYTES_CAP;
                if self.stores >= max_stores || !fits_bytes {
                    return false;
                }
                self.queued_bytes += len;
                self.stores += 1;
                self.jobs.push_back(job);
                true
            }
        }
    }

    /// A newer answer for `key` supersedes one still waiting: writing the older one would
    /// be wasted work, and under repeated reads of one resource the queue would otherwise
    /// fill with copies of the same body. The newer one goes to the back, after any watch
    /// bytes queued in between, so the order of writes is kept.
    fn remove_store_of(&mut self, key: &ReadKey) {
        let queued = self
            .jobs
            .iter()
            .position(|job| matches!(job, Job::Store { key: queued, .. } if queued == key));
        if let Some(Job::Store { body, .. }) = queued.and_then(|index| self.jobs.remove(index)) {
            self.queued_bytes -= body.len();
            self.stores -= 1;
        }
    }

    fn pop(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        if let Job::WatchBytes { bytes, .. } = &job {
            self.watch_bytes -= bytes.len();
        } else if job.in_store_lane() {
            self.queued_bytes -= job.payload_len();
            self.stores -= 1;
        }
        Some(job)
    }
}

enum Work {
    Lookup(u64, Lookup),
    Job(Job),
    Idle,
}

#[derive(Default)]
struct Queues {
    lookups: VecDeque<(u64, Lookup)>,
    jobs: VecDeque<Job>,
    /// Store-lane jobs (stores and write answers) waiting and their body bytes.
    stores: usize,
    queued_bytes: usize,
    /// Watch event bytes waiting.
    watch_bytes: usize,
    stopping: bool,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    dropped_writes: AtomicU64,
    write_errors: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    queues: Mutex<Queues>,
    work_ready: Condvar,
    replies: Mutex<Vec<(u64, Reply)>>,
    counters: Counters,
    summary: Mutex<String>,
    waker: Arc<mio::Waker>,
    queue_len: usize,
}

/// A poisoned lock only means another thread panicked mid-push; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Queues a data-carrying write, or refuses it when the queue is full.
    fn try_push(&self, job: Job) -> bool {
        self.push(|queues| queues.admit(job, self.queue_len))
    }

    /// Queues a small control message; these are never dropped so streams stay consistent.
    fn push_control(&self, job: Job) {
        self.push(|queues| {
            queues.jobs.push_back(job);
            true
        });
    }

    /// Runs `add` under the lock and wakes the cache thread only if it may be asleep: it
    /// waits only after finding both queues empty, so while they hold anything it is busy
    /// and will see the new work. A wake-up is a futex syscall; per request it would cost
    /// the reactor more than the queueing itself.
    fn push(&self, add: impl FnOnce(&mut Queues) -> bool) -> bool {
        let mut queues = lock(&self.queues);
        let asleep = queues.jobs.is_empty() && queues.lookups.is_empty();
        let added = add(&mut queues);
        drop(queues);
        if added && asleep {
            self.work_ready.notify_one();
        }
        added
    }

    /// Blocks the cache thread until there is work; None once stopping and drained.
    fn next_work(&self) -> Option<Work> {
        let mut queues = lock(&self.queues);
        loop {
            if let Some((id, lookup)) = queues.lookups.pop_front() {
                return Some(Work::Lookup(id, lookup));
            }
            if let Some(job) = queues.pop() {
                return Some(Work::Job(job));
            }
            if queues.stopping {
                return None;
            }
            let (guard, timeout) = self
                .work_ready
                .wait_timeout(queues, SUMMARY_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner);
            queues = guard;
            if timeout.timed_out() && queues.lookups.is_empty() && queues.jobs.is_empty() {
                return Some(Work::Idle);
            }
        }
    }

    fn reply(&self, request_id: u64, reply: Reply) {
        lock(&self.replies).push((request_id, reply));
        if let Err(error) = self.waker.wake() {
            log::warn!("cache: waking the reactor failed: {error}");
        }
    }

    fn publish_totals(&self, totals: Totals) {
        self.counters.entries.store(totals.entries, Ordering::Relaxed);
        self.counters.bytes.store(totals.bytes, Ordering::Relaxed);
    }
}

/// The reactor's side of the cache. Every method returns without waiting for SQLite.
pub struct CacheHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Open JSON watch streams → their scope, and whether their bytes were dropped
    /// (then the rest are too).
    watches: Mutex<HashMap<u64, (ListScope, bool)>>,
}

impl CacheHandle {
    pub(super) fn spawn<S: Store + Send + 'static>(
        store: S,
        max_bytes: u64,
        queue_len: usize,
        waker: Arc<mio::Waker>,
    ) -> Result<CacheHandle, CacheError> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            work_ready: Condvar::new(),
            replies: Mutex::new(Vec::new()),
            counters: Counters::default(),
            summary: Mutex::new(String::from("{}")),
            waker,
            queue_len: queue_len.max(1),
        });
        let mut engine = Engine::new(store, max_bytes);
        shared.publish_totals(engine.totals());
        publish_summary(&shared, &mut engine);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("cache".to_string())
            .spawn(move || run(&thread_shared, engine))
            .map_err(|e| CacheError::Spawn(e.to_string()))?;
        Ok(CacheHandle { shared, thread: Some(thread), watches: Mutex::new(HashMap::new()) })
    }

    /// Hands a complete 200 response to the writer; dropped (and counted) when the queue is full.
    pub fn store(&self, key: ReadKey, content_type: &str, body: Vec<u8>) {
        let job = Job::Store { key, content_type: content_type.to_string(), body };
        if !self.shared.try_push(job) {
            bump(&self.shared.counters.dropped_writes);
        }
    }

    /// Hands the cloud's complete answer to a write of one object (see `classify_write`);
    /// dropped (and counted) when the queue is full, like a store.
    pub fn write_answered(
        &self,
        write: ObjectWrite,
        status: u16,
        content_type: &str,
        body: Vec<u8>,
    ) {
        let answer = WriteAnswer { write, status, content_type: content_type.to_string(), body };
        if !self.shared.try_push(Job::WriteAnswered(answer)) {
            bump(&self.shared.counters.dropped_writes);
        }
    }

    /// A JSON or protobuf watch stream for `request` started; its events will update the
    /// cached list.
    pub fn watch_opened(&self, watch_id: u64, request: &WatchRequest) {
        if request.scope.wire().is_none() {
            return;
        }
        let mut watches = lock(&self.watches);
        // One stream per scope keeps the list current; more would only repeat its events
        // (200 kubelet-like watches of one scope would otherwise flood the queue).
        if watches.values().any(|(scope, _)| *scope == request.scope) {
            return;
        }
        watches.insert(watch_id, (request.scope.clone(), false));
        drop(watches);
        self.shared.push_control(Job::WatchOpened { watch_id, request: request.clone() });
    }

    /// De-chunked body bytes of an opened watch, in order, any boundaries. When the queue is
    /// full they are dropped and the stream stops updating the cache (a gap would corrupt it).
    pub fn watch_bytes(&self, watch_id: u64, bytes: &[u8]) {
        let mut watches = lock(&self.watches);
        let Some((_, interrupted)) = watches.get_mut(&watch_id) else {
            return;
        };
        if *interrupted {
            return;
        }
        if !self.shared.try_push(Job::WatchBytes { watch_id, bytes: bytes.to_vec() }) {
            *interrupted = true;
            bump(&self.shared.counters.dropped_writes);
            self.shared.push_control(Job::WatchInterrupted { watch_id });
        }
    }

    pub fn watch_closed(&self, watch_id: u64) {
        if lock(&self.watches).remove(&watch_id).is_some() {
            self.shared.push_control(Job::WatchClosed { watch_id });
        }
    }

    /// Asks for an answer from cache; it arrives through `take_replies` after the waker fires.
    pub fn lookup(&self, request_id: u64, lookup: Lookup) -> Result<(), CacheError> {
        let queue_len = self.shared.queue_len;
        let added = self.shared.push(|queues| {
            let room = queues.lookups.len() < queue_len;
            if room {
                queues.lookups.push_back((request_id, lookup));
            }
            room
        });
        if added { Ok(()) } else { Err(CacheError::QueueFull) }
    }

    /// Replies that are ready (call after the waker fired).
    pub fn take_replies(&self) -> Vec<(u64, Reply)> {
        std::mem::take(&mut *lock(&self.shared.replies))
    }

    pub fn stats(&self) -> CacheStats {
        self.reporter().stats()
    }

    /// A read-only view of the counters and summary for other threads (diagnostics).
    pub fn reporter(&self) -> CacheReporter {
        CacheReporter { shared: Arc::clone(&self.shared) }
    }

    /// Stops the thread after it has written everything already queued.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        lock(&self.shared.queues).stopping = true;
        self.shared.work_ready.notify_one();
        if thread.join().is_err() {
            log::error!("cache: the cache thread panicked");
        }
    }
}

impl Drop for CacheHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cache thread's loop.
fn run<S: Store>(shared: &Shared, mut engine: Engine<S>) {
    let mut warnings = WarningLimiter::default();
    let mut summary_dirty = false;
    let mut summary_at = Instant::now();
    let mut written_since_trim = 0;
    while let Some(work) = shared.next_work() {
        match work {
            Work::Lookup(request_id, lookup) => {
                let reply = engine.answer(&lookup).unwrap_or_else(|error| {
                    warnings.warn("cache read", &error);
                    Reply::Failed(error.to_string())
                });
                let hit = matches!(
                    reply,
                    Reply::Hit(_) | Reply::WatchReplay { .. } | Reply::WatchExpired { .. }
                );
                bump(if hit { &shared.counters.hits } else { &shared.counters.misses });
                shared.reply(request_id, reply);
            }
            Work::Job(job) => {
                written_since_trim += job.payload_len();
                if let Err(error) = run_job(shared, &mut engine, job) {
                    bump(&shared.counters.write_errors);
                    warnings.warn("cache write", &error);
                }
                summary_dirty = true;
            }
            // Quiet for a while after writes: the bodies were freed, but the allocator would
            // keep their pages resident. Not during load: pages given back would only be
            // faulted in again.
            Work::Idle if written_since_trim > 0 => {
                crate::memory::give_back_free_pages();
                written_since_trim = 0;
            }
            Work::Idle => {}
        }
        shared.publish_totals(engine.totals());
        if summary_dirty && summary_at.elapsed() >= SUMMARY_INTERVAL {
            publish_summary(shared, &mut engine);
            summary_dirty = false;
            summary_at = Instant::now();
        }
    }
    publish_summary(shared, &mut engine);
}

fn run_job<S: Store>(shared: &Shared, engine: &mut Engine<S>, job: Job) -> Result<(), StoreError> {
    match job {
        Job::Store { key, content_type, body } => {
            engine.store_response(&key, &content_type, body)?;
            bump(&shared.counters.stored);
        }
        Job::WriteAnswered(answer) => engine.write_answered(&answer)?,
        Job::WatchOpened { watch_id, request } => engine.watch_opened(watch_id, &request),
        Job::WatchBytes { watch_id, bytes } => engine.watch_bytes(watch_id, &bytes)?,
        Job::WatchInterrupted { watch_id } => engine.watch_interrupted(watch_id),
        Job::WatchClosed { watch_id } => engine.watch_closed(watch_id),
    }
    Ok(())
}

fn publish_summary<S: Store>(shared: &Shared, engine: &mut Engine<S>) {
    match engine.summary() {
        Ok(rows) => *lock(&shared.summary) = summary_json(engine.totals(), &rows),
        Err(error) => log::debug!("cache: summary failed: {error}"),
    }
}

/// /debug/cache: per identity and resource, what is held, in all and per content type.
/// Bodies are stored decompressed whatever the cloud sent (`stored_encoding`); answers over
/// 128 KiB are gzipped on the way out to clients that accept it.
fn summary_json(totals: Totals, rows: &[SummaryRow]) -> String {
    use serde_json::{Map, Value, json};
    let counts = |row: &SummaryRow| json!({"entries": row.entries, "lists": row.lists, "list_items": row.list_items, "bytes": row.bytes});
    let mut identities = Map::new();
    for row in rows {
        let resources = identities.entry(row.identity.clone()).or_insert_with(|| json!({}));
        let resource = &mut resources[&row.resource];
        if resource.is_null() {
            *resource = json!({"entries": 0, "lists": 0, "list_items": 0, "bytes": 0,
                               "content_types": {}});
        }
        for (name, value) in [
            ("entries", row.entries),
            ("lists", row.lists),
            ("list_items", row.list_items),
            ("bytes", row.bytes),
        ] {
            resource[name] = Value::from(resource[name].as_u64().unwrap_or(0) + value);
        }
        resource["content_types"][&row.content_type] = counts(row);
    }
    json!({"entries": totals.entries, "bytes": totals.bytes, "stored_encoding": "identity",
           "identities": identities})
    .to_string()
}

/// Logs each distinct kind of failure at most once per `WARNING_INTERVAL`.
#[derive(Default)]
struct WarningLimiter {
    last: HashMap<String, Instant>,
}

impl WarningLimiter {
    fn warn(&mut self, what: &str, error: &StoreError) {
        let kind = format!("{what}: {}", error.kind());
        let due = self.last.get(&kind).is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        if due {
            log::warn!(
                "{what} failed: {error} (further {} errors are not logged for a minute)",
                error.kind()
            );
            self.last.insert(kind, Instant::now());
        }
    }
}

/// Counters and the /debug/cache summary, readable from any thread.
#[derive(Clone)]
pub struct CacheReporter {
    shared: Arc<Shared>,
}

impl CacheReporter {
    pub fn stats(&self) -> CacheStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CacheStats {
            hits: read(&counters.hits),
            misses: read(&counters.misses),
            stored: read(&counters.stored),
            dropped_writes: read(&counters.dropped_writes),
            write_errors: read(&counters.write_errors),
            entries: read(&counters.entries),
            bytes: read(&counters.bytes),
        }
    }

    /// JSON for /debug/cache: counts and bytes per identity and resource, refreshed by the
    /// cache thread at most every couple of seconds. Never bodies.
    pub fn debug_summary(&self) -> String {
        lock(&self.shared.summary).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_adds_up_content_types_per_resource() {
        let row = |content_type: &str, entries, lists| SummaryRow {
            identity: "cn:kubelet".into(),
            resource: "pods".into(),
            content_type: content_type.into(),
            entries,
            lists,
            list_items: lists * 3,
            bytes: 100,
        };
        let rows =
            [row("application/json", 2, 1), row("application/vnd.kubernetes.protobuf", 1, 1)];
        let summary: serde_json::Value =
            serde_json::from_str(&summary_json(Totals { entries: 5, bytes: 200 }, &rows))
                .expect("json");
        let pods = &summary["identities"]["cn:kubelet"]["pods"];
        assert_eq!((pods["entries"].as_u64(), pods["lists"].as_u64()), (Some(3), Some(2)));
        assert_eq!(pods["list_items"], 6);
        let protobuf = &pods["content_types"]["application/vnd.kubernetes.protobuf"];
        assert_eq!(
            (protobuf["entries"].as_u64(), protobuf["bytes"].as_u64()),
            (Some(1), Some(100))
        );
        assert_eq!(summary["stored_encoding"], "identity");
    }
}
