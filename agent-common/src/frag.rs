//! IP fragments of heartbeat datagrams. Long SIP REGISTERs over UDP arrive fragmented;
//! only the first fragment carries the ports. The datapath remembers each first fragment
//! on a SIP port (`FRAGS` map) so the later fragments of the same datagram go up too,
//! and userspace reassembles them (bounded memory and time).

use crate::parse::Packet;

/// One datagram being fragmented: addresses, IP id, transport. 8-byte aligned, no holes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub ip_id: u32,
    pub family: u8,
    pub transport: u8,
    pub _pad: [u8; 2],
}

impl FragKey {
    #[inline(always)]
    pub fn of(pkt: &Packet) -> FragKey {
        FragKey {
            src: pkt.src,
            dst: pkt.dst,
            ip_id: pkt.ip_id,
            family: pkt.family,
            transport: pkt.transport,
            _pad: [0; 2],
        }
    }
}

/// What the first fragment said: the ports and protocol of the whole datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragInfo {
    pub src_port: u16,
    pub dst_port: u16,
    /// A [`crate::proto::Protocol`] id.
    pub proto: u8,
    pub _pad: [u8; 3],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for FragKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for FragInfo {}
