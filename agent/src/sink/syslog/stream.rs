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
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use tracing::{debug, info, warn};

use super::queue::Queue;

/// Bytes written per batch (one `write`, or TLS records of it).
const BATCH_BYTES: usize = 256 << 10;
/// How often unacknowledged frames are looked at again while nothing new comes.
const ACK_POLL: Duration = Duration::from_millis(2);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long a new connection must stay up before what it carried counts as delivered.
pub const PROBATION: Duration = Duration::from_millis(500);

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
    let mut health = Health::new(&t);
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::open(&t) {
                Ok(c) => {
                    q.set_socket(c.sock.inner.try_clone().ok());
                    conn.insert(c)
                }
                Err(e) => {
                    if !health.failed(&q, &e.to_string()) {
                        return;
                    }
                    continue;
                }
            },
        };

        // Acknowledged frames settle once the connection is past its probation: a
        // receiver that refuses a client (TLS client certificate, allowed senders) takes
        // the bytes into its TCP buffer before it hangs up.
        let confirmed = c.opened.elapsed() >= PROBATION;
        if confirmed {
            health.confirmed();
        }
        if confirmed && !unacked.is_empty() {
            if let Ok(acked) = c.acked() {
                let mut n = 0;
                while unacked.front().is_some_and(|(end, _)| *end <= acked) {
                    unacked.pop_front();
                    n += 1;
                }
                q.delivered(n);
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
        // A peer that hung up is found before writing to it (or while waiting for its
        // acknowledgements): what it did not take goes to the next connection.
        if !c.alive() {
            let why = match c.peer_alert.take() {
                Some(alert) => format!("the receiver ended the connection: {alert}"),
                None if c.tls.is_some() && !confirmed => format!(
                    "the receiver closed the connection {} ms after the TLS handshake \
                     (receivers that require a client certificate do: see cert= and key=)",
                    c.opened.elapsed().as_millis()
                ),
                None => "connection closed by the receiver".to_string(),
            };
            broken(&q, &mut conn, &mut unacked, &mut batch);
            if !health.failed(&q, &why) {
                return;
            }
            continue;
        }
        if batch.is_empty() {
            continue;
        }
        wbuf.clear();
        for f in &batch {
            wbuf.extend_from_slice(f);
        }
        match c.write(&wbuf) {
            Ok(end) => unacked.extend(batch.drain(..).map(|f| (end, f))),
            Err(e) => {
                broken(&q, &mut conn, &mut unacked, &mut batch);
                if !health.failed(&q, &format!("write failed: {e}")) {
                    return;
                }
            }
        }
    }
}

/// Connection failures: logged when a run of them starts and when it ends, with a
/// doubling backoff in between.
struct Health {
    name: String,
    backoff: Duration,
    max: Duration,
    down_since: Option<Instant>,
}

impl Health {
    fn new(t: &Target) -> Health {
        Health {
            name: t.name.clone(),
            backoff: FIRST_BACKOFF,
            max: t.reconnect_max,
            down_since: None,
        }
    }

    /// Counts and logs a failure, then waits the backoff; `false` once the sink closed.
    fn failed(&mut self, q: &Queue, why: &str) -> bool {
        q.retried();
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            warn!(
                "{}: {why}; events are queued, retrying (backoff up to {:?})",
                self.name, self.max
            );
        } else {
            debug!("{}: {why}", self.name);
        }
        let ok = q.sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(self.max);
        ok
    }

    /// A connection is past its probation.
    fn confirmed(&mut self) {
        if let Some(since) = self.down_since.take() {
            info!(
                "{}: connected after {:.1}s of failures",
                self.name,
                since.elapsed().as_secs_f64()
            );
        }
        self.backoff = FIRST_BACKOFF;
    }
}

/// Drops the connection and puts back every frame not settled.
fn broken(
    q: &Queue,
    conn: &mut Option<Conn>,
    unacked: &mut VecDeque<(u64, Vec<u8>)>,
    batch: &mut Vec<Vec<u8>>,
) {
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
    opened: Instant,
    /// The TLS alert the receiver ended the connection with, if any.
    peer_alert: Option<String>,
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
        Ok(Conn {
            sock,
            tls,
            opened: Instant::now(),
            peer_alert: None,
        })
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
                        Err(e) => {
                            self.peer_alert = Some(e.to_string());
                            return false;
                        }
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
