//! MGCP gateway keepalives, Cisco voice gateway <-> CUCM (UDP 2427/2727), PROTOCOLS.md §7.
//!
//! Text, one command or response per datagram (RFC 3435 §3.2): a command line
//! `VERB SP transaction-id SP endpoint SP "MGCP" SP version`, a response line
//! `code SP transaction-id [SP commentary]`, transaction ids 1-999999999 in decimal.
//! The gateway's commands to its call agent are its liveness: the empty `NTFY` it sends
//! every 15 s when idle, the `NTFY`s of its endpoints' events, and `RSIP` when it
//! restarts, reconnects or leaves. Each is answered with the same transaction id. The
//! call agent's commands (RQNT, CRCX, AUEP audits...) follow calls and registrations,
//! not a clock, so they are not heartbeats.

use super::{Heartbeat, Msg, Role, HB_RESTART, HB_RESTART_HOW, HB_RESTART_HOW_SHIFT};
use crate::frame::Frame;
use crate::parse::{Packet, IPPROTO_UDP};

/// The command line's start: verb and a space.
const NTFY: [u8; 5] = *b"NTFY ";
const RSIP: [u8; 5] = *b"RSIP ";
/// At most nine digits (RFC 3435: 1 to 999,999,999).
const MAX_TID_DIGITS: usize = 9;
/// Bytes searched for the end of an RSIP's command line (with a long endpoint name,
/// `*@gateway.example.com`, it runs about 60).
const RM_SEARCH: usize = 128;

/// An RSIP's restart method (the `RM:` line; RFC 3435 §2.3.12: `restart` when absent).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartMethod {
    Restart = 1,
    Disconnected = 2,
    Graceful = 3,
    Forced = 4,
    CancelGraceful = 5,
}

impl RestartMethod {
    /// From the code in `Heartbeat::flags` (and in a `Restart` finding's `value`).
    pub const fn from_code(code: u8) -> RestartMethod {
        match code {
            2 => RestartMethod::Disconnected,
            3 => RestartMethod::Graceful,
            4 => RestartMethod::Forced,
            5 => RestartMethod::CancelGraceful,
            _ => RestartMethod::Restart,
        }
    }

    /// An RSIP heartbeat's method, from its `Heartbeat::flags`.
    pub const fn from_flags(flags: u8) -> Option<RestartMethod> {
        if flags & HB_RESTART == 0 {
            return None;
        }
        Some(RestartMethod::from_code(
            (flags & HB_RESTART_HOW) >> HB_RESTART_HOW_SHIFT,
        ))
    }

    /// As the `RM:` line spells it.
    pub const fn name(self) -> &'static str {
        match self {
            RestartMethod::Restart => "restart",
            RestartMethod::Disconnected => "disconnected",
            RestartMethod::Graceful => "graceful",
            RestartMethod::Forced => "forced",
            RestartMethod::CancelGraceful => "cancel-graceful",
        }
    }
}

/// A keepalive-bearing command (NTFY, RSIP) or a final response, keyed by its
/// transaction id. Provisional responses (1xx) and response acknowledgements (000)
/// are not answers: the final response follows.
#[inline(always)]
pub fn decode<F: Frame>(f: &F, pkt: &Packet) -> Option<Msg> {
    if pkt.transport != IPPROTO_UDP || pkt.payload_len < 6 {
        return None;
    }
    let base = pkt.payload_off as usize;
    let len = pkt.payload_len as usize;
    let head = f.bytes::<5>(base)?;
    let (role, rsip) = if head == NTFY {
        (Role::Request, false)
    } else if head == RSIP {
        (Role::Request, true)
    } else if head[0].is_ascii_digit()
        && head[1].is_ascii_digit()
        && head[2].is_ascii_digit()
        && head[3] == b' '
    {
        if head[0] == b'0' || head[0] == b'1' {
            return None;
        }
        (Role::Response, false)
    } else {
        return None;
    };
    let start = if role == Role::Response { 4 } else { 5 };
    let (tid, end) = transaction_id(f, base, len, start)?;
    // Past the datagram (Ethernet padding follows short ones): its end.
    let after = byte(f, base, len, start + end);
    const SP: u16 = b' ' as u16;
    const CR: u16 = b'\r' as u16;
    const LF: u16 = b'\n' as u16;
    match role {
        // A command: the endpoint follows after one space.
        Role::Request if after != SP => return None,
        // A response: a space, the line's end or the datagram's.
        Role::Response if !matches!(after, END | SP | CR | LF) => return None,
        _ => {}
    }
    let mut hb = Heartbeat::new(role, tid);
    if rsip {
        let method = restart_method(f, base, len);
        if method == METHOD_CUT {
            return None;
        }
        hb.flags |= HB_RESTART | (method << HB_RESTART_HOW_SHIFT);
    }
    Some(Msg::heartbeat(hb))
}

/// [`byte`] past the payload's end (NUL ends MGCP text too).
const END: u16 = 0;
/// [`byte`] inside the payload, but past the frame (a capture cut short): unknown, so
/// nothing is decoded from a guess.
const CUT: u16 = 0x100;

/// Byte `i` of the payload at `base` (`len` bytes), [`END`] or [`CUT`]. Read as one of
/// two inside the payload: a one-byte bounds check compiles to a `>=` compare against
/// the packet end, which the verifier does not take as a bound; and a plain integer,
/// not an `Option`, whose unset payload LLVM leaves in a register the verifier then
/// refuses to read.
#[inline(always)]
fn byte<F: Frame>(f: &F, base: usize, len: usize, i: usize) -> u16 {
    let pair = if i + 2 <= len {
        f.bytes::<2>(base + i)
    } else if i >= 1 && i < len {
        f.bytes::<2>(base + i - 1).map(|b| [b[1], 0])
    } else {
        return END;
    };
    match pair {
        Some(b) => b[0] as u16,
        None => CUT,
    }
}

/// The decimal transaction id at payload offset `at` (1-9 digits, not 0) and how many
/// digits it took.
#[inline(always)]
fn transaction_id<F: Frame>(f: &F, base: usize, len: usize, at: usize) -> Option<(u32, usize)> {
    let mut tid: u32 = 0;
    let mut i = 0;
    while i < MAX_TID_DIGITS {
        let d = byte(f, base, len, at + i);
        if d == CUT {
            return None;
        }
        if !(b'0' as u16..=b'9' as u16).contains(&d) {
            break;
        }
        tid = tid * 10 + (d - b'0' as u16) as u32;
        i += 1;
    }
    (i > 0 && tid != 0).then_some((tid, i))
}

/// [`restart_method`] could not read the bytes it needed (a capture cut short).
const METHOD_CUT: u8 = 0xff;

/// The RSIP's `RM:` method code (1 = restart, the default when the line is absent),
/// from the line after the command line. Found in 8-byte chunks with one branch each:
/// a branch per byte made the verifier walk 80,000 more instructions (over 60 % more
/// for the whole TC program), too slow to load on 5.10 under emulation.
#[inline(always)]
fn restart_method<F: Frame>(f: &F, base: usize, len: usize) -> u8 {
    let mut line = 0usize;
    let mut i = 0usize;
    while i < RM_SEARCH && i + 8 <= len {
        let Some(c) = f.bytes::<8>(base + i) else {
            return METHOD_CUT;
        };
        // Whether the chunk holds a line feed, without a branch per byte: a zero byte of
        // `v ^ 0x0a0a..` (the classic has-zero-byte test, exact about whether).
        let x = u64::from_le_bytes(c) ^ 0x0a0a_0a0a_0a0a_0a0a;
        if x.wrapping_sub(0x0101_0101_0101_0101) & !x & 0x8080_8080_8080_8080 != 0 {
            // Once: which byte.
            let mut k = 0usize;
            while k < 7 && c[k] != b'\n' {
                k += 1;
            }
            line = i + k + 1;
            break;
        }
        i += 8;
    }
    if line == 0 || line + 6 > len {
        return RestartMethod::Restart as u8;
    }
    let Some(l) = f.bytes::<6>(base + line) else {
        return METHOD_CUT;
    };
    if !(l[0] | 0x20 == b'r' && l[1] | 0x20 == b'm' && l[2] == b':') {
        return RestartMethod::Restart as u8;
    }
    // One optional space; the method's first letter tells them apart.
    let first = if l[3] == b' ' { l[4] } else { l[3] };
    match first | 0x20 {
        b'd' => RestartMethod::Disconnected as u8,
        b'g' => RestartMethod::Graceful as u8,
        b'f' => RestartMethod::Forced as u8,
        b'c' => RestartMethod::CancelGraceful as u8,
        _ => RestartMethod::Restart as u8,
    }
}
