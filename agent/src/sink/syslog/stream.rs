//! TCP and TLS senders: one thread per sink, octet-counted frames written in batches,
//! each frame settled only once the peer's TCP has acknowledged its last byte.
//!
//! Plain syslog over TCP has no application acknowledgement, so "written" is not
//! "received": a connection that breaks loses whatever sat in the socket buffers. The
//! sender therefore keeps every frame until the kernel reports (`TIOCOUTQ`: bytes sent
//! and not yet acknowledged) that the peer's TCP took all of it. When the connection
//! breaks, the frames not acknowledged go back to the head of the queue and are sent
//! again on the next connection: nothing queued is lost across a reconnect, and a frame
//! can arrive twice only if the peer took it but its acknowledgement was lost with the
//! connection.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tracing::{info, warn};

use super::queue::Queue;

/// Bytes written per batch (one `write`, or TLS records of it).
const BATCH_BYTES: usize = 256 << 10;
/// How often unacknowledged frames are looked at again while nothing new comes.
const ACK_POLL: Duration = Duration::from_millis(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where and how to connect.
pub struct Target {
    /// `syslog+tcp://host:port`, for logs.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
    pub reconnect_max: Duration,
    /// TLS: the client configuration and the name to verify the server's certificate for.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// The sender thread's loop.
pub fn run(q: Arc<Queue>, t: Target) {
    let mut conn: Option<Conn> = None;
    // Frames written on this connection, with the stream offset of their last byte.
    let mut unacked: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut wbuf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + 4096);
    let mut backoff = FIRST_BACKOFF;
    // A run of failures is logged when it starts and when it ends.
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&t) {
                Ok(c) => {
                    q.set_socket(c.sock.inner.try_clone().ok());
                    if let Some(since) = down_since.take() {
                        info!(
                            "{}: connected after {:.1}s of failures",
                            t.name,
                            since.elapsed().as_secs_f64()
                        );
                    }
                    conn.insert(c)
                }
                Err(e) => {
                    q.retried();
                    if down_since.is_none() {
                        down_since = Some(std::time::Instant::now());
                        warn!(
                            "{}: {e}; events are queued, retrying (backoff up to {:?})",
                            t.name, t.reconnect_max
                        );
                    }
                    if !q.sleep(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(t.reconnect_max);
                    continue;
                }
            },
        };

        if !unacked.is_empty() {
            if let Ok(acked) = c.acked() {
                let mut n = 0;
                while unacked.front().is_some_and(|(end, _)| *end <= acked) {
                    unacked.pop_front();
                    n += 1;
                }
                if n > 0 {
                    q.delivered(n);
                    backoff = FIRST_BACKOFF;
                }
            }
        }

        let wait = if unacked.is_empty() {
            None
        } else {
            Some(ACK_POLL)
        };
        if !q.take(&mut batch, BATCH_BYTES, wait) {
            // Closed: everything was acknowledged (or given up on).
            if let Some(c) = conn.take() {
                c.finish();
            }
            return;
        }
        if batch.is_empty() {
            // Only acknowledgements to wait for; a peer that closed meanwhile is found
            // here too, so what it did not take is sent again elsewhere.
            if !c.alive() {
                broken(
                    &q,
                    &t,
                    &mut conn,
                    &mut unacked,
                    &mut batch,
                    "connection closed by the peer",
                );
            }
            continue;
        }
        if !c.alive() {
            broken(
                &q,
                &t,
                &mut conn,
                &mut unacked,
                &mut batch,
                "connection closed by the peer",
            );
            continue;
        }
        wbuf.clear();
        for f in &batch {
            wbuf.extend_from_slice(f);
        }
        match c.write(&wbuf) {
            Ok(end) => unacked.extend(batch.drain(..).map(|f| (end, f))),
            Err(e) => {
                let why = format!("write failed: {e}");
                broken(&q, &t, &mut conn, &mut unacked, &mut batch, &why);
                if !q.sleep(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(t.reconnect_max);
            }
        }
    }
}

/// Drops the connection and puts back every frame the peer did not acknowledge.
fn broken(
    q: &Queue,
    t: &Target,
    conn: &mut Option<Conn>,
    unacked: &mut VecDeque<(u64, Vec<u8>)>,
    batch: &mut Vec<Vec<u8>>,
    why: &str,
) {
    q.retried();
    let n = unacked.len() + batch.len();
    warn!("{}: {why}; {n} events to send again", t.name);
    // The queue's handle on the socket goes first: the reset happens when the last one
    // is closed.
    q.set_socket(None);
    if let Some(c) = conn.take() {
        c.abort();
    }
    let frames: Vec<Vec<u8>> = unacked
        .drain(..)
        .map(|(_, f)| f)
        .chain(batch.drain(..))
        .collect();
    q.requeue(frames.into_iter());
}

/// A socket that counts the bytes written to it (the stream offset).
struct Counted {
    inner: TcpStream,
    written: u64,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct Conn {
    sock: Counted,
    tls: Option<ClientConnection>,
}

impl Conn {
    fn open(t: &Target) -> io::Result<Conn> {
        let addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {}: {e}", t.host)))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, t.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = io::Error::new(e.kind(), format!("cannot connect to {a}: {e}")),
            }
        }
        let inner = stream.ok_or(last)?;
        inner.set_nodelay(true)?;
        inner.set_write_timeout(Some(t.timeout))?;
        inner.set_read_timeout(Some(t.timeout))?;
        let mut sock = Counted { inner, written: 0 };
        let tls = match &t.tls {
            None => None,
            Some((config, name)) => {
                let mut tls = ClientConnection::new(config.clone(), name.clone())
                    .map_err(io::Error::other)?;
                while tls.is_handshaking() {
                    tls.complete_io(&mut sock)
                        .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
                }
                Some(tls)
            }
        };
        Ok(Conn { sock, tls })
    }

    /// Writes all of `buf`; the stream offset after it.
    fn write(&mut self, buf: &[u8]) -> io::Result<u64> {
        match &mut self.tls {
            None => self.sock.write_all(buf)?,
            Some(tls) => {
                for chunk in buf.chunks(16 << 10) {
                    tls.writer().write_all(chunk)?;
                    while tls.wants_write() {
                        tls.write_tls(&mut self.sock)?;
                    }
                }
            }
        }
        Ok(self.sock.written)
    }

    /// Stream offset up to which the peer acknowledged.
    fn acked(&self) -> io::Result<u64> {
        let mut outq: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int through the pointer, which is valid.
        let r = unsafe { libc::ioctl(self.sock.inner.as_raw_fd(), libc::TIOCOUTQ, &mut outq) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.sock.written.saturating_sub(outq.max(0) as u64))
    }

    /// False when the peer closed or reset the connection (syslog receivers send
    /// nothing; TLS session tickets and alerts are read and handled here).
    fn alive(&mut self) -> bool {
        if self.sock.inner.set_nonblocking(true).is_err() {
            return false;
        }
        let alive = self.poll_peer();
        self.sock.inner.set_nonblocking(false).is_ok() && alive
    }

    fn poll_peer(&mut self) -> bool {
        loop {
            match &mut self.tls {
                None => {
                    let mut b = [0u8; 512];
                    match self.sock.inner.read(&mut b) {
                        Ok(0) => return false,
                        Ok(_) => continue,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => return false,
                    }
                }
                Some(tls) => match tls.read_tls(&mut self.sock) {
                    Ok(0) => return false,
                    Ok(_) => match tls.process_new_packets() {
                        Ok(st) if st.peer_has_closed() => return false,
                        Ok(st) => {
                            let mut sink = vec![0u8; st.plaintext_bytes_to_read()];
                            let _ = tls.reader().read(&mut sink);
                        }
                        Err(_) => return false,
                    },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return false,
                },
            }
        }
    }

    /// Closes in order: TLS close_notify, then FIN.
    fn finish(mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(&mut self.sock).is_err() {
                    break;
                }
            }
        }
        let _ = self.sock.inner.shutdown(Shutdown::Write);
    }

    /// Closes with a reset: unsent bytes are discarded, not delivered later behind the
    /// copies sent on the next connection.
    fn abort(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the option value is a valid `linger` of the size given.
        unsafe {
            libc::setsockopt(
                self.sock.inner.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
}
