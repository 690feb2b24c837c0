//! Deadlines for the reactor: a min-heap of `(when, slot)`.
//!
//! Cancellation is lazy: each connection keeps its own current deadline, and an
//! expired heap entry only counts if the connection still wants that moment. That
//! keeps re-arming cheap (push only when the deadline moves earlier).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    pub fn schedule(&mut self, when: Instant, slot: usize) {
        self.heap.push(Reverse((when, slot)));
    }

    /// How long `poll` may sleep: until the earliest deadline.
    pub fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        self.heap.peek().map(|Reverse((when, _))| when.saturating_duration_since(now))
    }

    /// Pops every entry due at `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        while let Some(Reverse((when, slot))) = self.heap.peek().copied() {
            if when > now {
                break;
            }
            self.heap.pop();
            due.push(slot);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first() {
        let mut timers = Timers::default();
        let now = Instant::now();
        timers.schedule(now + Duration::from_secs(5), 1);
        timers.schedule(now + Duration::from_secs(1), 2);
        assert_eq!(timers.poll_timeout(now), Some(Duration::from_secs(1)));
        assert_eq!(timers.expired(now + Duration::from_secs(2)), vec![2]);
        assert_eq!(timers.expired(now + Duration::from_secs(9)), vec![1]);
        assert_eq!(timers.poll_timeout(now), None);
    }
}
