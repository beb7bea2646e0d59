//! The flight recorder (`hbwatch run --record DIR?keep=15m`): the last minutes of
//! heartbeats as rotating pcapng files, so `hbwatch locate` can compare two agents'
//! recordings after the fact. Only what the kernel already sends up is recorded: each
//! heartbeat record becomes a frame carrying the same number (RUDP seq and flag, GED-125
//! InvokeID, MDS seqno) and DSCP, SIP messages their captured bytes (none when
//! `privacy.sip_users` is hash or redact: the bytes would name the users). Not recorded: SCCP
//! and IPMG (their numbers are the agent's own count, which two agents need not agree on:
//! matching them would invent loss), TTLs (written as 64) and TCP sequence numbers.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use hbwatch_common::event::{EventKind, RawEvent};
use hbwatch_common::parse::{TCP_ACK, TCP_PSH};
use hbwatch_common::proto::{ged125, rudp, Protocol, Role};

use crate::convert::ip_of;
use hbgen::frame::{FrameSpec, Tcp};
use hbwatch_pcap::{Format, Writer};

/// `DIR?keep=15m&max_size=256MiB`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    pub dir: PathBuf,
    /// How far back the recording reaches.
    pub keep: Duration,
    /// Most bytes the files may hold together (oldest deleted first).
    pub max_bytes: u64,
    /// Record SIP messages (their bytes name users). Off when `privacy.sip_users` hashes
    /// or redacts them: the recording then holds no SIP at all rather than clear names.
    pub sip_messages: bool,
}

impl std::str::FromStr for RecordSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (dir, query) = s.split_once('?').unwrap_or((s, ""));
        if dir.is_empty() {
            return Err(format!(
                "--record {s:?}: expected DIR[?keep=15m&max_size=256MiB]"
            ));
        }
        let mut spec = RecordSpec {
            dir: dir.into(),
            keep: Duration::from_secs(15 * 60),
            max_bytes: 256 << 20,
            sip_messages: true,
        };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "keep" => {
                    spec.keep = humantime(v)
                        .filter(|d| *d >= Duration::from_secs(10))
                        .ok_or_else(|| {
                            format!("--record keep={v:?}: a duration of 10s or more, e.g. 15m")
                        })?
                }
                "max_size" => {
                    spec.max_bytes = size(v).filter(|b| *b >= 1 << 20).ok_or_else(|| {
                        format!("--record max_size={v:?}: a size of 1MiB or more, e.g. 256MiB")
                    })?
                }
                _ => return Err(format!("--record: unknown option {k:?} (keep, max_size)")),
            }
        }
        Ok(spec)
    }
}

fn humantime(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    Some(Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    }))
}

fn size(v: &str) -> Option<u64> {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "B" => n,
        "KiB" => n << 10,
        "MiB" => n << 20,
        "GiB" => n << 30,
        _ => return None,
    })
}

/// Files are named by their first frame's time: sorting by name is sorting by time.
const PREFIX: &str = "hbwatch-rec-";

struct Current {
    writer: Writer<BufWriter<File>>,
    path: PathBuf,
    start_ns: i128,
    bytes: u64,
    flushed_ns: i128,
}

/// Writes heartbeat records as rotating pcapng files.
pub struct Recorder {
    spec: RecordSpec,
    /// One file covers this long: a fifteenth of `keep`.
    slice_ns: i128,
    current: Option<Current>,
    /// Closed files, oldest first: path, first frame time, bytes.
    done: VecDeque<(PathBuf, i128, u64)>,
}

impl Recorder {
    /// Opens `spec.dir` (created if missing); recordings of an earlier run there are kept
    /// and rotated away like this run's.
    pub fn new(spec: &RecordSpec) -> anyhow::Result<Recorder> {
        std::fs::create_dir_all(&spec.dir)
            .with_context(|| format!("--record: creating {}", spec.dir.display()))?;
        let mut done: Vec<(PathBuf, i128, u64)> = Vec::new();
        for e in std::fs::read_dir(&spec.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(ns) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.strip_suffix(".pcapng"))
                .and_then(|n| n.parse::<i128>().ok())
            else {
                continue;
            };
            done.push((e.path(), ns, e.metadata()?.len()));
        }
        done.sort_by_key(|d| d.1);
        if spec.keep.as_nanos() == 0 {
            bail!("--record: keep must be positive");
        }
        Ok(Recorder {
            slice_ns: (spec.keep.as_nanos() as i128 / 15).max(1_000_000_000),
            spec: spec.clone(),
            current: None,
            done: done.into(),
        })
    }

    /// One ring-buffer record (`payload`: a SIP record's bytes) at `unix_ns`. Errors are
    /// logged, never fatal: the recorder must not stop the agent.
    pub fn record(&mut self, raw: &RawEvent, payload: &[u8], unix_ns: i128) {
        if raw.kind == EventKind::SipMessage as u8 && !self.spec.sip_messages {
            return;
        }
        let Some(frame) = frame_of(raw, payload) else {
            return;
        };
        if let Err(e) = self.write(&frame, unix_ns) {
            tracing::warn!("--record {}: {e:#}", self.spec.dir.display());
            self.current = None;
        }
    }

    fn write(&mut self, frame: &[u8], unix_ns: i128) -> anyhow::Result<()> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| unix_ns >= c.start_ns + self.slice_ns)
        {
            self.rotate(unix_ns)?;
        }
        if self.current.is_none() {
            self.open(unix_ns)?;
        }
        let c = self.current.as_mut().expect("opened");
        c.bytes += c.writer.write(unix_ns.max(0) as u64, frame)? as u64;
        // Readable while the agent runs: flushed at least once a second.
        if unix_ns - c.flushed_ns >= 1_000_000_000 {
            c.writer.get_mut().flush()?;
            c.flushed_ns = unix_ns;
        }
        Ok(())
    }

    fn open(&mut self, unix_ns: i128) -> anyhow::Result<()> {
        let path = self.spec.dir.join(format!("{PREFIX}{unix_ns:020}.pcapng"));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let writer = Writer::new(BufWriter::new(file), Format::PcapNg, "hbwatch-record")?;
        self.current = Some(Current {
            writer,
            path,
            start_ns: unix_ns,
            bytes: 0,
            flushed_ns: unix_ns,
        });
        Ok(())
    }

    /// Closes the current file, then deletes files wholly older than `keep` and the
    /// oldest while over `max_size`.
    fn rotate(&mut self, now_ns: i128) -> anyhow::Result<()> {
        if let Some(mut c) = self.current.take() {
            c.writer.get_mut().flush()?;
            self.done.push_back((c.path, c.start_ns, c.bytes));
        }
        let keep = self.spec.keep.as_nanos() as i128;
        while self.done.len() > 1 {
            // A file ends where the next one starts.
            let expired = self.done[1].1 < now_ns - keep;
            let total: u64 = self.done.iter().map(|d| d.2).sum();
            if !expired && total <= self.spec.max_bytes {
                break;
            }
            if let Some((path, _, _)) = self.done.pop_front() {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    /// Flushes the current file (at exit).
    pub fn flush(&mut self) {
        if let Some(c) = self.current.as_mut() {
            let _ = c.writer.get_mut().flush();
        }
    }

    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }
}

/// The frame a record stands for, if it is one `locate` can match.
fn frame_of(raw: &RawEvent, payload: &[u8]) -> Option<Vec<u8>> {
    let k = &raw.key;
    let (orig, resp) = (ip_of(k.family, &k.orig), ip_of(k.family, &k.resp));
    let proto = Protocol::from_u8(k.proto);
    let kind = EventKind::from_u8(raw.kind)?;
    if kind == EventKind::SipMessage {
        if payload.is_empty() {
            return None;
        }
        // SIP keys run as the packet travelled.
        let mut spec = FrameSpec::udp(orig, k.orig_port, resp, k.resp_port, payload);
        spec.dscp = raw.dscp;
        if k.transport == hbwatch_common::parse::IPPROTO_TCP {
            spec.tcp = Some(Tcp {
                seq: raw.seq,
                ack: 0,
                flags: TCP_ACK | TCP_PSH,
                window: 65_535,
            });
        }
        return Some(spec.build());
    }
    if !matches!(kind, EventKind::Heartbeat | EventKind::AssociationSeen) {
        return None;
    }
    let role = match (kind, raw.aux & 0xff) {
        (EventKind::Heartbeat, 2) => Role::Response,
        _ => Role::Request,
    };
    let body: Vec<u8> = match proto {
        Protocol::Cs1000Rudp => rudp::payload(raw.seq, role).to_vec(),
        Protocol::Ged125 => ged125::message(role, raw.seq).to_vec(),
        Protocol::Mds => raw.seq.to_be_bytes().to_vec(),
        // The transaction id is the identity; the verb and endpoint are not kept.
        Protocol::Mgcp if role == Role::Response => format!("200 {}\n", raw.seq).into_bytes(),
        Protocol::Mgcp => format!("NTFY {} *@recorded MGCP 1.0\n", raw.seq).into_bytes(),
        _ => return None,
    };
    // Responses travel from the responder.
    let (src, sport, dst, dport) = if role == Role::Response {
        (resp, k.resp_port, orig, k.orig_port)
    } else {
        (orig, k.orig_port, resp, k.resp_port)
    };
    let mut spec = FrameSpec::udp(src, sport, dst, dport, &body);
    spec.dscp = raw.dscp;
    if proto == Protocol::Ged125 {
        spec.tcp = Some(Tcp {
            seq: 0,
            ack: 0,
            flags: TCP_ACK | TCP_PSH,
            window: 65_535,
        });
    }
    Some(spec.build())
}

/// What `hbwatch run --record` writes for the traffic of a capture: its frames through
/// the datapath's engine (as `analyze` runs it), every record the kernel would send up
/// into a recorder. For tests and for trying the recorder on a capture.
pub fn replay_capture(
    input: &Path,
    ports: &std::collections::BTreeMap<u32, Protocol>,
    spec: &RecordSpec,
) -> anyhow::Result<()> {
    use hbwatch_common::frame::SliceFrame;
    let mut rec = Recorder::new(spec)?;
    let mut env = crate::offline::OfflineEnv::new(ports, &Default::default());
    let file = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut buf = Vec::new();
    let read = hbwatch_pcap::read_frames(
        Box::new(std::io::BufReader::new(file)),
        &mut |link, data, ts, _| {
            if let Some(eth) = link.ethernet(data, &mut buf) {
                hbwatch_common::engine::process(&SliceFrame(eth), &mut env, ts, 0);
                for (raw, payload) in env.records.drain(..) {
                    rec.record(&raw, &payload, raw.ts_ns as i128);
                }
            }
            Ok(())
        },
    )?;
    if let Err(why) = read {
        bail!("{}: {why}", input.display());
    }
    rec.flush();
    Ok(())
}
