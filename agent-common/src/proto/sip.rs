//! SIP on 5060 (UDP and TCP), PROTOCOLS.md §5. The datapath recognises REGISTER and
//! OPTIONS requests and responses by their start line and hands the first
//! [`CAPTURE_LEN`] bytes to userspace, where the text is parsed. Over TCP every
//! segment with data goes up (with its sequence number): messages share segments
//! and split across them, and userspace reassembles the stream.

use crate::event::RawEvent;
use crate::frame::Frame;
use crate::parse::Packet;

/// Bytes of each SIP message passed to userspace (Cisco REGISTERs run 600-1000 bytes).
pub const CAPTURE_LEN: usize = 1024;

/// What the start line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine {
    Register,
    Options,
    /// `SIP/2.0 NNN`: userspace pairs it with its request by CSeq.
    Response,
}

/// Recognises the start line from the payload's first 8 bytes.
#[inline(always)]
pub fn start_line<F: Frame>(f: &F, pkt: &Packet) -> Option<StartLine> {
    if pkt.payload_len < 12 {
        return None;
    }
    let b = f.bytes::<8>(pkt.payload_off as usize)?;
    match &b {
        b"REGISTER" => Some(StartLine::Register),
        b"OPTIONS " => Some(StartLine::Options),
        b"SIP/2.0 " => Some(StartLine::Response),
        _ => None,
    }
}

/// A SIP message as passed to userspace: the usual record header (kind `SipMessage`,
/// `value` = payload length, `aux` = bytes captured, `seq` = TCP sequence or 0, the key
/// oriented as the packet travelled) followed by the payload's first bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SipRecord {
    pub hdr: RawEvent,
    pub data: [u8; CAPTURE_LEN],
}

/// Copies the payload at `off` (up to `CAPTURE_LEN` bytes) into `out`; returns how
/// many bytes. Reads are 8-byte chunks; a tail shorter than 8 bytes is read as the
/// last 8 bytes of the payload, overlapping the previous chunk, so nothing is lost
/// as long as the payload has 8 bytes. Bounded: at most CAPTURE_LEN / 8 + 1 reads.
#[inline(always)]
pub fn copy_payload<F: Frame>(f: &F, off: usize, len: usize, out: &mut [u8; CAPTURE_LEN]) -> usize {
    let mut i = 0usize;
    while i < CAPTURE_LEN && i + 8 <= len {
        let Some(chunk) = f.bytes::<8>(off + i) else {
            return i;
        };
        if let Some(dst) = out.get_mut(i..i + 8) {
            dst.copy_from_slice(&chunk);
        }
        i += 8;
    }
    if i < len && len >= 8 {
        // The bound on `last` itself (not on `len`) is what the verifier tracks.
        let last = len - 8;
        if last > CAPTURE_LEN - 8 {
            return i;
        }
        let Some(chunk) = f.bytes::<8>(off + last) else {
            return i;
        };
        if let Some(dst) = out.get_mut(last..last + 8) {
            dst.copy_from_slice(&chunk);
            i = len;
        }
    }
    i
}

/// How many bytes [`copy_payload`] takes of a payload of `len` bytes.
#[inline(always)]
pub const fn captured_len(len: usize) -> usize {
    if len > CAPTURE_LEN {
        CAPTURE_LEN
    } else if len >= 8 {
        len
    } else {
        0
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SipRecord {}
