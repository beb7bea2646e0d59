//! (c) Offline analysis: `hbwatch analyze` (release) against tshark decoding the same
//! heartbeats in the same capture, on a generated capture of mostly ordinary traffic.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context as _, Result};
use hbwatch_common::proto::Role;
use serde_json::{json, Value};

use crate::frames::{self, ip, nth_v4};
use crate::stats::median;

/// What tshark is asked to find: the heartbeat ports of the capture, GED-125 decoded.
pub const TSHARK_FILTER: &str = "udp.port==15000 || tcp.port==5000 || tcp.port==2000";

/// A classic pcap writer (microsecond timestamps, Ethernet).
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // thiszone
        out.write_all(&0u32.to_le_bytes())?; // sigfigs
        out.write_all(&65535u32.to_le_bytes())?; // snaplen
        out.write_all(&1u32.to_le_bytes())?; // LINKTYPE_ETHERNET
        Ok(PcapWriter { out })
    }

    pub fn frame(&mut self, ts_ns: u64, data: &[u8]) -> Result<()> {
        let us = ts_ns / 1000;
        self.out
            .write_all(&((us / 1_000_000) as u32).to_le_bytes())?;
        self.out
            .write_all(&((us % 1_000_000) as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(&(data.len() as u32).to_le_bytes())?;
        self.out.write_all(data)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// xorshift64*: deterministic traffic, no dependency.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const SEC: u64 = 1_000_000_000;

/// What the generated capture holds.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    pub frames: u64,
    pub heartbeat_frames: u64,
    pub bytes: u64,
    pub associations: u64,
}

/// Heartbeats of the capture: `assocs` RUDP device pairs (both sides originate, 1 s),
/// 20 GED-125 sessions (2 s), 50 SCCP phones (30 s); a few pairs lose heartbeats, go
/// silent for 20 s or see retries, so there is something to report.
fn heartbeats(span_s: u64, rudp_pairs: u32) -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng(0x5eed_0001);
    let mut out = Vec::new();
    let base = ip("10.60.0.1");
    for p in 0..rudp_pairs {
        let a = nth_v4(10, 1_000_000 + 2 * p);
        let b = nth_v4(10, 1_000_001 + 2 * p);
        let phase = rng.below(SEC);
        for (from, to, side) in [(a, b, 0u64), (b, a, 1)] {
            let mut seq = 1000 + p;
            for s in 0..span_s {
                let t = s * SEC + phase + side * 400_000_000;
                // Pair 1 goes silent from 40 to 60 s; pair 2 loses seqs at 30 s (a gap).
                if p == 1 && (40..60).contains(&s) {
                    seq += 1;
                    continue;
                }
                if p == 2 && s == 30 {
                    seq += 3;
                }
                out.push((t, frames::rudp(from, to, seq, Role::Request, &[])));
                // Pair 3 re-sends every tenth request once; pair 4 drops every 7th answer.
                if p == 3 && s % 10 == 5 {
                    out.push((
                        t + 100_000_000,
                        frames::rudp(from, to, seq, Role::Request, &[]),
                    ));
                }
                if !(p == 4 && s % 7 == 3) {
                    let rtt = 200_000 + rng.below(300_000);
                    out.push((t + rtt, frames::rudp(to, from, seq, Role::Response, &[])));
                }
                seq += 1;
            }
        }
    }
    for g in 0..20u32 {
        let pim = nth_v4(10, 2_000_000 + g);
        let sport = 41000 + g as u16;
        let (mut cseq, mut sseq) = (1000u32, 900_000u32);
        let phase = rng.below(2 * SEC);
        for k in 0..span_s / 2 {
            let t = k * 2 * SEC + phase;
            out.push((
                t,
                frames::ged125(pim, base, sport, cseq, Role::Request, k as u32),
            ));
            out.push((
                t + 300_000,
                frames::ged125(pim, base, sport, sseq, Role::Response, k as u32),
            ));
            cseq = cseq.wrapping_add(12);
            sseq = sseq.wrapping_add(12);
        }
    }
    let cucm = ip("10.61.0.1");
    for ph in 0..50u32 {
        let phone = nth_v4(10, 3_000_000 + ph);
        let sport = 50000 + ph as u16;
        let (mut cseq, mut sseq) = (5000u32, 7000u32);
        let phase = rng.below(30 * SEC);
        for k in 0..span_s / 30 {
            let t = k * 30 * SEC + phase;
            out.push((t, frames::sccp(phone, cucm, sport, cseq, Role::Request)));
            out.push((
                t + 2_000_000,
                frames::sccp(phone, cucm, sport, sseq, Role::Response),
            ));
            cseq = cseq.wrapping_add(12);
            sseq = sseq.wrapping_add(12);
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

/// One ordinary frame: TCP (ACKs and data), RTP-like and DNS-like UDP, some IPv6 and
/// VLAN-tagged; never on a heartbeat port.
pub(crate) fn ordinary(rng: &mut Rng) -> Vec<u8> {
    let r = rng.below(100);
    let host = rng.below(4000) as u32;
    let (client, server): (IpAddr, IpAddr) = if r >= 95 {
        (
            format!("fd10::{:x}", host + 1).parse().expect("v6"),
            ip("fd20::1"),
        )
    } else {
        (nth_v4(100, host), nth_v4(172, (host % 50) + 1))
    };
    let vlans: &[u16] = if rng.below(10) == 0 { &[200] } else { &[] };
    let cport = 40000 + rng.below(20000) as u16;
    let seq = rng.next() as u32;
    match r % 20 {
        0..=6 => frames::tcp(server, 443, client, cport, seq, &[], vlans),
        7..=10 => {
            let len = 200 + rng.below(1000) as usize;
            frames::tcp(server, 443, client, cport, seq, &vec![0x17; len], vlans)
        }
        11..=16 => frames::udp(
            client,
            16384 + rng.below(16000) as u16,
            server,
            20000,
            172,
            vlans,
        ),
        _ => frames::udp(
            client,
            cport,
            server,
            53,
            40 + rng.below(40) as usize,
            vlans,
        ),
    }
}

/// Writes a capture of about `frames` frames over `span_s` seconds.
pub fn generate(path: &Path, frames: u64, span_s: u64, rudp_pairs: u32) -> Result<Capture> {
    let hb = heartbeats(span_s, rudp_pairs);
    ensure!(
        (hb.len() as u64) < frames,
        "{} heartbeat frames do not fit in {frames}",
        hb.len()
    );
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut rng = Rng(0x5eed_0002);
    let fill = frames - hb.len() as u64;
    let step = span_s * SEC / fill;
    let mut cap = Capture {
        heartbeat_frames: hb.len() as u64,
        associations: 2 * rudp_pairs as u64 + 20 + 50,
        ..Capture::default()
    };
    let mut hb = hb.into_iter().peekable();
    for i in 0..fill {
        let t = i * step;
        while let Some((ht, f)) = hb.next_if(|(ht, _)| *ht <= t) {
            w.frame(ht, &f)?;
            cap.frames += 1;
            cap.bytes += f.len() as u64;
        }
        let f = ordinary(&mut rng);
        w.frame(t, &f)?;
        cap.frames += 1;
        cap.bytes += f.len() as u64;
    }
    for (ht, f) in hb {
        w.frame(ht, &f)?;
        cap.frames += 1;
        cap.bytes += f.len() as u64;
    }
    w.finish()?;
    Ok(cap)
}

/// Runs a child to completion with stdout and stderr discarded: (wall s, CPU s of the child).
fn timed(cmd: &mut Command) -> Result<(f64, f64)> {
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 on our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed().as_secs_f64();
    ensure!(
        r == pid,
        "wait4 {shown}: {}",
        std::io::Error::last_os_error()
    );
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{shown} failed (status {status})");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok((wall, tv(ru.ru_utime) + tv(ru.ru_stime)))
}

fn analyze_cmd(hbwatch: &Path, pcap: &Path) -> Command {
    let mut c = Command::new(hbwatch);
    c.arg("analyze").arg(pcap).env("RUST_LOG", "warn");
    c
}

fn tshark_cmd(pcap: &Path) -> Command {
    let mut c = Command::new("tshark");
    c.args(["-n", "-r"])
        .arg(pcap)
        .args(["-d", "tcp.port==5000,ged125", "-Y", TSHARK_FILTER]);
    c
}

/// One untimed run of each, to check they see the same heartbeats.
fn cross_check(hbwatch: &Path, pcap: &Path) -> Result<Value> {
    let out = analyze_cmd(hbwatch, pcap)
        .arg("--summary")
        .stdin(Stdio::null())
        .output()?;
    ensure!(out.status.success(), "hbwatch analyze failed");
    let events = out
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // "<file>: N frames, H heartbeats, E events"
    let head = stderr
        .lines()
        .find(|l| l.contains(" heartbeats, "))
        .unwrap_or("");
    let num = |word: &str| -> Option<u64> {
        let words: Vec<&str> = head.split_whitespace().collect();
        let i = words.iter().position(|w| w.trim_end_matches(',') == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    let shark = tshark_cmd(pcap)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()?;
    ensure!(shark.status.success(), "tshark failed");
    let matched = shark
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    Ok(json!({
        "hbwatch_frames": num("frames"),
        "hbwatch_heartbeats": num("heartbeats"),
        "hbwatch_events": events,
        "tshark_matched": matched,
    }))
}

pub struct Options {
    pub trials: usize,
    pub frames: u64,
    pub span_s: u64,
    pub rudp_pairs: u32,
}

pub fn bench(opts: &Options, hbwatch: &Path, dir: &Path) -> Result<Value> {
    ensure!(
        crate::which("tshark"),
        "tshark not found (cargo xtask bootstrap installs it)"
    );
    let pcap = dir.join("offline.pcap");
    let t = Instant::now();
    let cap = generate(&pcap, opts.frames, opts.span_s, opts.rudp_pairs)?;
    eprintln!(
        "bench: wrote {} ({} frames, {} heartbeat frames, {} MB) in {:.1} s",
        pcap.display(),
        cap.frames,
        cap.heartbeat_frames,
        cap.bytes >> 20,
        t.elapsed().as_secs_f64()
    );
    // Page cache warm for both.
    std::io::copy(&mut File::open(&pcap)?, &mut std::io::sink())?;
    let check = cross_check(hbwatch, &pcap)?;
    eprintln!("bench: cross-check {check}");
    let (mut ratio_cpu, mut ratio_wall, mut hb_cpu, mut hb_wall, mut ts_cpu, mut ts_wall) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for trial in 0..opts.trials {
        let run_hb = || timed(&mut analyze_cmd(hbwatch, &pcap));
        let run_ts = || timed(&mut tshark_cmd(&pcap));
        let ((hw, hc), (tw, tc)) = if trial % 2 == 0 {
            let h = run_hb()?;
            (h, run_ts()?)
        } else {
            let t = run_ts()?;
            (run_hb()?, t)
        };
        let n = cap.frames as f64;
        hb_cpu.push(n / hc);
        hb_wall.push(n / hw);
        ts_cpu.push(n / tc);
        ts_wall.push(n / tw);
        ratio_cpu.push(tc / hc);
        ratio_wall.push(tw / hw);
        eprintln!(
            "bench: offline trial {}/{}: hbwatch {:.2} s, tshark {:.2} s (CPU)",
            trial + 1,
            opts.trials,
            hc,
            tc
        );
    }
    // The capture is large and reproducible: do not leave it behind.
    let _ = std::fs::remove_file(&pcap);
    Ok(json!({
        "trials": opts.trials,
        "frames": cap.frames,
        "heartbeat_frames": cap.heartbeat_frames,
        "bytes": cap.bytes,
        "associations": cap.associations,
        "span_s": opts.span_s,
        "tshark_filter": TSHARK_FILTER,
        "check": check,
        "hbwatch_frames_per_cpu_s": median(&hb_cpu),
        "hbwatch_frames_per_wall_s": median(&hb_wall),
        "tshark_frames_per_cpu_s": median(&ts_cpu),
        "tshark_frames_per_wall_s": median(&ts_wall),
        "ratio": median(&ratio_cpu),
        "ratio_wall": median(&ratio_wall),
        "ratios": ratio_cpu,
    }))
}

/// A capture of `assocs` associations: RUDP device pairs (both sides originate), each
/// association `beats` heartbeats 1 s apart, every one answered, spread evenly over the
/// second; in time order, so it is written as it is made.
fn generate_scale(path: &Path, assocs: u64, beats: u32) -> Result<u64> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let pairs = (assocs / 2).max(1);
    let slot = SEC / pairs;
    let mut frames = 0u64;
    for k in 0..beats {
        for p in 0..pairs {
            let t = k as u64 * SEC + p * slot;
            let a = nth_v4(20, 2 * p as u32);
            let b = nth_v4(20, 2 * p as u32 + 1);
            let seq = 1 + k;
            w.frame(t, &frames::rudp(a, b, seq, Role::Request, &[]))?;
            w.frame(t, &frames::rudp(b, a, seq, Role::Response, &[]))?;
            w.frame(t, &frames::rudp(b, a, seq, Role::Request, &[]))?;
            w.frame(t, &frames::rudp(a, b, seq, Role::Response, &[]))?;
            frames += 4;
        }
    }
    w.finish()?;
    Ok(frames)
}

/// Runs a child like [`timed`], also returning its peak resident memory (MiB): VmHWM
/// sampled every 5 ms. Not `ru_maxrss`: a spawned child inherits its parent's peak, and
/// this process holds a 256 MiB ring buffer and more by then.
fn timed_rss(cmd: &mut Command) -> Result<(f64, f64, f64)> {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let start = Instant::now();
    let pid = child.id() as libc::pid_t;
    let status_path = format!("/proc/{pid}/status");
    let mut status = 0;
    // SAFETY: zeroed rusage is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut hwm_kib = 0u64;
    loop {
        if let Some(kib) = std::fs::read_to_string(&status_path).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        }) {
            hwm_kib = hwm_kib.max(kib);
        }
        // SAFETY: wait4 on our own child, without blocking.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        ensure!(r >= 0, "wait4 {shown}: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let wall = start.elapsed().as_secs_f64();
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{shown} failed (status {status})");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok((
        wall,
        tv(ru.ru_utime) + tv(ru.ru_stime),
        hwm_kib as f64 / 1024.0,
    ))
}

/// (e) `hbwatch analyze` with many associations: frames/s at each size against the same
/// generator at `base` associations in the same trial, and peak memory.
pub fn scale(
    hbwatch: &Path,
    dir: &Path,
    trials: usize,
    sizes: &[u64],
    keep: bool,
) -> Result<Value> {
    // ~1.2 M frames for the baseline and 100k (beats scaled), 3 beats for larger sizes.
    const BASE: u64 = 1000;
    let beats = |n: u64| (1_200_000 / (2 * n)).clamp(3, 600) as u32;
    let base_path = dir.join("scale-base.pcap");
    let base_frames = generate_scale(&base_path, BASE, beats(BASE))?;
    let mut out = Vec::new();
    for &n in sizes {
        let path = dir.join(format!("scale-{n}.pcap"));
        let frames = generate_scale(&path, n, beats(n))?;
        std::io::copy(&mut File::open(&path)?, &mut std::io::sink())?;
        std::io::copy(&mut File::open(&base_path)?, &mut std::io::sink())?;
        let (mut ratio, mut rate, mut base_rate, mut rss, mut base_rss) =
            (vec![], vec![], vec![], vec![], vec![]);
        for trial in 0..trials {
            let run = |p: &Path| timed_rss(analyze_cmd(hbwatch, p).arg("--no-summary-events"));
            let ((_, bc, bm), (_, c, m)) = if trial % 2 == 0 {
                let b = run(&base_path)?;
                (b, run(&path)?)
            } else {
                let s = run(&path)?;
                (run(&base_path)?, s)
            };
            let (r, br) = (frames as f64 / c, base_frames as f64 / bc);
            rate.push(r);
            base_rate.push(br);
            ratio.push(r / br);
            rss.push(m);
            base_rss.push(bm);
        }
        eprintln!("bench: scale {n} associations done");
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
        out.push(json!({
            "associations": n,
            "frames": frames,
            "heartbeats_each": beats(n),
            "frames_per_cpu_s": median(&rate),
            "baseline_frames_per_cpu_s": median(&base_rate),
            "ratio": median(&ratio),
            "ratios": ratio,
            "peak_rss_mib": median(&rss),
            "baseline_peak_rss_mib": median(&base_rss),
        }));
    }
    if !keep {
        let _ = std::fs::remove_file(&base_path);
    }
    Ok(json!({
        "trials": trials,
        "baseline_associations": BASE,
        "baseline_frames": base_frames,
        "kernel_flow_table": crate::xdp::FLOW_TABLE,
        "sizes": out,
    }))
}
