//! The kernel side of hbwatch: thin glue between XDP and `hbwatch_common::engine`.
//! Maps live here; the per-packet logic does not.
#![no_std]
#![no_main]
// BPF inline asm (XdpFrame) is unstable; the crate is built with nightly for bpf only.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

use aya_ebpf::{
    bindings::{__sk_buff, xdp_action, xdp_md, BPF_F_MMAPABLE, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::{TcContext, XdpContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use hbwatch_common::{
    counters::{Counter, COUNTER_COUNT},
    engine::{process_with_clock, Env, Scratch},
    event::{HeldBatch, RawEvent},
    flow::FlowState,
    frag::{FragInfo, FragKey},
    frame::Frame,
    key::{self, AckBucket, FlowKey},
    params::ProtoParams,
    proto::{
        sip::{copy_payload, SipRecord},
        Protocol, PORT_SLOTS, PROTOCOL_COUNT,
    },
};

/// (transport, port) -> protocol id, filled by userspace.
#[map]
static PORTS: Array<u8> = Array::with_max_entries(PORT_SLOTS, 0);

/// Per-protocol tuning, filled by userspace.
#[map]
static PARAMS: Array<ProtoParams> = Array::with_max_entries(PROTOCOL_COUNT, 0);

/// Association state; LRU so a flood of new flows evicts the stalest, never fails.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(65536, 0);

/// How far userspace has taken each association's held beats (`FlowState::held`), in
/// the bucket of its key's hash (`key::AckBucket`): written by userspace through shared
/// memory (no system call), read here only when a hold is full. Sized by userspace (a
/// power of two, twice FLOWS's entries), which says the size in [`ACK_BUCKETS`].
#[map]
static ACKS: Array<AckBucket> = Array::with_max_entries(1 << 17, BPF_F_MMAPABLE);

/// Entries of [`ACKS`] (a power of two); set by userspace before loading.
#[unsafe(no_mangle)]
static ACK_BUCKETS: u32 = 1 << 17;

/// First fragments of SIP datagrams, so their later fragments (which have no ports)
/// go up too. LRU: fragments of one datagram arrive within microseconds.
#[map]
static FRAGS: LruHashMap<FragKey, FragInfo> = LruHashMap::with_max_entries(4096, 0);

/// Findings for userspace (4 MiB: ~58k records of slack).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Records are submitted without waking the reader: it drains the ring every 10 ms
/// anyway (live::TIMER_TICK). A wake-up per record (the default once the reader has
/// caught up) cost it a context switch per heartbeat, more CPU than the datapath itself;
/// forcing wake-ups past a fill level cost an interrupt per record while the reader lagged
/// (cargo xtask bench). A reader slower than the producer loses records either way.
const SUBMIT_FLAGS: u64 = BPF_RB_NO_WAKEUP as u64;

/// Where a new association's state is built before insertion (per CPU, one slot).
#[map]
static SCRATCH: PerCpuArray<FlowState> = PerCpuArray::with_max_entries(1, 0);

/// Where each packet's parse and decoded message live (per CPU, one slot): off the
/// stack, so the verifier does not tell packets apart by them (engine::Scratch).
#[map]
static PACKET: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// The TC program's two readers (`TC_LINEAR`, `TC_PAGED`), filled by userspace before it
/// attaches: each is verified on its own, so the verifier's work for an skb is one
/// engine's, not two (6.1 walked 275k instructions for both in one program).
#[map]
static TC_READERS: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// Slots of [`TC_READERS`]; userspace fills them by program name (datapath.rs).
const TC_LINEAR: u32 = 0;
const TC_PAGED: u32 = 1;

const MAX_DIRECT_OFFSET: usize = 0x3fff;

/// Packet bytes between the context's `data` and `data_end` pointers.
struct XdpFrame {
    ctx: *mut xdp_md,
}

impl Frame for XdpFrame {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // Fresh (volatile) loads of data/data_end at every read: otherwise LLVM hoists
        // `data_end - N` out of loops, and the verifier forbids arithmetic on pkt_end.
        // SAFETY: ctx is the program's xdp_md for the whole run.
        let (start, end) = unsafe {
            (
                core::ptr::read_volatile(&(*self.ctx).data) as usize,
                core::ptr::read_volatile(&(*self.ctx).data_end) as usize,
            )
        };
        direct(start, end, offset)
    }
}

/// N bytes at `offset` of the packet data `start..end` (direct packet access), or None
/// past `end` or past 16 KiB.
#[inline(always)]
fn direct<const N: usize>(start: usize, end: usize, offset: usize) -> Option<[u8; N]> {
    // The verifier tracks packet ranges only for variable offsets it can bound below
    // 64 KiB; XDP frames are at most a page, and an skb's headers are near its start.
    if offset > MAX_DIRECT_OFFSET {
        return None;
    }
    // Kernels before ~6.8 do not carry a bounds check over to a copy of the register
    // spilled before it, and LLVM may add that stale copy to `data` (5.10/6.1: "invalid
    // access to packet"). A mask on the value actually used bounds every copy; `opaque`
    // keeps LLVM from dropping the mask as redundant after the check above.
    let offset = opaque(offset) & MAX_DIRECT_OFFSET;
    // The verifier needs this exact compare of packet pointer against data_end.
    if start + offset + N > end {
        return None;
    }
    // SAFETY: bounds checked above: N bytes at start + offset are packet data.
    Some(unsafe { load((start + offset) as *const u8) })
}

/// `v`, but LLVM cannot see through it: a move of the register onto itself.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn opaque(mut v: usize) -> usize {
    // SAFETY: a register move onto itself; it only claims to change the register.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v, options(pure, nomem, nostack)) };
    v
}

/// Off BPF (host builds of this crate, e.g. clippy): the same through a stack slot.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
fn opaque(v: usize) -> usize {
    core::hint::black_box(v)
}

/// Reads N packet bytes at `at`. LLVM's BPF backend reads an unaligned [u8; N] byte by
/// byte and reassembles it with shifts; BPF's own loads need no alignment on packet
/// data (the verifier asks for it only on machines without efficient unaligned access),
/// so 2-, 4- and 8-byte reads are one load each, by asm that LLVM cannot split.
///
/// # Safety
/// `at..at + N` must be readable (checked against `data_end`).
#[cfg(target_arch = "bpf")]
#[inline(always)]
unsafe fn load<const N: usize>(at: *const u8) -> [u8; N] {
    let mut out = [0u8; N];
    let v: u64;
    // SAFETY: the caller's bounds; each arm reads exactly N bytes, `out` holds N.
    unsafe {
        match N {
            2 => {
                core::arch::asm!("{0} = *(u16 *)({1} + 0)", out(reg) v, in(reg) at, options(pure, readonly, nostack));
                core::ptr::write_unaligned(out.as_mut_ptr().cast(), v as u16);
            }
            4 => {
                core::arch::asm!("{0} = *(u32 *)({1} + 0)", out(reg) v, in(reg) at, options(pure, readonly, nostack));
                core::ptr::write_unaligned(out.as_mut_ptr().cast(), v as u32);
            }
            8 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 0)", out(reg) v, in(reg) at, options(pure, readonly, nostack));
                core::ptr::write_unaligned(out.as_mut_ptr().cast(), v);
            }
            // [u8; N] has alignment 1.
            _ => out = core::ptr::read_unaligned(at.cast()),
        }
    }
    out
}

/// Off BPF: a plain unaligned read.
///
/// # Safety
/// `at..at + N` must be readable.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
unsafe fn load<const N: usize>(at: *const u8) -> [u8; N] {
    // SAFETY: the caller's bounds; [u8; N] has alignment 1.
    unsafe { core::ptr::read_unaligned(at.cast()) }
}

/// An skb at TC ingress or egress, read with bpf_skb_load_bytes: works on non-linear
/// skbs (paged data of a large segment) without pulling them.
struct SkbFrame<'a> {
    ctx: &'a TcContext,
}

impl Frame for SkbFrame<'_> {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.ctx.load::<[u8; N]>(offset).ok()
    }
}

/// A linear skb (all its bytes between `data` and `data_end`), read directly as XDP
/// reads its frame: no helper call per read.
struct LinearSkbFrame {
    skb: *mut __sk_buff,
}

impl Frame for LinearSkbFrame {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // SAFETY: skb is the program's __sk_buff for the whole run; volatile for the
        // same reasons as in XdpFrame.
        let (start, end) = unsafe {
            (
                core::ptr::read_volatile(&(*self.skb).data) as usize,
                core::ptr::read_volatile(&(*self.skb).data_end) as usize,
            )
        };
        direct(start, end, offset)
    }
}

struct KernelEnv<'a, C: EbpfContext> {
    ctx: &'a C,
}

impl<C: EbpfContext> Env for KernelEnv<'_, C> {
    #[inline(always)]
    fn port_proto(&self, slot: u32) -> u8 {
        PORTS.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn params(&self, proto: Protocol) -> ProtoParams {
        match PARAMS.get(proto as u32) {
            Some(p) => *p,
            None => Protocol::None.default_params(),
        }
    }

    #[inline(always)]
    fn with_flow<R, U: FnOnce(&mut FlowState) -> R>(&mut self, key: &FlowKey, f: U) -> Option<R> {
        let ptr = FLOWS.get_ptr_mut(key)?;
        // SAFETY: the map value stays valid for this program run; updated in place.
        Some(f(unsafe { &mut *ptr }))
    }

    #[inline(always)]
    fn insert_flow<U: FnOnce(&mut FlowState)>(&mut self, key: &FlowKey, init: U) -> bool {
        let Some(slot) = SCRATCH.get_ptr_mut(0) else {
            return false;
        };
        // SAFETY: this CPU's scratch slot; nothing else runs on it during this program.
        let state = unsafe { &mut *slot };
        init(state);
        if FLOWS.insert(key, &*state, 0).is_ok() {
            return true;
        }
        warn!(self.ctx, "hbwatch: flow table insert failed");
        false
    }

    #[inline(always)]
    fn remove_flow(&mut self, key: &FlowKey) {
        let _ = FLOWS.remove(key);
    }

    #[inline(always)]
    fn emit<U: FnOnce(&mut RawEvent)>(&mut self, fill: U) -> bool {
        let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
            return false;
        };
        // SAFETY: reserved ring-buffer memory of RawEvent size; `fill` writes every field.
        fill(unsafe { &mut *entry.as_mut_ptr() });
        entry.submit(SUBMIT_FLAGS);
        true
    }

    #[inline(always)]
    fn emit_held<U: FnOnce(&mut RawEvent)>(&mut self, key: &FlowKey, fill: U) -> bool {
        let Some(st) = FLOWS.get_ptr_mut(key) else {
            return false;
        };
        // SAFETY: the association's map value, valid for this program run.
        let st = unsafe { &mut *st };
        fill(&mut st.held.hdr);
        // One helper copy from the map value (the verifier checks a call, not 264 bytes).
        EVENTS
            .output::<HeldBatch>(st.take_held(), SUBMIT_FLAGS)
            .is_ok()
    }

    #[inline(always)]
    fn held_ack(&mut self, key: &FlowKey) -> Option<u16> {
        let hash = key.ack_hash();
        // SAFETY: a constant of this object, set by the loader.
        let buckets = unsafe { core::ptr::read_volatile(&ACK_BUCKETS) };
        key::bucket_acked(ACKS.get(hash as u32 & buckets.wrapping_sub(1))?, hash)
    }

    #[inline(always)]
    fn emit_payload<F: Frame, U: FnOnce(&mut RawEvent)>(
        &mut self,
        fill: U,
        f: &F,
        off: usize,
        len: usize,
    ) -> bool {
        let Some(mut entry) = EVENTS.reserve::<SipRecord>(0) else {
            return false;
        };
        let rec = entry.as_mut_ptr();
        // SAFETY: reserved ring-buffer memory of SipRecord size.
        unsafe {
            fill(&mut (*rec).hdr);
            // Reserved ring memory is not zeroed: bytes past what was copied are an
            // older record's, so `aux` says how many are this payload's.
            let n = copy_payload(f, off, len, &mut (*rec).data);
            (*rec).hdr.aux = n as u32;
        }
        entry.submit(SUBMIT_FLAGS);
        true
    }

    #[inline(always)]
    fn frag_get(&mut self, key: &FragKey) -> Option<FragInfo> {
        // SAFETY: a copy out of the map value, valid during this program run.
        unsafe { FRAGS.get(key).copied() }
    }

    #[inline(always)]
    fn frag_put(&mut self, key: &FragKey, info: &FragInfo) {
        let _ = FRAGS.insert(key, info, 0);
    }

    #[inline(always)]
    fn count(&mut self, c: Counter) {
        if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *slot += 1 };
        }
    }
}

/// This CPU's [`PACKET`] slot, taken by the engine once a packet is on a heartbeat port.
#[inline(always)]
fn scratch<'a>() -> Option<&'a mut Scratch> {
    // SAFETY: this CPU's slot; nothing else runs on it during this program.
    PACKET.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// XDP ingress: observe, never drop.
#[xdp]
pub fn hbwatch_xdp(ctx: XdpContext) -> u32 {
    let frame = XdpFrame { ctx: ctx.ctx };
    // SAFETY: plain field read of the program's context.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let mut env = KernelEnv { ctx: &ctx };
    // SAFETY: plain helper call without arguments.
    let clock = || unsafe { bpf_ktime_get_ns() };
    process_with_clock(&frame, &mut env, scratch, clock, ifindex);
    xdp_action::XDP_PASS
}

/// TC: at egress the host's own outgoing heartbeats (same logic and flow table, so both
/// directions of an association merge); at ingress, with `--mode tc`, in place of XDP.
/// Observe only: continue unchanged. Picks one reader per packet, not a fallback per
/// read: a direct read that may fall back to the helper forks the verifier's state at
/// every read, which old verifiers (5.10) cannot prune. The reader is a tail call, so
/// each is verified once, on its own.
#[classifier]
pub fn hbwatch_tc(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: plain field reads of the program's context.
    let (len, start, end) = unsafe {
        (
            (*skb).len as usize,
            (*skb).data as usize,
            (*skb).data_end as usize,
        )
    };
    let slot = if end.wrapping_sub(start) == len {
        TC_LINEAR
    } else {
        TC_PAGED
    };
    // SAFETY: TC_READERS holds classifiers only; on success this does not return.
    unsafe { TC_READERS.tail_call(&ctx, slot) };
    // Only when userspace left the slot empty: the frame goes unobserved, and says so.
    if let Some(c) = COUNTERS.get_ptr_mut(Counter::Undispatched as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
    TC_ACT_UNSPEC
}

/// [`hbwatch_tc`]'s reader for a linear skb (all its bytes between `data` and
/// `data_end`): read directly, as XDP reads its frame. Reached by tail call only.
#[classifier]
pub fn hbwatch_tc_linear(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    tc_observe(&ctx, &LinearSkbFrame { skb });
    TC_ACT_UNSPEC
}

/// [`hbwatch_tc`]'s reader for a non-linear skb (paged data of a large segment), through
/// bpf_skb_load_bytes, without pulling it. Reached by tail call only.
#[classifier]
pub fn hbwatch_tc_paged(ctx: TcContext) -> i32 {
    tc_observe(&ctx, &SkbFrame { ctx: &ctx });
    TC_ACT_UNSPEC
}

#[inline(always)]
fn tc_observe<F: Frame>(ctx: &TcContext, frame: &F) {
    // SAFETY: plain field read of the program's context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let mut env = KernelEnv { ctx };
    // SAFETY: plain helper call without arguments.
    let clock = || unsafe { bpf_ktime_get_ns() };
    process_with_clock(frame, &mut env, scratch, clock, ifindex);
}

/// Benchmark baseline: XDP that does nothing. `cargo xtask bench` divides the agent's
/// per-packet cost by this program's; the agent never loads or attaches it.
#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark baseline of the TC attach mode: a classifier that does nothing. Never
/// loaded by the agent.
#[classifier]
pub fn bench_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

/// Benchmark floor: XDP_PASS after one clock read, what every heartbeat pays for its
/// timestamp. Never loaded by the agent.
#[xdp]
pub fn bench_clock(_ctx: XdpContext) -> u32 {
    // SAFETY: plain helper call without arguments.
    core::hint::black_box(unsafe { bpf_ktime_get_ns() });
    xdp_action::XDP_PASS
}

/// Benchmark floor: XDP_PASS after one clock read and one flow-table lookup (the key is
/// hashed and its bucket walked; no such association): what a held heartbeat cannot
/// avoid. Never loaded by the agent.
#[xdp]
pub fn bench_lookup(_ctx: XdpContext) -> u32 {
    // SAFETY: plain helper call without arguments.
    let now = core::hint::black_box(unsafe { bpf_ktime_get_ns() });
    let mut key = FlowKey::default();
    key.orig_port = core::hint::black_box(15000);
    key.resp_port = 15000;
    key.family = 4;
    let found = FLOWS.get_ptr_mut(&key).is_some();
    core::hint::black_box((now, found));
    xdp_action::XDP_PASS
}

/// Benchmark floor: XDP_PASS after one ring-buffer record of a heartbeat's size, filled
/// and submitted as the agent does. Never loaded by the agent.
#[xdp]
pub fn bench_record(_ctx: XdpContext) -> u32 {
    if let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) {
        // SAFETY: reserved ring-buffer memory of RawEvent size; every field written.
        unsafe {
            let ev = &mut *entry.as_mut_ptr();
            ev.ts_ns = 1;
            ev.value = 0;
            ev.key = FlowKey::default();
            ev.seq = 0;
            ev.aux = 0;
            ev.ifindex = 0;
            ev.kind = 0;
            ev.dscp = 0;
            ev._pad = [0; 2];
        }
        entry.submit(SUBMIT_FLAGS);
    }
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
