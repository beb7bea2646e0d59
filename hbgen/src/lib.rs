//! Heartbeat traffic generator: realistic, time-stamped frames of every seed protocol
//! (PROTOCOLS.md), with scripted faults and the ground truth of what they should cause.
//! Used by tests, `hbwatch hbgen`, the demo and benchmarks. Time is virtual: the same
//! scenario and seed always give the same bytes.
//!
//! ```no_run
//! use hbgen::{self, output, scenario::Scenario};
//! let sc = Scenario::load("story")?;
//! let mut capture = hbgen::generate(&sc);
//! let frames = capture.take_frames(); // heartbeat frames, in time order
//! let stats = output::write_file("story.pcap".as_ref(), hbwatch_pcap::Format::Pcap { nanos: false }, frames)?;
//! capture.truth.generated = stats;
//! output::write_truth("story.pcap.truth.json".as_ref(), &capture.truth)?;
//! # anyhow::Ok(())
//! ```

mod beats;
pub mod cli;
pub mod crowd;
pub mod frame;
pub mod ged125;
pub mod ipmg;
mod keepalive;
pub mod mds;
pub mod mgcp;
pub mod mutate;
pub mod noise;
pub mod ordinary;
pub mod output;
pub mod rng;
pub mod rudp;
pub mod sccp;
pub mod scenario;
pub mod sip;
mod tcp;
pub mod truth;

use std::fmt;
use std::net::IpAddr;

use frame::{FrameSpec, Tcp};
use rng::Rng;
use scenario::{Dir, Fault, FaultKind, Model, Scenario};
use truth::{Collector, Truth, TruthFault};

/// An IP address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ep {
    pub ip: IpAddr,
    pub port: u16,
}

impl Ep {
    pub fn new(ip: IpAddr, port: u16) -> Ep {
        Ep { ip, port }
    }

    /// A locally administered MAC derived from the address: stable per host.
    fn mac(&self) -> [u8; 6] {
        let tail = match self.ip {
            IpAddr::V4(v4) => v4.octets(),
            IpAddr::V6(v6) => {
                let o = v6.octets();
                [o[12], o[13], o[14], o[15]]
            }
        };
        [0x02, 0x68, tail[0], tail[1], tail[2], tail[3]]
    }

    /// The address as SIP writes it in URIs and Via (IPv6 in brackets).
    pub fn host(&self) -> String {
        match self.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    }
}

impl fmt::Display for Ep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host(), self.port)
    }
}

/// One frame and when the probe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFrame {
    /// Unix time, ns.
    pub ts_ns: u64,
    pub data: Vec<u8>,
    /// What it carries, e.g. `ged125.heartbeat_req`, `tcp.ack`, `ordinary`: counted
    /// into the truth's `generated.by_message`.
    pub label: &'static str,
}

/// A generated scenario: heartbeat frames in time order and the ground truth.
#[derive(Debug)]
pub struct Capture {
    pub frames: Vec<TimedFrame>,
    pub truth: Truth,
}

impl Capture {
    /// Moves the frames out (for streaming them to an output).
    pub fn take_frames(&mut self) -> Vec<TimedFrame> {
        std::mem::take(&mut self.frames)
    }
}

const MS: u64 = 1_000_000;

/// UTC time as the agent's events write it (RFC 3339, microseconds), for the truth's
/// times: the same instant reads the same in both.
pub fn rfc3339_micros(unix_ns: i128) -> String {
    use time::{format_description::FormatItem, macros::format_description, OffsetDateTime};
    const FMT: &[FormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    let t =
        OffsetDateTime::from_unix_timestamp_nanos(unix_ns).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(FMT).unwrap_or_default()
}

/// Where the models put frames and expectations. Times are ns from the capture start;
/// anything at or past the end is not emitted.
pub(crate) struct Out {
    pub frames: Vec<TimedFrame>,
    pub truth: Collector,
    pub duration_ns: u64,
}

/// Frame properties shared by every packet of one association.
#[derive(Debug, Clone)]
pub(crate) struct Wire {
    pub vlans: Vec<u16>,
}

impl Out {
    fn push(&mut self, t: u64, spec: FrameSpec, label: &'static str) {
        if t >= self.duration_ns {
            return;
        }
        self.frames.push(TimedFrame {
            ts_ns: self.truth.start_ns + t,
            data: spec.build(),
            label,
        });
    }

    fn spec(wire: &Wire, src: Ep, dst: Ep, dscp: u8, payload: &[u8]) -> FrameSpec {
        let mut f = FrameSpec::udp(src.ip, src.port, dst.ip, dst.port, payload);
        f.src_mac = src.mac();
        f.dst_mac = dst.mac();
        f.vlans = wire.vlans.clone();
        f.dscp = dscp;
        f
    }

    #[allow(clippy::too_many_arguments)]
    pub fn udp(
        &mut self,
        t: u64,
        wire: &Wire,
        src: Ep,
        dst: Ep,
        dscp: u8,
        payload: &[u8],
        label: &'static str,
    ) {
        self.push(t, Self::spec(wire, src, dst, dscp, payload), label);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &mut self,
        t: u64,
        wire: &Wire,
        src: Ep,
        dst: Ep,
        dscp: u8,
        tcp: Tcp,
        payload: &[u8],
        label: &'static str,
    ) {
        let mut f = Self::spec(wire, src, dst, dscp, payload);
        f.tcp = Some(tcp);
        self.push(t, f, label);
    }
}

/// The faults of one association, asked per packet.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub list: Vec<Fault>,
}

impl Faults {
    /// A loss, one-way loss or silence that swallows a packet sent by `a` (`from_a`)
    /// or `b` at `t`, for heartbeats every `interval`.
    pub fn dropped(&self, t: u64, from_a: bool, backup: bool, interval: u64) -> Option<&Fault> {
        self.list.iter().find(|f| {
            let (s, e) = f.window(interval);
            let dir = match f.kind {
                FaultKind::Loss { direction, .. } | FaultKind::OneWayLoss { direction, .. } => {
                    direction
                }
                FaultKind::Silence { .. } => Dir::Both,
                _ => return false,
            };
            f.backup == backup && s <= t && t < e && dir.covers(from_a)
        })
    }

    /// The first fault matching `pred` whose window covers `t`.
    pub fn active(
        &self,
        t: u64,
        backup: bool,
        interval: u64,
        pred: impl Fn(&FaultKind) -> bool,
    ) -> Option<&Fault> {
        self.list.iter().find(|f| {
            let (s, e) = f.window(interval);
            f.backup == backup && s <= t && t < e && pred(&f.kind)
        })
    }

    /// DSCP of a packet from `a` (`from_a`) or `b` at `t`: re-marked or `base`.
    pub fn dscp(&self, t: u64, from_a: bool, backup: bool, base: u8) -> (u8, Option<&Fault>) {
        let f = self.list.iter().rev().find(|f| {
            let FaultKind::Dscp { direction, .. } = f.kind else {
                return false;
            };
            let (s, e) = f.window(0);
            f.backup == backup && s <= t && t < e && direction.covers(from_a)
        });
        match f {
            Some(
                f @ Fault {
                    kind: FaultKind::Dscp { value, .. },
                    ..
                },
            ) => (*value, Some(f)),
            _ => (base, None),
        }
    }
}

/// Small send-time jitter: 0.5 % of the interval at most (far from any threshold).
pub(crate) fn jitter(rng: &mut Rng, interval: u64) -> u64 {
    rng.range(0, (interval / 200).max(1))
}

/// Generates a scenario's heartbeat frames and their ground truth.
pub fn generate(sc: &Scenario) -> Capture {
    let root = Rng::new(sc.seed);
    let mut out = Out {
        frames: Vec::new(),
        truth: Collector {
            start_ns: sc.start_unix_ns,
            end_ns: sc.start_unix_ns + sc.duration_ns,
            ..Collector::default()
        },
        duration_ns: sc.duration_ns,
    };
    for (i, a) in sc.associations.iter().enumerate() {
        let mut rng = root.fork(&format!("association:{}", a.name));
        let faults = Faults {
            list: sc.faults_of(i),
        };
        let wire = Wire {
            vlans: a.vlans.clone(),
        };
        // Associations start within the first second unless told, not all at once.
        let start = a.start_ns.unwrap_or_else(|| rng.range(MS, 1000 * MS));
        let ctx = ModelCtx {
            name: &a.name,
            wire,
            dscp: a.dscp,
            start,
            rtt: a.rtt_ns,
            faults,
        };
        match &a.model {
            Model::Ged125 { .. } => ged125::generate(&ctx, &a.model, &mut rng, &mut out),
            Model::Mds { .. } => mds::generate(&ctx, &a.model, &mut rng, &mut out),
            Model::Rudp { .. } => rudp::generate(&ctx, &a.model, &mut rng, &mut out),
            Model::Ipmg { .. } => ipmg::generate(&ctx, &a.model, &mut rng, &mut out),
            Model::Sccp { .. } => sccp::generate(&ctx, &a.model, &mut rng, &mut out),
            Model::Sip { .. } => sip::generate_register(&ctx, &a.model, &mut rng, &mut out),
            Model::SipOptions { .. } => sip::generate_options(&ctx, &a.model, &mut rng, &mut out),
            Model::Mgcp { .. } => mgcp::generate(&ctx, &a.model, &mut rng, &mut out),
        }
    }
    // Stable: frames of one association keep their order when timestamps tie.
    out.frames.sort_by_key(|f| f.ts_ns);
    let mut expected = out.truth.expected;
    expected.sort_by_key(|e| e.at_ns);
    let truth = Truth {
        version: 1,
        scenario: sc.name.clone(),
        seed: sc.seed,
        start: rfc3339_micros(sc.start_unix_ns as i128),
        start_unix_ns: sc.start_unix_ns,
        end_unix_ns: sc.start_unix_ns + sc.duration_ns,
        associations: out.truth.associations,
        faults: sc
            .faults
            .iter()
            .map(|f| TruthFault {
                index: f.index,
                kind: f.kind.name(),
                association: sc.associations[f.association].name.clone(),
                target: if f.backup { "backup" } else { "primary" },
                at: rfc3339_micros((sc.start_unix_ns + f.at_ns) as i128),
                at_ns: sc.start_unix_ns + f.at_ns,
                detail: format!("{:?}", f.kind),
            })
            .collect(),
        generated: Default::default(),
        expected,
    };
    Capture {
        frames: out.frames,
        truth,
    }
}

/// What every model gets besides its own settings.
pub(crate) struct ModelCtx<'a> {
    pub name: &'a str,
    pub wire: Wire,
    pub dscp: u8,
    /// First activity, ns from the capture start.
    pub start: u64,
    pub rtt: u64,
    pub faults: Faults,
}

impl ModelCtx<'_> {
    /// Response delay: the configured RTT plus up to 20 % more.
    pub fn rtt(&self, rng: &mut Rng) -> u64 {
        self.rtt + rng.range(0, self.rtt / 5 + 1)
    }
}
