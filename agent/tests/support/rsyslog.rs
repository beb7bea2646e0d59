//! A real rsyslogd receiving the syslog outputs, and the checks of what it received.
//!
//! Each fixture starts its own rsyslogd (`-n -f <temp conf> -i <temp pidfile>`) on free
//! loopback ports, with no imuxsock/imklog, so a system rsyslog is left alone, and writes
//! what rsyslog parsed out of each message (PRI, HOSTNAME, APP-NAME, PROCID, MSGID,
//! TIMESTAMP, MSG) as one JSON line per message, one file per input. rsyslogd (Debian
//! `rsyslog`, and `rsyslog-gnutls` for TLS) is installed by `cargo xtask bootstrap`;
//! without it the tests fail under CI=true and skip loudly otherwise.

use std::collections::BTreeMap;
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_udp_port, sorted};

/// The `--hostname` the syslog tests give, which [`check`] expects in HOSTNAME.
pub const HOSTNAME: &str = "probe-7";

/// rsyslogd, or None (after saying so) when it is missing outside CI.
pub fn rsyslogd(module: &str) -> Option<PathBuf> {
    let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let module_ok = || {
        [
            "/usr/lib/x86_64-linux-gnu/rsyslog",
            "/usr/lib/rsyslog",
            "/usr/lib64/rsyslog",
        ]
        .iter()
        .any(|d| Path::new(d).join(module).exists())
    };
    match bin {
        Some(b) if module_ok() => Some(b),
        _ => {
            let msg = format!(
                "rsyslogd or its {module} is not installed (Debian: rsyslog, rsyslog-gnutls; \
                 `cargo xtask bootstrap` installs them)"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n*** SKIPPED: {msg} ***\n");
            None
        }
    }
}

/// One line per message: what rsyslog parsed out of it.
const TEMPLATE: &str = r#"template(name="props" type="string" string="{\"pri\":\"%pri%\",\"host\":\"%hostname%\",\"app\":\"%app-name%\",\"procid\":\"%procid%\",\"msgid\":\"%msgid%\",\"ts\":\"%timereported:::date-rfc3339%\",\"ts3164\":\"%timereported:::date-rfc3164%\",\"sd\":\"%structured-data:::json%\",\"ver\":\"%protocol-version%\",\"msg\":\"%msg:::json%\"}\n")"#;

/// TLS material for the receiver: CA, certificate, key (PEM files).
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `anon`, or `x509/certvalid` to require a client certificate from the CA.
    pub auth: &'static str,
}

/// A running rsyslogd with one input per transport asked for, each writing to its own file.
pub struct Rsyslog {
    child: Child,
    dir: PathBuf,
    pub udp: Option<u16>,
    pub tcp: Option<u16>,
    pub tls: Option<u16>,
}

#[derive(Default)]
pub struct Inputs<'a> {
    pub udp: bool,
    /// `Some(0)`: any free port; `Some(p)`: that one.
    pub tcp: Option<u16>,
    pub tls: Option<&'a ServerTls>,
}

impl Rsyslog {
    pub fn start(bin: &Path, dir: &Path, inputs: Inputs) -> Rsyslog {
        let d = dir.display();
        let mut conf = format!(
            "global(workDirectory=\"{d}\" maxMessageSize=\"128k\" net.enableDNS=\"off\")\n{TEMPLATE}\n"
        );
        if let Some(t) = inputs.tls {
            conf += &format!(
                "global(defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" \
                 defaultNetstreamDriverKeyFile=\"{}\")\n",
                t.ca.display(),
                t.cert.display(),
                t.key.display()
            );
        }
        let mut udp = None;
        if inputs.udp {
            let port = free_udp_port();
            udp = Some(port);
            conf += &format!(
                "module(load=\"imudp\")\n\
                 ruleset(name=\"udp\") {{ action(type=\"omfile\" file=\"{d}/udp.log\" template=\"props\") }}\n\
                 input(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"udp\")\n"
            );
        }
        // One imtcp instance: plain TCP or TLS (its stream driver is per module here).
        if let Some(port) = inputs.tcp {
            conf += &format!(
                "module(load=\"imtcp\")\n\
                 ruleset(name=\"tcp\") {{ action(type=\"omfile\" file=\"{d}/tcp.log\" template=\"props\") }}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" listenPortFileName=\"{d}/tcp.port\" ruleset=\"tcp\")\n"
            );
        } else if let Some(t) = inputs.tls {
            conf += &format!(
                "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{}\")\n\
                 ruleset(name=\"tls\") {{ action(type=\"omfile\" file=\"{d}/tls.log\" template=\"props\") }}\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"0\" listenPortFileName=\"{d}/tls.port\" ruleset=\"tls\")\n",
                t.auth
            );
        }
        std::fs::write(dir.join("rsyslog.conf"), &conf).unwrap();
        let child = Command::new(bin)
            .args(["-n", "-f"])
            .arg(dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(std::fs::File::create(dir.join("rsyslogd.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("rsyslogd.err")).unwrap())
            .spawn()
            .expect("rsyslogd starts");
        let mut r = Rsyslog {
            child,
            dir: dir.to_path_buf(),
            udp,
            tcp: None,
            tls: None,
        };
        // Ready when its listeners are there: the port files written, the UDP port taken.
        let until = Instant::now() + Duration::from_secs(10);
        let port_file = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
                .filter(|p| *p != 0)
        };
        loop {
            if let Some(st) = r.child.try_wait().unwrap() {
                panic!("rsyslogd exited ({st}): {}\n{conf}", r.log());
            }
            match inputs.tcp {
                Some(0) => r.tcp = port_file("tcp.port"),
                // rsyslog writes the port file for port 0 only.
                Some(p) => r.tcp = TcpStream::connect(("127.0.0.1", p)).ok().map(|_| p),
                None => {}
            }
            if inputs.tls.is_some() {
                r.tls = port_file("tls.port");
            }
            let udp_ready = udp.is_none_or(|p| UdpSocket::bind(("127.0.0.1", p)).is_err());
            if udp_ready
                && r.tcp.is_some() == inputs.tcp.is_some()
                && r.tls.is_some() == inputs.tls.is_some()
            {
                return r;
            }
            assert!(Instant::now() < until, "rsyslogd not ready: {}", r.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// rsyslogd's own output, for failure messages.
    pub fn log(&self) -> String {
        ["rsyslogd.out", "rsyslogd.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The messages rsyslog wrote for one input, once there are `want` (or after
    /// `patience` without reaching it), plus anything arriving in a short quiet period
    /// after that (duplicates would).
    pub fn received(&self, input: &str, want: usize, patience: Duration) -> Vec<Value> {
        let path = self.dir.join(format!("{input}.log"));
        let read = || -> Vec<Value> {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // Whole lines only: rsyslog may be writing the last one.
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            whole
                .lines()
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("rsyslog's line is not JSON ({e}): {l}"))
                })
                .collect()
        };
        let until = Instant::now() + patience;
        while read().len() < want && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        read()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Syslog severity of a `log.level` (docs/outputs/syslog-and-file.md).
pub fn severity(level: &str) -> u64 {
    match level {
        "info" => 6,
        "warning" => 4,
        "error" => 3,
        "critical" => 2,
        other => panic!("unknown level {other}"),
    }
}

/// Every event exactly once (as a multiset, MSG byte for byte the stdout line), and the
/// headers right; returns how many of each severity came.
pub fn check(
    transport: &str,
    got: &[Value],
    events: &[String],
    facility: u64,
    rfc5424: bool,
) -> BTreeMap<u64, usize> {
    let msgs: Vec<String> = got
        .iter()
        .map(|m| m["msg"].as_str().unwrap().trim_start().to_string())
        .collect();
    assert_eq!(
        msgs.len(),
        events.len(),
        "{transport}: rsyslog got {} messages for {} events",
        msgs.len(),
        events.len()
    );
    assert!(
        sorted(msgs) == sorted(events.to_vec()),
        "{transport}: MSGs differ from the stdout lines"
    );
    let mut by_severity = BTreeMap::new();
    let mut sequence = Vec::new();
    for m in got {
        let ev: Value = serde_json::from_str(m["msg"].as_str().unwrap().trim_start())
            .unwrap_or_else(|e| panic!("{transport}: MSG is not JSON ({e}): {m}"));
        let sev = severity(ev["log"]["level"].as_str().unwrap());
        *by_severity.entry(sev).or_default() += 1;
        let pri: u64 = m["pri"].as_str().unwrap().parse().unwrap();
        assert_eq!(pri, facility * 8 + sev, "{transport}: PRI of {m}");
        assert_eq!(m["host"], HOSTNAME, "{transport}: {m}");
        assert_eq!(m["app"], "hbwatch", "{transport}: {m}");
        assert!(
            m["procid"].as_str().unwrap().parse::<u32>().is_ok(),
            "{transport}: {m}"
        );
        let ts = ev["@timestamp"].as_str().unwrap();
        if rfc5424 {
            assert_eq!(m["ver"], "1", "{transport}: {m}");
            assert_eq!(m["msgid"], ev["event"]["action"], "{transport}: {m}");
            assert_eq!(m["ts"], ts, "{transport}: TIMESTAMP is @timestamp: {m}");
            let sd = m["sd"].as_str().unwrap();
            let n = sequence_id(sd).unwrap_or_else(|| panic!("{transport}: SD {sd:?}: {m}"));
            sequence.push(n);
        } else {
            // "2026-11-22T10:00:05.536897Z" -> "Nov 22 10:00:05"
            assert_eq!(ts[..8], *"2026-11-", "{ts}");
            let day: u32 = ts[8..10].parse().unwrap();
            assert_eq!(
                m["ts3164"],
                format!("Nov {day:>2} {}", &ts[11..19]),
                "{transport}: {m}"
            );
        }
    }
    if rfc5424 {
        // One sink, one run: the numbers are 1..=n, each once (a gap would be a lost
        // event, a repeat a duplicate).
        sequence.sort_unstable();
        assert!(
            sequence.iter().copied().eq(1..=events.len() as u64),
            "{transport}: sequenceIds are not 1..={}: first {:?}, last {:?}",
            events.len(),
            sequence.first(),
            sequence.last()
        );
    }
    by_severity
}

/// N of RFC 5424 structured data that is exactly `[meta sequenceId="N"]`.
pub fn sequence_id(sd: &str) -> Option<u64> {
    sd.strip_prefix("[meta sequenceId=\"")?
        .strip_suffix("\"]")?
        .parse()
        .ok()
        .filter(|n| (1..=2_147_483_647).contains(n))
}
