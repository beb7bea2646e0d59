//! SIP over TCP: messages out of a byte stream of which we see each segment's first
//! bytes (RFC 3261 §18.3 framing by Content-Length).
//!
//! One [`Stream`] per direction of a connection, positioned by TCP sequence number.
//! Bytes seen before (retransmission, overlap) are dropped; a jump forward (lost
//! capture, a segment longer than the capture) is a hole: the message in progress is
//! parsed for what is there and the stream resynchronises at the next start line.
//! A message is handed up as soon as its headers are complete; its body is skipped
//! without being buffered.

use super::parse::{self, Message};

/// A sequence jump larger than this either way is a new connection on the same ports
/// (its initial sequence number is random), not loss or retransmission.
const NEW_CONNECTION_JUMP: i64 = 1 << 24;
/// A body longer than this is not believed: the stream resynchronises instead of
/// skipping it (a garbled Content-Length must not blind us for megabytes).
const MAX_BODY: u64 = 1 << 20;
/// Start lines are short; an unterminated line kept while resynchronising is bounded.
const MAX_START_LINE: usize = 1024;

/// What reassembly noticed, for counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StreamStats {
    /// Segments whose every byte was seen before.
    pub retransmitted: u64,
    /// Holes: bytes never captured (lost segments, segments longer than the capture).
    pub holes: u64,
    /// Buffers dropped for exceeding the limit without completing a header section.
    pub overflows: u64,
}

#[derive(Debug)]
pub struct Stream {
    /// Sequence number of the byte after the last one accounted for.
    next_seq: u32,
    /// Bytes not yet framed; `buf[0]` is at `next_seq - buf.len()`.
    buf: Vec<u8>,
    /// `buf` starts at a message boundary (else: look for a start line).
    synced: bool,
    /// Body bytes of the last message still to skip.
    body_left: u64,
    /// Time of the last segment that added to `buf`: a message cut short by a hole is
    /// dated by it, not by the later segment that revealed the hole.
    buf_ns: u64,
    pub last_ns: u64,
}

impl Stream {
    pub fn new(seq: u32, now_ns: u64) -> Stream {
        Stream {
            next_seq: seq,
            buf: Vec::new(),
            // The first segment seen may start mid-message: find a start line first.
            synced: false,
            body_left: 0,
            buf_ns: now_ns,
            last_ns: now_ns,
        }
    }

    /// Bytes held waiting for more.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// One segment seen at `ts_ns`: sequence number `seq`, its first bytes `data`,
    /// `full_len` bytes in all. Complete (or hole-truncated) messages go to `out` with
    /// their time.
    #[allow(clippy::too_many_arguments)]
    pub fn segment(
        &mut self,
        ts_ns: u64,
        seq: u32,
        data: &[u8],
        full_len: u64,
        max_buffer: usize,
        stats: &mut StreamStats,
        out: &mut Vec<(u64, Message)>,
    ) {
        self.last_ns = ts_ns;
        let full_len = full_len.max(data.len() as u64);
        if full_len == 0 {
            return;
        }
        let mut offset = i64::from(seq.wrapping_sub(self.next_seq) as i32);
        if offset.abs() > NEW_CONNECTION_JUMP {
            self.lose_sync(out);
            self.next_seq = seq;
            offset = 0;
        }
        if offset > 0 {
            // Bytes between what we had and this segment were never seen.
            stats.holes += 1;
            self.hole(offset as u64, out);
            self.next_seq = seq;
        }
        // Bytes of this segment already accounted for (retransmission or overlap).
        let seen = offset.min(0).unsigned_abs();
        if seen >= full_len {
            stats.retransmitted += 1;
            return;
        }
        self.next_seq = seq.wrapping_add(full_len as u32);
        let captured_new = data.get(seen as usize..).unwrap_or_default();
        self.feed(ts_ns, captured_new, max_buffer, stats, out);
        let uncaptured = full_len - seen.max(data.len() as u64);
        if uncaptured > 0 {
            stats.holes += 1;
            self.hole(uncaptured, out);
        }
    }

    /// `len` bytes went by unseen.
    fn hole(&mut self, len: u64, out: &mut Vec<(u64, Message)>) {
        if self.synced && self.buf.is_empty() && self.body_left >= len {
            // Only body bytes were missed: those are skipped anyway.
            self.body_left -= len;
            return;
        }
        self.lose_sync(out);
    }

    /// Gives up the current position: the message in progress (if it began at a
    /// boundary) is handed up for what it has; then look for the next start line.
    fn lose_sync(&mut self, out: &mut Vec<(u64, Message)>) {
        if self.synced && self.body_left == 0 {
            out.extend(parse::parse(&self.buf).map(|msg| (self.buf_ns, msg)));
        }
        self.buf.clear();
        self.synced = false;
        self.body_left = 0;
    }

    fn feed(
        &mut self,
        ts_ns: u64,
        data: &[u8],
        max_buffer: usize,
        stats: &mut StreamStats,
        out: &mut Vec<(u64, Message)>,
    ) {
        let mut data = data;
        if self.body_left > 0 {
            let skip = usize::try_from(self.body_left)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.body_left -= skip as u64;
            data = data.get(skip..).unwrap_or_default();
        }
        if !data.is_empty() {
            self.buf.extend_from_slice(data);
            self.buf_ns = ts_ns;
        }
        loop {
            if self.body_left > 0 {
                let skip = usize::try_from(self.body_left)
                    .unwrap_or(usize::MAX)
                    .min(self.buf.len());
                self.buf.drain(..skip);
                self.body_left -= skip as u64;
                if self.body_left > 0 {
                    return;
                }
            }
            if self.synced {
                // CRLF keepalives (RFC 5626) and stray line ends between messages.
                let blank = self
                    .buf
                    .iter()
                    .take_while(|&&c| c == b'\r' || c == b'\n')
                    .count();
                self.buf.drain(..blank);
            } else if !self.resync() {
                return;
            }
            if self.buf.is_empty() {
                return;
            }
            let Some(header_len) = parse::header_end(&self.buf) else {
                if self.buf.len() > max_buffer {
                    stats.overflows += 1;
                    self.buf.clear();
                    self.synced = false;
                }
                return;
            };
            match parse::parse(self.buf.get(..header_len).unwrap_or_default()) {
                Some(msg) => {
                    let body = msg.content_length.unwrap_or(0);
                    self.buf.drain(..header_len);
                    if body > MAX_BODY {
                        // Look for the next start line from here. Clearing the buffer
                        // also dropped the messages after this one in the same segment,
                        // but not those in later segments (found by the sip_stream fuzz
                        // target: the messages depended on where segments were cut).
                        self.synced = false;
                    } else {
                        self.body_left = body;
                    }
                    out.push((ts_ns, msg));
                }
                // Not a message after all: look for the next start line.
                None => self.synced = false,
            }
        }
    }

    /// Drops bytes up to the next line that is a SIP start line; true when found.
    /// Candidates are the buffer's first byte (senders write a message per segment)
    /// and every byte after a line feed.
    fn resync(&mut self) -> bool {
        let mut pos = 0;
        loop {
            let rest = self.buf.get(pos..).unwrap_or_default();
            match rest.iter().position(|&c| c == b'\n') {
                Some(lf) => {
                    if parse::start_line(rest.get(..lf).unwrap_or_default()).is_some() {
                        // Whitespace before the start line is no part of the message
                        // (RFC 3261 §7.5); kept, the message's header length depended
                        // on where segments were cut (found by the sip_stream fuzz target).
                        let lead = rest.iter().take_while(|c| c.is_ascii_whitespace()).count();
                        self.buf.drain(..pos + lead);
                        self.synced = true;
                        return true;
                    }
                    pos += lf + 1;
                }
                None => {
                    // Keep an unterminated last line: it may be a start line in two parts.
                    self.buf.drain(..pos);
                    if self.buf.len() > MAX_START_LINE {
                        self.buf.clear();
                    }
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::correlate::sip::fixtures::*;
    use hbwatch_common::proto::sip::CAPTURE_LEN;

    /// Segments (seq, captured bytes, length) at 1 s, 2 s, ...: messages with their times.
    fn stream_dated(segments: &[(u32, &[u8], u64)]) -> (Vec<(u64, parse::Message)>, StreamStats) {
        let mut stream = Stream::new(segments[0].0, 0);
        let mut stats = StreamStats::default();
        let mut out = Vec::new();
        for (i, &(seq, data, full_len)) in segments.iter().enumerate() {
            let ts = (i as u64 + 1) * SEC;
            stream.segment(ts, seq, data, full_len, 16_384, &mut stats, &mut out);
        }
        (out, stats)
    }

    fn stream_messages(segments: &[(u32, &[u8], u64)]) -> (Vec<parse::Message>, StreamStats) {
        let (dated, stats) = stream_dated(segments);
        (dated.into_iter().map(|(_, m)| m).collect(), stats)
    }

    fn call_ids(msgs: &[parse::Message]) -> Vec<String> {
        msgs.iter()
            .map(|m| m.call_id.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn messages_split_anywhere_across_segments_come_out_once() {
        let mut bytes = options("first", 1);
        bytes.extend(options_answer("second", 1, "SIP/2.0 200 OK"));
        bytes.extend(b"\r\n\r\n"); // RFC 5626 keepalive between messages
        bytes.extend(cucm_register(7));
        for a in 1..bytes.len() {
            let b = (a + 37).min(bytes.len() - 1).max(a);
            let segs = [
                (1000u32, &bytes[..a], a as u64),
                (1000 + a as u32, &bytes[a..b], (b - a) as u64),
                (1000 + b as u32, &bytes[b..], (bytes.len() - b) as u64),
            ];
            let (msgs, stats) = stream_messages(&segs);
            assert_eq!(
                call_ids(&msgs),
                ["first", "second", CALL_ID],
                "split at {a}/{b}"
            );
            assert!(msgs.iter().all(|m| !m.is_truncated()));
            assert_eq!(stats, StreamStats::default());
        }
    }

    #[test]
    fn retransmitted_and_overlapping_segments_are_not_counted_twice() {
        let mut bytes = options("one", 1);
        bytes.extend(options("two", 2));
        let n = bytes.len();
        let segs = [
            (5000u32, &bytes[..300], 300u64),
            (5000, &bytes[..300], 300), // retransmission
            (5200, &bytes[200..n - 10], (n - 210) as u64), // overlaps 100 bytes
            (5000 + n as u32 - 10, &bytes[n - 10..], 10),
            (5000 + n as u32 - 10, &bytes[n - 10..], 10), // retransmission of the tail
        ];
        let (msgs, stats) = stream_messages(&segs);
        assert_eq!(call_ids(&msgs), ["one", "two"]);
        assert_eq!(stats.retransmitted, 2);
        assert_eq!(stats.holes, 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let bytes = options("wrap", 1);
        let start = u32::MAX - 20;
        let segs = [
            (start, &bytes[..50], 50u64),
            (
                start.wrapping_add(50),
                &bytes[50..],
                (bytes.len() - 50) as u64,
            ),
        ];
        let (msgs, stats) = stream_messages(&segs);
        assert_eq!(call_ids(&msgs), ["wrap"]);
        assert_eq!(stats, StreamStats::default());
    }

    #[test]
    fn bodies_are_skipped_even_when_they_look_like_messages() {
        let body = b"SIP/2.0 200 OK\r\nCall-ID: fake\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let mut bytes = format!(
        "SIP/2.0 200 OK\r\nCall-ID: real\r\nCSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\nl: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
        bytes.extend_from_slice(body);
        bytes.extend(options("after", 2));
        // Split inside the body, too.
        let cut = bytes.len() - options("after", 2).len() - 10;
        let segs = [
            (1u32, &bytes[..cut], cut as u64),
            (1 + cut as u32, &bytes[cut..], (bytes.len() - cut) as u64),
        ];
        let (msgs, _) = stream_messages(&segs);
        assert_eq!(call_ids(&msgs), ["real", "after"]);
    }

    #[test]
    fn a_hole_in_the_capture_resyncs_at_the_next_start_line() {
        let first = cucm_register(1);
        let second = options("second", 2);
        let mut bytes = first.clone();
        bytes.extend(&second);
        // Segments: [0,300) seen, [300,600) lost, [600..] seen (rest of first + second).
        let segs = [
            (100u32, &bytes[..300], 300u64),
            (700, &bytes[600..], (bytes.len() - 600) as u64),
        ];
        let (dated, stats) = stream_dated(&segs);
        assert_eq!(stats.holes, 1);
        let msgs: Vec<_> = dated.iter().map(|(_, m)| m.clone()).collect();
        assert_eq!(call_ids(&msgs), [CALL_ID, "second"]);
        assert!(
            msgs[0].is_truncated(),
            "the first is parsed for what was seen"
        );
        assert!(!msgs[1].is_truncated());
        // Dated by its own segment, not by the one that revealed the hole.
        assert_eq!(dated[0].0, SEC);
        assert_eq!(dated[1].0, 2 * SEC);
    }

    #[test]
    fn a_segment_longer_than_the_capture_is_parsed_for_its_first_bytes() {
        // 1300 bytes of REGISTER in one segment: the datapath hands up 1024 of them.
        let padding = format!("X-Padding: {}", "p".repeat(500));
        let mut big = cucm_register(9);
        big.truncate(big.len() - 2);
        big.extend(format!("{padding}\r\n\r\n").into_bytes());
        assert!(big.len() > CAPTURE_LEN);
        let next = options("next", 3);
        let segs = [
            (1u32, &big[..CAPTURE_LEN], big.len() as u64),
            (1 + big.len() as u32, &next[..], next.len() as u64),
        ];
        let (msgs, stats) = stream_messages(&segs);
        assert_eq!(call_ids(&msgs), [CALL_ID, "next"]);
        assert_eq!(msgs[0].cseq.map(|c| c.number), Some(9));
        assert_eq!(stats.holes, 1);
    }

    #[test]
    fn a_hole_inside_a_body_keeps_the_stream_in_step() {
        let body = vec![b'v'; 2000];
        let mut bytes = format!(
            "SIP/2.0 200 OK\r\nCall-ID: sdp\r\nCSeq: 1 OPTIONS\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        let header = bytes.len();
        bytes.extend(&body);
        let next = options("next", 2);
        bytes.extend(&next);
        let first_len = header + 1500;
        let segs = [
            // Headers and 1500 body bytes, of which only 1024 are captured.
            (1u32, &bytes[..CAPTURE_LEN], first_len as u64),
            (
                1 + first_len as u32,
                &bytes[first_len..],
                (bytes.len() - first_len) as u64,
            ),
        ];
        let (msgs, _) = stream_messages(&segs);
        assert_eq!(call_ids(&msgs), ["sdp", "next"]);
    }

    #[test]
    fn garbage_is_bounded_and_the_stream_recovers() {
        let garbage = vec![b'x'; 20_000];
        let good = options("good", 1);
        let mut stream = Stream::new(0, 0);
        let mut stats = StreamStats::default();
        let mut out = Vec::new();
        let mut seq = 0u32;
        for chunk in garbage.chunks(1000) {
            stream.segment(
                0,
                seq,
                chunk,
                chunk.len() as u64,
                16_384,
                &mut stats,
                &mut out,
            );
            seq += chunk.len() as u32;
            assert!(stream.buffered() <= 16_384);
        }
        // An endless header section is dropped at the limit, too.
        let mut endless = b"SIP/2.0 200 OK\r\n".to_vec();
        endless.extend(b"X-Long: y\r\n".repeat(2000));
        for chunk in endless.chunks(1000) {
            stream.segment(
                0,
                seq,
                chunk,
                chunk.len() as u64,
                16_384,
                &mut stats,
                &mut out,
            );
            seq += chunk.len() as u32;
            assert!(stream.buffered() <= 16_384 + 1000);
        }
        assert!(stats.overflows >= 1);
        stream.segment(
            0,
            seq,
            &good,
            good.len() as u64,
            16_384,
            &mut stats,
            &mut out,
        );
        let msgs: Vec<_> = out.into_iter().map(|(_, m)| m).collect();
        assert_eq!(call_ids(&msgs), ["good"]);
    }

    #[test]
    fn whitespace_before_a_start_line_found_by_resync_is_not_the_message() {
        // Garbage, then a start line after a stray CR: the same message (header length
        // included) whether its end arrives in the same segment or the next.
        let mut bytes = b"S+P/2.0 junk\r\n\r".to_vec();
        bytes.extend(options("lead", 1));
        let whole = [(1u32, &bytes[..], bytes.len() as u64)];
        let cut = bytes.len() - 5;
        let split = [
            (1u32, &bytes[..cut], cut as u64),
            (1 + cut as u32, &bytes[cut..], (bytes.len() - cut) as u64),
        ];
        let (a, _) = stream_messages(&whole);
        let (b, _) = stream_messages(&split);
        assert_eq!(call_ids(&a), ["lead"]);
        assert_eq!(a, b);
        assert_eq!(a[0].header_len, Some(options("lead", 1).len()));
    }

    #[test]
    fn an_unbelievable_content_length_resyncs_without_dropping_what_follows() {
        let mut bytes = options("huge", 1);
        let at = bytes.len() - 4;
        bytes.splice(at - 1..at, b"555898070".iter().copied()); // Content-Length: 555898070
        bytes.extend(b"garbage that is no body\r\n");
        bytes.extend(options("after", 2));
        let whole = [(1u32, &bytes[..], bytes.len() as u64)];
        let cut = bytes.len() - 30;
        let split = [
            (1u32, &bytes[..cut], cut as u64),
            (1 + cut as u32, &bytes[cut..], (bytes.len() - cut) as u64),
        ];
        let (a, _) = stream_messages(&whole);
        let (b, _) = stream_messages(&split);
        assert_eq!(a[0].content_length, Some(555_898_070));
        assert_eq!(call_ids(&a), ["huge", "after"]);
        assert_eq!(a, b);
    }

    #[test]
    fn a_new_connection_on_the_same_ports_starts_afresh() {
        let a = options("a", 1);
        let b = options("b", 2);
        let segs = [
            // The end of `a` never comes: the connection died.
            (1000u32, &a[..a.len() - 20], (a.len() - 20) as u64),
            (1000 + (1u32 << 31), &b[..], b.len() as u64),
        ];
        let (msgs, _) = stream_messages(&segs);
        assert_eq!(call_ids(&msgs), ["a", "b"]);
        assert!(msgs[0].is_truncated());
    }
}
