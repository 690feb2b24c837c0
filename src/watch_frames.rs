//! Whole watch events for a relayed watch stream. The cloud's chunks need not end at an
//! event's end (Go flushes its buffer when full), so a relayed watch is re-chunked one
//! run of whole events at a time: whatever happens to the cloud, the proxy can then end
//! the client's stream cleanly — terminating chunk, connection kept — without ever
//! sending half an event, and the client re-watches from its resourceVersion instead of
//! treating an abrupt close as fatal (some informers stop for good on one).
//!
//! Only watches: a LIST cut short must end abruptly, or it would look complete.

use crate::protobuf;

/// Largest partial event held while waiting for its end (kube objects are at most a
/// few MiB); a bigger one (or a protobuf frame whose length says it will be bigger) is
/// passed on as it comes and the stream loses its clean end.
const MAX_PARTIAL_EVENT: usize = 8 << 20;

/// How events are delimited in a watch stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFraming {
    /// `application/json`: one event per line.
    JsonLines,
    /// `application/vnd.kubernetes.protobuf;stream=watch`: 4-byte big-endian length, then
    /// that many bytes.
    LengthPrefixed,
}

impl EventFraming {
    /// The framing of a watch answered with `content_type`; `None` when unknown.
    pub fn of(content_type: &str) -> Option<EventFraming> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media {
            "application/json" => Some(EventFraming::JsonLines),
            "application/vnd.kubernetes.protobuf" if content_type.contains("stream=watch") => {
                Some(EventFraming::LengthPrefixed)
            }
            _ => None,
        }
    }
}

/// Collects a watch stream's payload and hands out whole events.
pub struct EventFramer {
    framing: EventFraming,
    partial: Vec<u8>,
    /// An event outgrew `MAX_PARTIAL_EVENT`: bytes now pass as they come.
    passthrough: bool,
}

impl EventFramer {
    pub fn new(framing: EventFraming) -> EventFramer {
        EventFramer { framing, partial: Vec::new(), passthrough: false }
    }

    /// Takes payload bytes; returns the bytes of the events they completed (possibly
    /// none), to be sent as one chunk.
    pub fn push(&mut self, payload: &[u8]) -> Vec<u8> {
        if self.passthrough {
            return payload.to_vec();
        }
        self.partial.extend_from_slice(payload);
        let rest = self.partial.split_off(self.whole_events_len());
        let mut events = std::mem::replace(&mut self.partial, rest);
        if self.partial_is_too_large() {
            self.passthrough = true;
            events.append(&mut self.partial);
        }
        events
    }

    /// The event being collected is, or says it will be, larger than it may be held.
    fn partial_is_too_large(&self) -> bool {
        let announced = match self.framing {
            EventFraming::JsonLines => 0,
            EventFraming::LengthPrefixed => {
                protobuf::announced_frame_len(&self.partial).unwrap_or(0)
            }
        };
        self.partial.len() > MAX_PARTIAL_EVENT || announced > MAX_PARTIAL_EVENT
    }

    /// The stream can end here without cutting an event: what was sent ends at an
    /// event boundary (a partial event still held is dropped, never sent).
    pub fn can_end_cleanly(&self) -> bool {
        !self.passthrough
    }

    /// Length of the prefix of `partial` made of whole events.
    fn whole_events_len(&self) -> usize {
        match self.framing {
            EventFraming::JsonLines => {
                self.partial.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
            }
            EventFraming::LengthPrefixed => {
                let mut at = 0;
                while let Some(length) = protobuf::announced_frame_len(&self.partial[at..]) {
                    let end = at + protobuf::FRAME_PREFIX + length;
                    if end > self.partial.len() {
                        break;
                    }
                    at = end;
                }
                at
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `stream` split at every position; whole events come out, in order, intact.
    fn check_every_split(framing: EventFraming, stream: &[u8], events: usize) {
        for split in 0..=stream.len() {
            let mut framer = EventFramer::new(framing);
            let mut out = framer.push(&stream[..split]);
            out.extend(framer.push(&stream[split..]));
            assert_eq!(out, stream, "split at {split}");
            assert!(framer.partial.is_empty());
        }
        let mut framer = EventFramer::new(framing);
        let mut emitted = 0;
        for byte in stream {
            if !framer.push(std::slice::from_ref(byte)).is_empty() {
                emitted += 1;
            }
        }
        assert_eq!(emitted, events);
    }

    #[test]
    fn json_lines_come_out_whole_whatever_the_split() {
        let stream = b"{\"type\":\"ADDED\",\"object\":{}}\n{\"type\":\"DELETED\",\"object\":{}}\n";
        check_every_split(EventFraming::JsonLines, stream, 2);
    }

    #[test]
    fn length_prefixed_frames_come_out_whole_whatever_the_split() {
        let mut stream = frame(b"first event");
        stream.extend(frame(b""));
        stream.extend(frame(&[0x0a; 300]));
        check_every_split(EventFraming::LengthPrefixed, &stream, 3);
    }

    #[test]
    fn a_partial_event_is_held_and_never_sent() {
        let mut framer = EventFramer::new(EventFraming::JsonLines);
        assert_eq!(
            framer.push(b"{\"type\":\"ADDED\"}\n{\"type\":\"MOD"),
            b"{\"type\":\"ADDED\"}\n"
        );
        assert!(framer.can_end_cleanly());
        assert!(framer.push(b"IFIED\"").is_empty());
    }

    #[test]
    fn an_oversized_event_passes_through_and_gives_up_the_clean_end() {
        let mut framer = EventFramer::new(EventFraming::JsonLines);
        let big = vec![b'x'; MAX_PARTIAL_EVENT + 1];
        assert_eq!(framer.push(&big).len(), big.len());
        assert!(!framer.can_end_cleanly());
        assert_eq!(framer.push(b"tail\n"), b"tail\n");
    }

    /// A frame announcing more than may be held is passed on from its first bytes: nothing
    /// of it is held (a hostile cloud's endless frame would otherwise fill 8 MiB first).
    #[test]
    fn a_frame_announced_too_large_passes_through_at_once() {
        let whole = frame(b"small");
        let mut framer = EventFramer::new(EventFraming::LengthPrefixed);
        let huge = ((MAX_PARTIAL_EVENT + 1) as u32).to_be_bytes();
        let first = [whole.as_slice(), &huge[..3]].concat();
        assert_eq!(framer.push(&first), whole, "whole frames out, three bytes announce nothing");
        assert!(framer.can_end_cleanly());
        let rest = [&huge[3..], b"payload".as_slice()].concat();
        assert_eq!(framer.push(&rest), [huge.as_slice(), b"payload"].concat());
        assert!(framer.partial.is_empty());
        assert!(!framer.can_end_cleanly());
    }

    #[test]
    fn framing_follows_the_content_type() {
        assert_eq!(EventFraming::of("application/json"), Some(EventFraming::JsonLines));
        let watch = "application/vnd.kubernetes.protobuf;stream=watch";
        assert_eq!(EventFraming::of(watch), Some(EventFraming::LengthPrefixed));
        assert_eq!(EventFraming::of("application/vnd.kubernetes.protobuf"), None);
        assert_eq!(EventFraming::of("text/plain"), None);
    }
}
