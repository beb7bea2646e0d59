//! Where generated frames go: a pcap (microsecond or nanosecond) or pcapng file, or an
//! interface in real time through an AF_PACKET socket, paced by the virtual timestamps.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hbwatch_pcap::{Format, Writer};

use super::truth::{Generated, Truth};
use super::TimedFrame;

/// Counts frames by label as they go out.
fn count(stats: &mut Generated, f: &TimedFrame) {
    stats.frames += 1;
    // `noise.*`: the quiet scenario's ordinary traffic on heartbeat ports.
    if f.label == "ordinary" || f.label.starts_with("noise.") {
        stats.ordinary_frames += 1;
    } else {
        stats.heartbeat_frames += 1;
    }
    *stats.by_message.entry(f.label.to_string()).or_default() += 1;
}

/// Writes `frames` (time order) as a capture to `w`; returns what was written.
pub fn write<W: Write>(
    w: W,
    format: Format,
    frames: impl IntoIterator<Item = TimedFrame>,
) -> Result<Generated> {
    let mut stats = Generated::default();
    let mut pw = Writer::new(w, format, "hbgen").context("writing the capture header")?;
    for f in frames {
        pw.write(f.ts_ns, &f.data).context("writing a packet")?;
        count(&mut stats, &f);
    }
    pw.into_inner().flush()?;
    Ok(stats)
}

/// [`write`] to a file.
pub fn write_file(
    path: &Path,
    format: Format,
    frames: impl IntoIterator<Item = TimedFrame>,
) -> Result<Generated> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    write(BufWriter::with_capacity(1 << 20, file), format, frames)
        .with_context(|| format!("writing {}", path.display()))
}

/// The truth sidecar as pretty JSON.
pub fn write_truth(path: &Path, truth: &Truth) -> Result<()> {
    let text = serde_json::to_string_pretty(truth)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// `<capture>.truth.json`.
pub fn truth_path(capture: &Path) -> std::path::PathBuf {
    let mut s = capture.as_os_str().to_owned();
    s.push(".truth.json");
    s.into()
}

/// A send-only AF_PACKET socket bound to one interface.
pub struct PacketSocket {
    fd: i32,
    addr: libc::sockaddr_ll,
    iface: String,
}

impl PacketSocket {
    /// Opens it on `iface` (in the calling thread's network namespace). Needs CAP_NET_RAW.
    pub fn open(iface: &str) -> Result<PacketSocket> {
        let name = std::ffi::CString::new(iface).context("interface name")?;
        // SAFETY: plain libc call on a C string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            bail!("interface {iface:?}: {}", std::io::Error::last_os_error());
        }
        // Protocol 0: this socket only sends, it never receives a copy of the traffic.
        // SAFETY: plain libc call; the fd is owned (closed on drop).
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            bail!(
                "AF_PACKET socket (needs root or CAP_NET_RAW): {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: sockaddr_ll is plain data; zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(PacketSocket {
            fd,
            addr,
            iface: iface.to_string(),
        })
    }

    /// Sends one Ethernet frame as is ([`PacketSocket::send_batch`] of one).
    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.send_batch(&[frame])
    }

    /// Sends `frames` (Ethernet frames as they are) in order with as few system calls as
    /// `sendmmsg` allows (one per [`BATCH`]). A full device queue (ENOBUFS, EAGAIN) is
    /// transient under a storm: wait a little and try again, for up to a second. At a
    /// crowd's 200,000 frames a second, a call per frame was a fifth of the sender's CPU
    /// (entry and return, socket and device lookup; `perf`, 2-core VM).
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> Result<()> {
        // SOCK_RAW sends the frame as is: the address only names the interface.
        let addr = (&self.addr as *const libc::sockaddr_ll).cast_mut().cast();
        let mut done = 0;
        let mut give_up = Instant::now() + Duration::from_secs(1);
        while done < frames.len() {
            let chunk = &frames[done..frames.len().min(done + BATCH)];
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BATCH];
            // SAFETY: mmsghdr is plain data; zero is a valid start.
            let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            for (i, f) in chunk.iter().enumerate() {
                iov[i] = libc::iovec {
                    iov_base: f.as_ptr().cast_mut().cast(),
                    iov_len: f.len(),
                };
                msgs[i].msg_hdr.msg_name = addr;
                msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                msgs[i].msg_hdr.msg_iov = &mut iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `chunk.len()` headers, each naming one live buffer and the address.
            let n = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), chunk.len() as u32, 0) };
            if n > 0 {
                // Whole frames or nothing: a raw socket does not send part of one.
                done += n as usize;
                give_up = Instant::now() + Duration::from_secs(1);
                continue;
            }
            let err = std::io::Error::last_os_error();
            let busy = matches!(
                err.raw_os_error(),
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
            );
            if !busy || Instant::now() >= give_up {
                bail!(
                    "sending a {}-byte frame on {}: {err}",
                    chunk[0].len(),
                    self.iface
                );
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }
}

/// Frames sent in one `sendmmsg` at most.
pub const BATCH: usize = 64;

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: closing the fd this socket owns.
        unsafe { libc::close(self.fd) };
    }
}

/// Sends `frames` out of `iface` through AF_PACKET, spaced as their timestamps say
/// (`speed` 2.0 = twice as fast). Needs CAP_NET_RAW.
pub fn send(
    iface: &str,
    frames: impl IntoIterator<Item = TimedFrame>,
    speed: f64,
) -> Result<Generated> {
    let mut stats = Generated::default();
    // Behind = how much later than its timestamp (from the first frame's) a frame left.
    let mut first: Option<(u64, u64)> = None;
    let mut behind = 0u64;
    send_paced(iface, frames, speed, &|| true, &mut |f, wall| {
        let (ts0, wall0) = *first.get_or_insert((f.ts_ns, wall));
        let due = ((f.ts_ns.saturating_sub(ts0)) as f64 / speed) as u64;
        behind = behind.max(wall.saturating_sub(wall0).saturating_sub(due));
        count(&mut stats, f)
    })?;
    stats.max_behind_ms = Some(behind / 1_000_000);
    Ok(stats)
}

/// [`send`] that stops when `keep_going` says so and reports each frame sent with the
/// wall-clock time it left (ns since the epoch).
pub fn send_paced(
    iface: &str,
    frames: impl IntoIterator<Item = TimedFrame>,
    speed: f64,
    keep_going: &dyn Fn() -> bool,
    sent: &mut dyn FnMut(&TimedFrame, u64),
) -> Result<()> {
    if !(speed.is_finite() && speed > 0.0) {
        bail!("--speed {speed}: must be a positive number");
    }
    let mut sock = PacketSocket::open(iface)?;
    let mut frames = frames.into_iter().peekable();
    let Some(first) = frames.peek().map(|f| f.ts_ns) else {
        return Ok(());
    };
    let t0 = Instant::now();
    let due = |f: &TimedFrame| {
        t0 + Duration::from_nanos(((f.ts_ns.saturating_sub(first)) as f64 / speed) as u64)
    };
    let mut batch: Vec<TimedFrame> = Vec::with_capacity(BATCH);
    while let Some(f) = frames.next() {
        let due_at = due(&f);
        // Sleep in short steps so a stop request is seen promptly.
        let mut now = Instant::now();
        loop {
            if !keep_going() {
                return Ok(());
            }
            if due_at <= now {
                break;
            }
            std::thread::sleep((due_at - now).min(Duration::from_millis(50)));
            now = Instant::now();
        }
        // With it, every frame already due (a crowd's frames are microseconds apart).
        batch.push(f);
        while batch.len() < BATCH && frames.peek().is_some_and(|n| due(n) <= now) {
            batch.extend(frames.next());
        }
        let data: Vec<&[u8]> = batch.iter().map(|f| f.data.as_slice()).collect();
        sock.send_batch(&data)?;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for f in batch.drain(..) {
            sent(&f, wall);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_counted_by_label() {
        let frames =
            [("rudp.request", 60), ("ordinary", 70), ("noise.sip", 80)].map(|(label, n)| {
                TimedFrame {
                    ts_ns: 1_795_341_600_000_000_000,
                    data: vec![0; n],
                    label,
                }
            });
        let stats = write(Vec::new(), Format::PcapNg, frames).unwrap();
        assert_eq!(
            (stats.frames, stats.heartbeat_frames, stats.ordinary_frames),
            (3, 1, 2)
        );
        assert_eq!(stats.by_message["rudp.request"], 1);
    }
}
