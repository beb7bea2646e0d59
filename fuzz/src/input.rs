//! Input formats: how a target cuts libFuzzer's bytes into what it feeds the code, and
//! the encoders the seed generator uses to write valid traffic in the same format.
//! Formats are small fixed headers followed by raw bytes, so mutations of the raw part
//! stay meaningful and a short or odd input is simply a short or odd packet.

/// Decoder input: `[flags u8][payload_off u16 LE][payload_len u16 LE]` then the frame.
/// The decoders only read `payload_off`, `payload_len` and `transport` of the parsed
/// packet, so the header lets the fuzzer state any of them, lies included.
pub struct Decoder<'a> {
    /// Bit 0: the other transport than the protocol's (TCP for a UDP protocol).
    pub flags: u8,
    pub payload_off: u16,
    pub payload_len: u16,
    pub frame: &'a [u8],
}

pub const DECODER_HEADER: usize = 5;

pub fn decoder(data: &[u8]) -> Option<Decoder<'_>> {
    let (h, frame) = data.split_at_checked(DECODER_HEADER)?;
    Some(Decoder {
        flags: h[0],
        payload_off: u16::from_le_bytes([h[1], h[2]]),
        payload_len: u16::from_le_bytes([h[3], h[4]]),
        frame,
    })
}

pub fn encode_decoder(payload_off: u16, payload_len: u16, frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(&payload_off.to_le_bytes());
    v.extend_from_slice(&payload_len.to_le_bytes());
    v.extend_from_slice(frame);
    v
}

/// A sequence of frames: records `[dt u8][len u16 LE][len bytes]`. `dt` advances the
/// clock by `dt` × 10 ms before the frame (0..2.55 s: every protocol's interval scale).
/// A record cut short by the end of the input is a shorter frame.
pub struct Frames<'a> {
    data: &'a [u8],
}

pub const FRAME_TICK_NS: u64 = 10_000_000;

pub fn frames(data: &[u8]) -> Frames<'_> {
    Frames { data }
}

impl<'a> Iterator for Frames<'a> {
    /// (clock advance in ns, frame)
    type Item = (u64, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (h, rest) = self.data.split_at_checked(3)?;
        let len = u16::from_le_bytes([h[1], h[2]]) as usize;
        let (frame, rest) = rest.split_at(len.min(rest.len()));
        self.data = rest;
        Some((h[0] as u64 * FRAME_TICK_NS, frame))
    }
}

/// Encodes frames with their times (ns); gaps longer than the format allows are cut
/// to 2.55 s, which is harmless for seeds.
pub fn encode_frames<'a>(frames: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut v = Vec::new();
    let mut last: Option<u64> = None;
    for (ts, f) in frames {
        let dt = last
            .map_or(0, |l| ts.saturating_sub(l) / FRAME_TICK_NS)
            .min(255);
        last = Some(ts);
        let f = &f[..f.len().min(u16::MAX as usize)];
        v.push(dt as u8);
        v.extend_from_slice(&(f.len() as u16).to_le_bytes());
        v.extend_from_slice(f);
    }
    v
}

/// How a TCP segment of a SIP stream relates to the bytes before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegKind {
    /// Next in sequence, fully captured.
    InOrder,
    /// The previous segment's bytes again (same sequence number).
    Retransmit,
    /// A hole of `n` × 97 bytes before this segment.
    Hole(u32),
    /// Only the first bytes captured: the segment is `n` × 8 bytes longer than seen.
    Clipped(u32),
}

/// Segments of one direction of a SIP/TCP connection: records `[kind u8][len u16 LE][bytes]`.
/// `kind & 3` picks the [`SegKind`], `kind >> 2` its size.
pub struct Segments<'a> {
    data: &'a [u8],
}

pub fn segments(data: &[u8]) -> Segments<'_> {
    Segments { data }
}

impl<'a> Iterator for Segments<'a> {
    type Item = (SegKind, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (h, rest) = self.data.split_at_checked(3)?;
        let len = u16::from_le_bytes([h[1], h[2]]) as usize;
        let (bytes, rest) = rest.split_at(len.min(rest.len()));
        self.data = rest;
        let n = (h[0] >> 2) as u32;
        let kind = match h[0] & 3 {
            0 => SegKind::InOrder,
            1 => SegKind::Retransmit,
            2 => SegKind::Hole(n + 1),
            _ => SegKind::Clipped(n + 1),
        };
        Some((kind, bytes))
    }
}

/// Encodes in-order, fully captured segments.
pub fn encode_segments<'a>(segs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = Vec::new();
    for s in segs {
        let s = &s[..s.len().min(u16::MAX as usize)];
        v.push(0);
        v.extend_from_slice(&(s.len() as u16).to_le_bytes());
        v.extend_from_slice(s);
    }
    v
}
