//! One TCP connection as the probe sees it: handshake, data with correct sequence and
//! acknowledgement numbers, bare ACKs, retransmissions, FIN and RST. Segments the
//! probe misses (`visible = false`) still advance the numbers, as on the real wire.

use hbwatch_common::parse::{TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

use super::frame::Tcp;
use super::rng::Rng;
use super::{Ep, Out, Wire};

pub(crate) struct TcpConn {
    pub client: Ep,
    pub server: Ep,
    pub wire: Wire,
    /// Next sequence number of each side.
    cseq: u32,
    sseq: u32,
}

/// Receive windows as Windows and Linux hosts advertise them (seed: ~65000).
const CLIENT_WINDOW: u16 = 64_240;
const SERVER_WINDOW: u16 = 65_160;

impl TcpConn {
    pub fn new(rng: &mut Rng, client: Ep, server: Ep, wire: Wire) -> TcpConn {
        TcpConn {
            client,
            server,
            wire,
            cseq: rng.u32(),
            sseq: rng.u32(),
        }
    }

    fn ends(&self, from_client: bool) -> (Ep, Ep, u32, u32, u16) {
        if from_client {
            (
                self.client,
                self.server,
                self.cseq,
                self.sseq,
                CLIENT_WINDOW,
            )
        } else {
            (
                self.server,
                self.client,
                self.sseq,
                self.cseq,
                SERVER_WINDOW,
            )
        }
    }

    fn advance(&mut self, from_client: bool, n: u32) {
        let s = if from_client {
            &mut self.cseq
        } else {
            &mut self.sseq
        };
        *s = s.wrapping_add(n);
    }

    #[allow(clippy::too_many_arguments)]
    fn segment(
        &self,
        out: &mut Out,
        t: u64,
        from_client: bool,
        seq: u32,
        flags: u8,
        dscp: u8,
        payload: &[u8],
        label: &'static str,
    ) {
        let (src, dst, _, ack, window) = self.ends(from_client);
        let tcp = Tcp {
            seq,
            ack: if flags & TCP_ACK != 0 { ack } else { 0 },
            flags,
            window,
        };
        out.tcp(t, &self.wire, src, dst, dscp, tcp, payload, label);
    }

    /// SYN, SYN-ACK, ACK from `t`, `rtt` apart; returns when the client's ACK went out.
    pub fn handshake(&mut self, out: &mut Out, t: u64, rtt: u64, dscp: (u8, u8)) -> u64 {
        self.segment(out, t, true, self.cseq, TCP_SYN, dscp.0, &[], "tcp.syn");
        self.advance(true, 1);
        self.segment(
            out,
            t + rtt,
            false,
            self.sseq,
            TCP_SYN | TCP_ACK,
            dscp.1,
            &[],
            "tcp.syn_ack",
        );
        self.advance(false, 1);
        let done = t + rtt + rtt / 4 + 1000;
        self.segment(out, done, true, self.cseq, TCP_ACK, dscp.0, &[], "tcp.ack");
        done
    }

    /// Data (PSH,ACK); returns its sequence number (for a retransmission).
    #[allow(clippy::too_many_arguments)]
    pub fn send(
        &mut self,
        out: &mut Out,
        t: u64,
        from_client: bool,
        dscp: u8,
        payload: &[u8],
        label: &'static str,
        visible: bool,
    ) -> u32 {
        let seq = self.ends(from_client).2;
        if visible {
            self.segment(
                out,
                t,
                from_client,
                seq,
                TCP_PSH | TCP_ACK,
                dscp,
                payload,
                label,
            );
        }
        self.advance(from_client, payload.len() as u32);
        seq
    }

    /// The same data again at its old sequence number.
    #[allow(clippy::too_many_arguments)]
    pub fn resend(
        &self,
        out: &mut Out,
        t: u64,
        from_client: bool,
        seq: u32,
        dscp: u8,
        payload: &[u8],
        label: &'static str,
    ) {
        self.segment(
            out,
            t,
            from_client,
            seq,
            TCP_PSH | TCP_ACK,
            dscp,
            payload,
            label,
        );
    }

    /// A bare ACK of everything the other side sent.
    pub fn ack(&self, out: &mut Out, t: u64, from_client: bool, dscp: u8, visible: bool) {
        if visible {
            let seq = self.ends(from_client).2;
            self.segment(out, t, from_client, seq, TCP_ACK, dscp, &[], "tcp.ack");
        }
    }

    /// An orderly close started by the client or the server: FIN, FIN, ACK.
    pub fn fin(&mut self, out: &mut Out, t: u64, by_client: bool, rtt: u64, dscp: (u8, u8)) {
        let d = |c: bool| if c { dscp.0 } else { dscp.1 };
        let seq = self.ends(by_client).2;
        self.segment(
            out,
            t,
            by_client,
            seq,
            TCP_FIN | TCP_ACK,
            d(by_client),
            &[],
            "tcp.fin",
        );
        self.advance(by_client, 1);
        let seq = self.ends(!by_client).2;
        self.segment(
            out,
            t + rtt,
            !by_client,
            seq,
            TCP_FIN | TCP_ACK,
            d(!by_client),
            &[],
            "tcp.fin",
        );
        self.advance(!by_client, 1);
        let seq = self.ends(by_client).2;
        self.segment(
            out,
            t + 2 * rtt,
            by_client,
            seq,
            TCP_ACK,
            d(by_client),
            &[],
            "tcp.ack",
        );
    }

    /// An abortive close (RST,ACK) by the client or the server.
    pub fn rst(&mut self, out: &mut Out, t: u64, by_client: bool, dscp: u8) {
        let seq = self.ends(by_client).2;
        self.segment(
            out,
            t,
            by_client,
            seq,
            TCP_RST | TCP_ACK,
            dscp,
            &[],
            "tcp.rst",
        );
    }
}
