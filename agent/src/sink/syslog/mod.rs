//! `syslog+udp://HOST[:514]`, `syslog+tcp://HOST[:514]`, `syslog+tls://HOST[:6514]`: every
//! event as one syslog message whose MSG is the event's JSON line (without its newline).
//!
//! Header (RFC 5424 by default):
//! `<PRI>1 @timestamp HOSTNAME hbwatch PID event.action [meta sequenceId="N"] {"@timestamp":...}`
//! - PRI = facility * 8 + severity; severity from `log.level`: info 6, warning 4,
//!   error 3, critical 2.
//! - TIMESTAMP is the event's `@timestamp` (UTC, microseconds), HOSTNAME the agent's
//!   hostname (`--hostname`), APP-NAME `hbwatch`, PROCID the agent's pid, MSGID the
//!   event's `event.action`, STRUCTURED-DATA `[meta sequenceId="N"]` (RFC 5424 7.3.1:
//!   1, 2, ... per sink, wrapping from 2147483647 to 1; `sequence=off`: `-`), no BOM
//!   before MSG. Every event takes the next number when it is formatted, so a gap at
//!   the receiver is an event lost on the way (UDP, a full queue, over `max_message`),
//!   and a repeated number a frame sent again after a reconnect.
//! - `format=rfc3164`: `<PRI>Mmm dd hh:mm:ss HOSTNAME hbwatch[PID]: {...}` with the
//!   event's time in UTC (RFC 3164 has no year and no zone; MSGID is not carried).
//!
//! Transports:
//! - UDP: one datagram per event, no framing. Messages larger than `max_message` (at most
//!   65507 bytes, the IPv4 UDP limit) are dropped, counted and logged. Datagrams are paced
//!   (`rate`) so that a receiver's socket buffer survives bursts; "delivered" means handed
//!   to the kernel (UDP has no acknowledgement).
//! - TCP and TLS: octet-counting framing (`LEN SP MSG`, RFC 6587 3.4.1 / RFC 5425), or
//!   with `framing=newline` one message per line (`MSG LF`, RFC 6587 3.4.2) for
//!   receivers without octet counting (MSG is a JSON line: it has no raw newline). A
//!   frame counts as delivered once the peer's TCP acknowledged it and the connection has
//!   been up for 500 ms; frames not counted yet when a connection breaks are sent again
//!   on the next one (see `stream`), so a receiver that restarts loses nothing that was
//!   queued (at-least-once: a few may arrive twice).
//! - Each sink has its own sender thread and a bounded queue: `send` never waits for the
//!   network. A full queue drops the new event (counted, reported as
//!   `agent.events_lost`). Reconnects back off from 100 ms, doubling up to
//!   `reconnect_max`. On exit the agent waits `--flush-timeout` for the queue to drain;
//!   what is left then counts as dropped.
//!
//! | option | transports | default | meaning |
//! |---|---|---|---|
//! | `format` | all | `rfc5424` | `rfc5424` or `rfc3164` |
//! | `facility` | all | `local0` | facility name (`daemon`, `local0`..`local7`, ...) or 0-23 |
//! | `framing` | tcp, tls | `octet` | `octet` (`LEN SP MSG`) or `newline` (`MSG LF`) |
//! | `sequence` | all | `on` (rfc5424), `off` (rfc3164) | `[meta sequenceId="N"]` structured data |
//! | `queue` | all | `10000` | events held in memory while the receiver is slow or away |
//! | `max_message` | all | `65507` (udp), `1MiB` | larger messages are dropped and counted |
//! | `rate` | udp | `5000` | datagrams per second (bursts of at most 32); `0`: unpaced |
//! | `timeout` | tcp, tls | `10s` | connect, TLS handshake, and a write that makes no progress |
//! | `reconnect_max` | all | `10s` | longest wait between connection attempts |
//! | `ca` | tls | system roots | PEM file of the CA(s) that signed the receiver's certificate |
//! | `server_name` | tls | `HOST` | name (or IP) the receiver's certificate must be valid for |
//! | `cert`, `key` | tls | none | PEM client certificate chain and key, for receivers that ask for one |
//!
//! docs/outputs/syslog-and-file.md has the same with an rsyslog receiving configuration
//! and measured rates.

mod format;
mod queue;
mod stream;
mod udp;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tracing::warn;

pub use format::{parse_facility, severity, Format, Header, FACILITIES};
pub use udp::Pacer;

use super::{parse_duration, parse_size, query_pairs, SinkContext};
use crate::event::Event;
use crate::sink::{Sink, SinkStats};
use queue::Queue;

/// How TCP and TLS frames are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `LEN SP MSG` (RFC 6587 3.4.1, RFC 5425): the default.
    Octet,
    /// `MSG LF` (RFC 6587 3.4.2), for receivers without octet counting.
    Newline,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// The largest UDP payload over IPv4.
pub const UDP_MAX: usize = 65_507;
const STREAM_MAX: usize = 1 << 20;
/// Receivers must take at least 480 bytes (RFC 5424 6.1); less would drop most events.
const MIN_MESSAGE: usize = 480;
pub const DEFAULT_RATE: u32 = 5000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    pub transport: Transport,
    /// Domain name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `syslog+udp://host:port` (no options): the sink's name.
    pub name: String,
    pub format: Format,
    pub facility: u8,
    /// TCP and TLS only (UDP has one message per datagram).
    pub framing: Framing,
    /// `[meta sequenceId="N"]` in RFC 5424 messages.
    pub sequence: bool,
    pub queue: usize,
    pub max_message: usize,
    pub rate: u32,
    pub timeout: Duration,
    pub reconnect_max: Duration,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

const KNOWN: &[&str] = &[
    "format",
    "facility",
    "framing",
    "sequence",
    "queue",
    "max_message",
    "rate",
    "timeout",
    "reconnect_max",
    "ca",
    "server_name",
    "cert",
    "key",
];

impl SyslogOptions {
    pub fn parse(url: &url::Url) -> Result<SyslogOptions, String> {
        let (transport, default_port) = match url.scheme() {
            "syslog+udp" => (Transport::Udp, 514),
            "syslog+tcp" => (Transport::Tcp, 514),
            "syslog+tls" => (Transport::Tls, 6514),
            other => return Err(format!("not a syslog scheme: {other:?}")),
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err("no host (syslog+udp://HOST:PORT)".into()),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("syslog URLs take no user or password".into());
        }
        if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
            return Err(format!(
                "unexpected path {:?}: options go in the query (?format=rfc3164)",
                url.path()
            ));
        }
        let port = url.port().unwrap_or(default_port);
        if port == 0 {
            return Err("port 0".into());
        }
        let name = format!(
            "{}://{}:{port}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        );
        let mut o = SyslogOptions {
            transport,
            host,
            port,
            name,
            format: Format::Rfc5424,
            facility: 16,
            framing: Framing::Octet,
            sequence: true,
            queue: 10_000,
            max_message: if transport == Transport::Udp {
                UDP_MAX
            } else {
                STREAM_MAX
            },
            rate: DEFAULT_RATE,
            timeout: Duration::from_secs(10),
            reconnect_max: Duration::from_secs(10),
            ca: None,
            server_name: None,
            cert: None,
            key: None,
        };
        let pairs = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()));
        let mut seen: Vec<String> = Vec::new();
        for (k, v) in query_pairs(pairs, KNOWN)? {
            if seen.contains(&k) {
                return Err(format!("option {k:?} given twice"));
            }
            let only = |t: &[Transport], names: &str| {
                if t.contains(&transport) {
                    Ok(())
                } else {
                    Err(format!("option {k:?} applies to {names} only"))
                }
            };
            let bad = |e: String| format!("{k}: {e}");
            match k.as_str() {
                "format" => {
                    o.format = match v.to_ascii_lowercase().as_str() {
                        "rfc5424" | "5424" => Format::Rfc5424,
                        "rfc3164" | "3164" | "bsd" => Format::Rfc3164,
                        _ => return Err(format!("format: {v:?} (use rfc5424 or rfc3164)")),
                    }
                }
                "facility" => o.facility = parse_facility(&v).map_err(bad)?,
                "framing" => {
                    only(
                        &[Transport::Tcp, Transport::Tls],
                        "syslog+tcp and syslog+tls",
                    )?;
                    o.framing = match v.to_ascii_lowercase().as_str() {
                        "octet" => Framing::Octet,
                        "newline" | "lf" => Framing::Newline,
                        _ => return Err(format!("framing: {v:?} (use octet or newline)")),
                    }
                }
                "sequence" => {
                    o.sequence = match v.to_ascii_lowercase().as_str() {
                        "on" | "true" | "yes" | "1" => true,
                        "off" | "false" | "no" | "0" => false,
                        _ => return Err(format!("sequence: {v:?} (use on or off)")),
                    }
                }
                "queue" => {
                    o.queue = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| (1..=10_000_000).contains(n))
                        .ok_or_else(|| {
                            format!("queue: {v:?} (a number of events, 1 to 10000000)")
                        })?
                }
                "max_message" => {
                    let limit = if transport == Transport::Udp {
                        UDP_MAX
                    } else {
                        64 << 20
                    };
                    let n = parse_size(&v).map_err(bad)?;
                    if n < MIN_MESSAGE as u64 || n > limit as u64 {
                        return Err(format!(
                            "max_message: {v:?} (from {MIN_MESSAGE} to {limit} bytes for {})",
                            url.scheme()
                        ));
                    }
                    o.max_message = n as usize;
                }
                "rate" => {
                    only(&[Transport::Udp], "syslog+udp")?;
                    o.rate = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("rate: {v:?} (datagrams per second; 0: unpaced)"))?
                }
                "timeout" => {
                    only(
                        &[Transport::Tcp, Transport::Tls],
                        "syslog+tcp and syslog+tls",
                    )?;
                    o.timeout = parse_duration(&v).map_err(bad)?;
                    if o.timeout.is_zero() {
                        return Err("timeout: must be more than 0".into());
                    }
                }
                "reconnect_max" => {
                    o.reconnect_max = parse_duration(&v).map_err(bad)?;
                    if o.reconnect_max < Duration::from_millis(100) {
                        return Err("reconnect_max: at least 100ms".into());
                    }
                }
                "ca" | "cert" | "key" => {
                    only(&[Transport::Tls], "syslog+tls")?;
                    if v.is_empty() {
                        return Err(format!("{k}: empty path"));
                    }
                    let p = Some(PathBuf::from(&v));
                    match k.as_str() {
                        "ca" => o.ca = p,
                        "cert" => o.cert = p,
                        _ => o.key = p,
                    }
                }
                "server_name" => {
                    only(&[Transport::Tls], "syslog+tls")?;
                    ServerName::try_from(v.clone())
                        .map_err(|_| format!("server_name: {v:?} is not a DNS name or IP"))?;
                    o.server_name = Some(v.clone());
                }
                _ => unreachable!("query_pairs checked the key"),
            }
            seen.push(k);
        }
        if o.cert.is_some() != o.key.is_some() {
            return Err("cert and key go together".into());
        }
        if o.format == Format::Rfc3164 {
            if seen.iter().any(|k| k == "sequence") && o.sequence {
                return Err("sequence=on needs format=rfc5424 (RFC 3164 has no \
                            structured data)"
                    .into());
            }
            o.sequence = false;
        }
        Ok(o)
    }
}

pub fn open(opts: &SyslogOptions, ctx: &SinkContext) -> anyhow::Result<Box<dyn Sink + Send>> {
    Ok(Box::new(SyslogSink::open(opts, ctx)?))
}

/// Events to a syslog receiver through a queue and a sender thread.
pub struct SyslogSink {
    name: String,
    header: Header,
    framing: Option<Framing>,
    /// The next sequenceId (None: sequence=off).
    sequence: Option<u32>,
    max_message: usize,
    queue: Arc<Queue>,
    sender: Option<JoinHandle<()>>,
    /// The event's line (reused).
    json: Vec<u8>,
    /// Logged once per run of refusals.
    full: bool,
    oversize_logged: bool,
}

impl SyslogSink {
    pub fn open(o: &SyslogOptions, ctx: &SinkContext) -> anyhow::Result<SyslogSink> {
        let queue = Arc::new(Queue::new(o.queue));
        let q = queue.clone();
        let sender = match o.transport {
            Transport::Udp => {
                let t = udp::Target {
                    name: o.name.clone(),
                    host: o.host.clone(),
                    port: o.port,
                    rate: o.rate,
                    reconnect_max: o.reconnect_max,
                };
                std::thread::Builder::new()
                    .name("syslog-udp".into())
                    .spawn(move || udp::run(q, t))?
            }
            Transport::Tcp | Transport::Tls => {
                let tls = match o.transport {
                    Transport::Tls => {
                        Some(tls_config(o).map_err(|e| anyhow::anyhow!("{}: {e}", o.name))?)
                    }
                    _ => None,
                };
                let t = stream::Target {
                    name: o.name.clone(),
                    host: o.host.clone(),
                    port: o.port,
                    timeout: o.timeout,
                    reconnect_max: o.reconnect_max,
                    tls,
                };
                std::thread::Builder::new()
                    .name("syslog-stream".into())
                    .spawn(move || stream::run(q, t))?
            }
        };
        Ok(SyslogSink {
            name: o.name.clone(),
            header: Header::new(
                o.format,
                o.facility,
                &ctx.hostname,
                &ctx.job,
                std::process::id(),
            ),
            framing: (o.transport != Transport::Udp).then_some(o.framing),
            sequence: o.sequence.then_some(1),
            max_message: o.max_message,
            queue,
            sender: Some(sender),
            json: Vec::with_capacity(1024),
            full: false,
            oversize_logged: false,
        })
    }

    /// The syslog message of one event (header and JSON, no framing). Takes the next
    /// sequenceId: every event gets one whether it is then queued or dropped, so a
    /// receiver sees a gap for each one lost anywhere on the way.
    pub fn message(&mut self, ev: &Event) -> Vec<u8> {
        self.json.clear();
        ev.write_line(&mut self.json);
        self.json.pop(); // the newline
        let mut msg = Vec::with_capacity(self.json.len() + 128);
        let seq = self.sequence;
        if let Some(n) = &mut self.sequence {
            *n = format::next_sequence(*n);
        }
        self.header.write(
            &mut msg,
            ev.log.level,
            &ev.timestamp,
            ev.event.action.name(),
            seq,
        );
        msg.extend_from_slice(&self.json);
        msg
    }
}

/// The TLS client configuration (ring provider, given CA or the system's roots).
fn tls_config(
    o: &SyslogOptions,
) -> anyhow::Result<(Arc<rustls::ClientConfig>, ServerName<'static>)> {
    use anyhow::Context as _;
    let mut roots = rustls::RootCertStore::empty();
    match &o.ca {
        Some(ca) => {
            let shown = ca.display();
            for c in CertificateDer::pem_file_iter(ca).with_context(|| format!("ca {shown}"))? {
                roots
                    .add(c.with_context(|| format!("ca {shown}"))?)
                    .with_context(|| format!("ca {shown}"))?;
            }
            anyhow::ensure!(!roots.is_empty(), "ca {shown}: no certificate in it");
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            anyhow::ensure!(
                added > 0,
                "no system CA certificates found (install ca-certificates, or give ?ca=PATH)"
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cert {}", cert.display()))?;
            anyhow::ensure!(
                !chain.is_empty(),
                "cert {}: no certificate in it",
                cert.display()
            );
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("client certificate and key")?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = o.server_name.clone().unwrap_or_else(|| o.host.clone());
    let name = ServerName::try_from(name.clone()).map_err(|_| {
        anyhow::anyhow!("{name:?} is not a DNS name or IP to verify the server for")
    })?;
    Ok((Arc::new(config), name))
}

impl Sink for SyslogSink {
    fn send(&mut self, ev: &Event) -> anyhow::Result<()> {
        let msg = self.message(ev);
        if msg.len() > self.max_message {
            self.queue.lost_unqueued();
            if !self.oversize_logged {
                self.oversize_logged = true;
                warn!(
                    "{}: {} event of {} bytes is over max_message ({} bytes): dropped \
                     (further ones are counted, not logged)",
                    self.name,
                    ev.event.action,
                    msg.len(),
                    self.max_message
                );
            }
            return Ok(());
        }
        let frame = match self.framing {
            Some(Framing::Octet) => format::octet_counted(&msg),
            Some(Framing::Newline) => format::newline_framed(msg),
            None => msg,
        };
        if self.queue.push(frame) {
            self.full = false;
        } else if !self.full {
            self.full = true;
            warn!(
                "{}: queue full: dropping events until the receiver takes them \
                 (drops are counted and reported as agent.events_lost)",
                self.name
            );
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn close(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let left = self.queue.close(timeout);
        if left > 0 {
            warn!(
                "{}: {left} events not delivered within {timeout:?}: dropped",
                self.name
            );
        }
        // Let the sender end its connection in order (TLS close_notify), briefly.
        if let Some(h) = self.sender.take() {
            let until = Instant::now() + Duration::from_millis(500);
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        Ok(())
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn stats(&self) -> SinkStats {
        let (delivered, dropped, retries) = self.queue.counts();
        SinkStats {
            delivered,
            dropped,
            queued: self.queue.queued(),
            spool_bytes: 0,
            retries,
        }
    }
}

impl Drop for SyslogSink {
    fn drop(&mut self) {
        if !self.queue.stopped() {
            self.queue.close(Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests;
