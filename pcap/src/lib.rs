//! Captures, read and written with one library (`pcap-parser`). Reading: pcap and
//! pcapng, any link type the engine can take (Ethernet, Linux cooked v1/v2, raw IP),
//! timestamps in ns whatever the file's resolution, and what was wrong with a damaged
//! file; `offline` replays what this reads, `locate` and `vantage` read through it too.
//! Writing: Ethernet frames as pcap (µs or ns) or pcapng (ns), for hbgen and the flight
//! recorder.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use pcap_parser::pcapng::{
    Block, EnhancedPacketBlock, InterfaceDescriptionBlock, OptionCode, PcapNGOption,
    SectionHeaderBlock,
};
use pcap_parser::{LegacyPcapBlock, Linktype, PcapBlockOwned, PcapError, PcapHeader, ToVec};

/// Link-layer framing of a capture, turned into the Ethernet frames the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    /// Linux cooked capture v1 (`tcpdump -i any`).
    Sll,
    Sll2,
    /// Bare IPv4/IPv6.
    Raw,
}

impl Link {
    fn of(lt: Linktype) -> Option<Link> {
        match lt {
            Linktype::ETHERNET => Some(Link::Ethernet),
            Linktype::LINUX_SLL => Some(Link::Sll),
            Linktype::LINUX_SLL2 => Some(Link::Sll2),
            Linktype::RAW | Linktype::IPV4 | Linktype::IPV6 => Some(Link::Raw),
            _ => None,
        }
    }

    /// The frame as Ethernet: the original bytes, or a rebuilt 14-byte header.
    pub fn ethernet<'a>(self, data: &'a [u8], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
        let (ethertype, rest) = match self {
            Link::Ethernet => return Some(data),
            Link::Sll => (data.get(14..16)?, data.get(16..)?),
            Link::Sll2 => (data.get(0..2)?, data.get(20..)?),
            Link::Raw => {
                let v = data.first()? >> 4;
                let t: &[u8] = match v {
                    4 => &[0x08, 0x00],
                    6 => &[0x86, 0xdd],
                    _ => return None,
                };
                (t, data)
            }
        };
        buf.clear();
        buf.extend_from_slice(&[0u8; 12]);
        buf.extend_from_slice(ethertype);
        buf.extend_from_slice(rest);
        Some(buf)
    }
}

/// Timestamp resolution and offset of one pcapng interface.
#[derive(Debug, Clone, Copy)]
struct IfTime {
    link: Option<Link>,
    units_per_sec: u64,
    offset_s: i64,
}

fn to_ns(secs: u64, frac: u64, units_per_sec: u64) -> u64 {
    let frac_ns = if units_per_sec == 1_000_000_000 {
        frac
    } else {
        (frac as u128 * 1_000_000_000 / units_per_sec.max(1) as u128) as u64
    };
    secs.saturating_mul(1_000_000_000).saturating_add(frac_ns)
}

/// How reading a capture ended ([`read_frames`]).
#[derive(Debug, Default)]
pub struct ReadEnd {
    /// Why the file was not read to its end ("is cut off: ..."), if it was not.
    pub damage: Option<String>,
    pub snaplen: Snaplen,
    /// Some interface had a link type other than Ethernet, Linux cooked or raw IP.
    pub unsupported_link: bool,
}

/// [`read_frames`]' callback: link type, bytes, time (ns), bytes of the file consumed.
pub type OnFrame<'a> = dyn FnMut(Link, &[u8], u64, u64) -> anyhow::Result<()> + 'a;

/// Reads every frame of a pcap or pcapng capture in file order, calling
/// `on_frame(link, bytes, ts_ns, bytes_consumed)` for each frame of a supported link
/// type; an error of `on_frame` stops reading and is returned. `Ok(Err(why))`: not a
/// capture at all. Damage further on ends the reading with what came before delivered.
pub fn read_frames(
    input: Box<dyn Read + Send>,
    on_frame: &mut OnFrame<'_>,
) -> anyhow::Result<Result<ReadEnd, String>> {
    let mut reader = match pcap_parser::create_reader(1 << 20, input) {
        Ok(r) => r,
        Err(e) => return Ok(Err(format!("not a pcap or pcapng capture ({e:?})"))),
    };
    let mut end = ReadEnd::default();
    let mut legacy: Option<(Option<Link>, u64)> = None;
    let mut interfaces: Vec<IfTime> = Vec::new();
    let mut consumed = 0u64;
    // Simple packet blocks have no timestamp: they share the latest one.
    let mut last_ts = 0u64;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        let units = if h.is_nanosecond_precision() {
                            1_000_000_000
                        } else {
                            1_000_000
                        };
                        legacy = Some((Link::of(h.network), units));
                        end.unsupported_link |= Link::of(h.network).is_none();
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let (link, units) = legacy.unwrap_or((Some(Link::Ethernet), 1_000_000));
                        end.snaplen.frame(b.caplen, b.origlen);
                        if let Some(link) = link {
                            let ts = to_ns(b.ts_sec as u64, b.ts_usec as u64, units);
                            last_ts = last_ts.max(ts);
                            on_frame(link, b.data, ts, consumed)?;
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        let link = Link::of(idb.linktype);
                        end.unsupported_link |= link.is_none();
                        interfaces.push(IfTime {
                            link,
                            units_per_sec: idb.ts_resolution().unwrap_or(1_000_000),
                            offset_s: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        end.snaplen.frame(epb.caplen, epb.origlen);
                        if let Some(it) = interfaces.get(epb.if_id as usize).copied() {
                            if let Some(link) = it.link {
                                let raw = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                                let secs = (raw / it.units_per_sec) as i64 + it.offset_s;
                                let ts = to_ns(
                                    secs.max(0) as u64,
                                    raw % it.units_per_sec,
                                    it.units_per_sec,
                                );
                                let caplen = (epb.caplen as usize).min(epb.data.len());
                                last_ts = last_ts.max(ts);
                                on_frame(link, &epb.data[..caplen], ts, consumed)?;
                            }
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        if let Some(link) = interfaces.first().and_then(|i| i.link) {
                            on_frame(link, spb.data, last_ts, consumed)?;
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
                consumed += offset as u64;
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    end.damage = Some(CUT_SHORT.to_string());
                    break;
                }
                if let Err(e) = reader.refill() {
                    end.damage = Some(format!("could not be read ({e:?})"));
                    break;
                }
            }
            Err(PcapError::UnexpectedEof) => {
                end.damage = Some(CUT_SHORT.to_string());
                break;
            }
            Err(e) => {
                end.damage = Some(format!(
                    "is corrupt ({e:?}); the rest of the file was skipped"
                ));
                break;
            }
        }
    }
    Ok(Ok(end))
}

/// The last record announces more bytes than the file holds.
const CUT_SHORT: &str = "is cut off: the file ends in the middle of it (cut short, e.g. copied while still being written)";

/// How much of each packet a capture kept: a small snaplen cuts payloads.
#[derive(Debug, Default)]
pub struct Snaplen {
    /// Frames captured shorter than they were on the wire.
    cut: u64,
    /// The longest of them: the snaplen in effect (headers may declare another, e.g.
    /// `editcap -s` keeps the original header).
    kept: u32,
}

impl Snaplen {
    fn frame(&mut self, caplen: u32, origlen: u32) {
        if caplen < origlen {
            self.cut += 1;
            self.kept = self.kept.max(caplen);
        }
    }

    /// What to tell the user, if packets were cut.
    pub fn warning(&self) -> Option<String> {
        (self.cut > 0).then(|| {
            let frames = match self.cut {
                1 => "1 frame was".to_string(),
                n => format!("{n} frames were"),
            };
            format!(
                "{frames} cut to the capture's snaplen ({} bytes): payloads are truncated (SIP headers and heartbeat fields past the cut are not seen)",
                self.kept
            )
        })
    }
}

/// A capture format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap; `nanos` picks the nanosecond magic (0xa1b23c4d).
    Pcap { nanos: bool },
    /// pcapng with one Ethernet interface, timestamps in ns (`if_tsresol` = 9).
    PcapNg,
}

/// What every written capture declares: frames are never cut.
const SNAPLEN: u32 = 65_535;

/// Writes Ethernet frames as a capture in time order.
pub struct Writer<W: Write> {
    out: W,
    format: Format,
}

fn serialized(block: &mut impl ToVec) -> io::Result<Vec<u8>> {
    block
        .to_vec()
        .map_err(|e| io::Error::other(format!("serializing a capture block: {e:?}")))
}

impl<W: Write> Writer<W> {
    /// Writes the file's header (pcapng: the section and one interface named
    /// `interface`, its timestamps declared in ns: readers assume µs otherwise).
    pub fn new(mut out: W, format: Format, interface: &str) -> io::Result<Writer<W>> {
        match format {
            Format::Pcap { nanos } => {
                let mut header = PcapHeader {
                    magic_number: if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 },
                    snaplen: SNAPLEN,
                    network: Linktype::ETHERNET,
                    ..PcapHeader::new()
                };
                out.write_all(&serialized(&mut header)?)?;
            }
            Format::PcapNg => {
                let mut shb = SectionHeaderBlock {
                    block_type: 0,
                    block_len1: 0,
                    bom: 0,
                    major_version: 1,
                    minor_version: 0,
                    // Unknown: the file is written as frames come.
                    section_len: -1,
                    options: Vec::new(),
                    block_len2: 0,
                };
                out.write_all(&serialized(&mut shb)?)?;
                let mut idb = InterfaceDescriptionBlock {
                    block_type: 0,
                    block_len1: 0,
                    linktype: Linktype::ETHERNET,
                    reserved: 0,
                    snaplen: SNAPLEN,
                    options: vec![PcapNGOption {
                        code: OptionCode::IfName,
                        len: interface.len() as u16,
                        value: Cow::Borrowed(interface.as_bytes()),
                    }],
                    block_len2: 0,
                    // `fix` turns these into the if_tsresol and if_tsoffset options.
                    if_tsresol: 9,
                    if_tsoffset: 0,
                };
                out.write_all(&serialized(&mut idb)?)?;
            }
        }
        Ok(Writer { out, format })
    }

    /// Writes one frame seen at `ts_ns` (ns since the epoch); returns the bytes written.
    pub fn write(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<usize> {
        let len = data.len() as u32;
        let bytes = match self.format {
            Format::Pcap { nanos } => {
                let per_s = if nanos { 1_000_000_000 } else { 1_000_000 };
                let mut rec = LegacyPcapBlock {
                    ts_sec: (ts_ns / 1_000_000_000) as u32,
                    ts_usec: ((ts_ns % 1_000_000_000) / (1_000_000_000 / per_s)) as u32,
                    caplen: len,
                    origlen: len,
                    data,
                };
                serialized(&mut rec)?
            }
            Format::PcapNg => {
                let mut epb = EnhancedPacketBlock {
                    block_type: 0,
                    block_len1: 0,
                    if_id: 0,
                    ts_high: (ts_ns >> 32) as u32,
                    ts_low: ts_ns as u32,
                    caplen: len,
                    origlen: len,
                    data,
                    options: Vec::new(),
                    block_len2: 0,
                };
                serialized(&mut epb)?
            }
        };
        self.out.write_all(&bytes)?;
        Ok(bytes.len())
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_341_600_123_456_789;
    const T1: u64 = 1_795_341_601_000_000_001;

    /// Writes two frames in `format` and reads them back: (link, bytes, ts_ns) each.
    fn round_trip(format: Format) -> Vec<(Link, Vec<u8>, u64)> {
        let mut w = Writer::new(Vec::new(), format, "test").unwrap();
        w.write(T0, &[1; 60]).unwrap();
        w.write(T1, &[2; 61]).unwrap();
        let file = w.into_inner();
        let mut got = Vec::new();
        let end = read_frames(Box::new(io::Cursor::new(file)), &mut |link, data, ts, _| {
            got.push((link, data.to_vec(), ts));
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert!(end.damage.is_none() && !end.unsupported_link, "{end:?}");
        got
    }

    #[test]
    fn pcap_micro_and_nano_keep_their_resolution() {
        for (nanos, t0) in [(false, T0 - 789), (true, T0)] {
            let got = round_trip(Format::Pcap { nanos });
            assert_eq!(
                got,
                [
                    (Link::Ethernet, vec![1; 60], t0),
                    (Link::Ethernet, vec![2; 61], T1 - u64::from(!nanos))
                ]
            );
        }
    }

    #[test]
    fn pcapng_declares_nanoseconds_and_pads_its_blocks() {
        let got = round_trip(Format::PcapNg);
        // 61 bytes: the block is padded to 32 bits, the frame is not.
        assert_eq!(
            got,
            [
                (Link::Ethernet, vec![1; 60], T0),
                (Link::Ethernet, vec![2; 61], T1)
            ]
        );
    }

    #[test]
    fn tshark_reads_what_is_written() {
        let Ok(out) = std::process::Command::new("tshark").arg("-v").output() else {
            eprintln!("tshark missing: skipped");
            return;
        };
        assert!(out.status.success());
        for (format, ext) in [
            (Format::Pcap { nanos: false }, "pcap"),
            (Format::Pcap { nanos: true }, "pcap"),
            (Format::PcapNg, "pcapng"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("t.{ext}"));
            let mut w = Writer::new(Vec::new(), format, "test").unwrap();
            w.write(T0, &[1; 60]).unwrap();
            w.write(T1, &[2; 61]).unwrap();
            std::fs::write(&path, w.into_inner()).unwrap();
            let out = std::process::Command::new("tshark")
                .args(["-n", "-r"])
                .arg(&path)
                .args(["-T", "fields", "-e", "frame.time_epoch", "-e", "frame.len"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{format:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 2, "{format:?}: {text}");
            assert!(
                lines[0].starts_with("1795341600.123456") && lines[0].ends_with("\t60"),
                "{format:?}: {text}"
            );
            assert!(
                lines[1].starts_with("1795341601.000000") && lines[1].ends_with("\t61"),
                "{format:?}: {text}"
            );
        }
    }
}
