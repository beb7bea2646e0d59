//! The kernel side of hbwatch: thin glue between XDP and `hbwatch_common::engine`.
//! Maps live here; the per-packet logic does not.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use hbwatch_common::{
    counters::{Counter, COUNTER_COUNT},
    engine::{process, Env},
    event::RawEvent,
    flow::{FlowKey, FlowState},
    frame::Frame,
    params::ProtoParams,
    proto::{Protocol, PORT_SLOTS, PROTOCOL_COUNT},
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

/// Findings for userspace (4 MiB: ~58k records of slack).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Packet bytes between the context's `data` and `data_end` pointers.
struct XdpFrame {
    start: usize,
    end: usize,
}

impl Frame for XdpFrame {
    #[inline(always)]
    fn bytes<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // The verifier needs this exact compare of packet pointer against data_end.
        if self.start + offset + N > self.end {
            return None;
        }
        // SAFETY: bounds checked above; [u8; N] has alignment 1.
        Some(unsafe { core::ptr::read_unaligned((self.start + offset) as *const [u8; N]) })
    }
}

struct KernelEnv<'a> {
    ctx: &'a XdpContext,
}

impl Env for KernelEnv<'_> {
    #[inline(always)]
    fn port_proto(&self, slot: u32) -> u8 {
        PORTS.get(slot).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn params(&self, proto: Protocol) -> ProtoParams {
        match PARAMS.get(proto as u32) {
            Some(p) => *p,
            None => ProtoParams::defaults(Protocol::None),
        }
    }

    #[inline(always)]
    fn with_flow<R, U: FnOnce(&mut FlowState) -> R>(&mut self, key: &FlowKey, f: U) -> Option<R> {
        let ptr = FLOWS.get_ptr_mut(key)?;
        // SAFETY: the map value stays valid for this program run; updated in place.
        Some(f(unsafe { &mut *ptr }))
    }

    #[inline(always)]
    fn insert_flow(&mut self, key: &FlowKey, state: &FlowState) -> bool {
        if FLOWS.insert(key, state, 0).is_ok() {
            return true;
        }
        warn!(self.ctx, "hbwatch: flow table insert failed");
        false
    }

    #[inline(always)]
    fn emit(&mut self, ev: &RawEvent) -> bool {
        EVENTS.output::<RawEvent>(ev, 0).is_ok()
    }

    #[inline(always)]
    fn count(&mut self, c: Counter) {
        if let Some(slot) = COUNTERS.get_ptr_mut(c as u32) {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *slot += 1 };
        }
    }
}

/// XDP ingress: observe, never drop.
#[xdp]
pub fn hbwatch_xdp(ctx: XdpContext) -> u32 {
    let frame = XdpFrame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let mut env = KernelEnv { ctx: &ctx };
    process(&frame, &mut env, now, ifindex);
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
