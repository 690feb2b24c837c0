//! A watch answered from the cache while the cloud is down: the cached state as events
//! (sent when it starts), then the stream held open with a BOOKMARK every 15 s when the
//! client allows them, until the client's `timeoutSeconds` (default 5 min) or the
//! cloud's return (spread over `--reconnect-spread`) end it with a clean end of stream,
//! so the client re-watches.

use std::time::{Duration, Instant};

use crate::body::{LAST_CHUNK, encode_chunk};
use crate::cache::WatchRequest;
use crate::client::{ClientConn, Phase, Step};
use crate::metrics::OpenWatch;
use crate::transport::ReadOutcome;

/// How long an offline watch stays open when the client set no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(300);
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(15);

pub struct OfflineWatch {
    /// Counted among open watches while it lives.
    _counted: OpenWatch,
    ends_at: Instant,
    next_bookmark: Option<Instant>,
    /// The BOOKMARK line to repeat (at the cached list's resourceVersion).
    bookmark_event: Vec<u8>,
}

impl OfflineWatch {
    /// Queues the replayed state on `client` (whose response head is already queued) and
    /// holds the stream open.
    pub fn start(
        client: &mut ClientConn,
        request: &WatchRequest,
        initial_events: &[u8],
        bookmark_event: Vec<u8>,
        counted: OpenWatch,
    ) {
        if !initial_events.is_empty() {
            client.out.push(&encode_chunk(initial_events));
        }
        let now = Instant::now();
        let timeout = request.timeout_seconds.map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
        let watch = OfflineWatch {
            _counted: counted,
            ends_at: now + timeout,
            // No bookmark line (a non-JSON watch): an empty chunk would end the stream.
            next_bookmark: (request.allow_bookmarks && !bookmark_event.is_empty())
                .then_some(now + BOOKMARK_INTERVAL),
            bookmark_event,
        };
        client.set_phase(Phase::OfflineWatch(Box::new(watch)));
    }

    /// Brings the end forward to `at` (the cloud is back: the client should re-watch).
    pub fn end_by(&mut self, at: Instant) {
        self.ends_at = self.ends_at.min(at);
    }

    /// The next time the watch has something to do: a BOOKMARK or its end.
    pub fn deadline(&self) -> Instant {
        self.next_bookmark.map_or(self.ends_at, |at| at.min(self.ends_at))
    }

    /// Its deadline came: sends a BOOKMARK, or reports that the watch is over.
    pub fn tick(&mut self, client: &mut ClientConn, now: Instant) -> Tick {
        if now >= self.ends_at {
            return Tick::Ended;
        }
        if self.next_bookmark.is_some_and(|at| at <= now) {
            client.out.push(&encode_chunk(&self.bookmark_event));
            self.next_bookmark = Some(now + BOOKMARK_INTERVAL);
        }
        Tick::Continues
    }
}

pub enum Tick {
    Continues,
    Ended,
}

/// An offline watch only flushes and notices the client leaving.
pub fn step(client: &mut ClientConn, scratch: &mut [u8]) -> Step {
    if client.flush().is_err() {
        return Step::Close;
    }
    match client.transport.read_plain(scratch) {
        Ok(ReadOutcome::Data(_)) => Step::Again, // nothing is expected; ignore it
        Ok(ReadOutcome::WouldBlock) => Step::Wait,
        Ok(ReadOutcome::Eof) | Err(_) => Step::Close,
    }
}

/// Ends the stream cleanly (the terminating chunk): the client re-watches from its
/// resourceVersion, and the connection stays usable.
pub fn finish(client: &mut ClientConn) {
    client.out.push(LAST_CHUNK);
    client.await_next_request();
}
