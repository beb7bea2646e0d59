//! A real syslog-ng receiving the syslog outputs, as a second receiver next to rsyslog.
//!
//! Debian's `syslog-ng-core` conflicts with `rsyslog` (both provide the system logger),
//! so `cargo xtask bootstrap` does not install it: it downloads the package
//! (`apt-get download`) and unpacks it (`dpkg -x`) into `~/.cache/hbwatch/syslog-ng/root`,
//! with its library dependencies installed as ordinary packages. The fixture runs that
//! binary in the foreground with a generated configuration on free loopback ports, its
//! own pid, persist and control files in a temporary directory, and no system sources.
//! A syslog-ng found at /usr/sbin/syslog-ng (a machine that has it instead of rsyslog) is
//! used as well. Without either the tests fail under CI=true and skip loudly otherwise.
//!
//! Three inputs, each writing what syslog-ng parsed out of each message as one JSON line
//! per message to its own file:
//! - `udp`: `syslog(transport("udp"))`, RFC 5424 in datagrams;
//! - `octet`: `syslog(transport("tcp"))`, RFC 6587 octet counting;
//! - `newline`: `network(transport("tcp") flags(syslog-protocol))`, one RFC 5424 message
//!   per line (octet-counted frames would come out with their length in the header).

use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_tcp_port, free_udp_port};

/// The unpacked syslog-ng (binary, library dir, module dir), or None (after saying so)
/// when there is none outside CI.
pub fn syslog_ng() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut roots: Vec<PathBuf> = home
        .map(|h| h.join(".cache/hbwatch/syslog-ng/root"))
        .into_iter()
        .collect();
    roots.push(PathBuf::from("/"));
    for root in roots {
        let bin = root.join("usr/sbin/syslog-ng");
        let lib = root.join("usr/lib/syslog-ng");
        let Ok(dirs) = std::fs::read_dir(&lib) else {
            continue;
        };
        // The module directory is named after the version (3.38).
        let modules = dirs
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join("libafsocket.so").exists());
        if let (true, Some(modules)) = (bin.exists(), modules) {
            return Some((bin, lib, modules));
        }
    }
    let msg = "syslog-ng is not unpacked in ~/.cache/hbwatch/syslog-ng (`cargo xtask \
               bootstrap` does it: apt-get download syslog-ng-core, dpkg -x)";
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n*** SKIPPED: {msg} ***\n");
    None
}

/// What syslog-ng parsed out of a message: PRI, HOST, PROGRAM (APP-NAME), PID, MSGID,
/// the meta sequenceId, MSG.
const TEMPLATE: &str = r#"$(format-json pri=${PRI} host=${HOST} app=${PROGRAM} procid=${PID} msgid=${MSGID} seq=${.SDATA.meta.sequenceId} msg=${MSG})\n"#;

pub struct SyslogNg {
    child: Child,
    dir: PathBuf,
    pub udp: u16,
    pub octet: u16,
    pub newline: u16,
}

impl SyslogNg {
    pub fn start(dir: &Path) -> Option<SyslogNg> {
        let (bin, lib, modules) = syslog_ng()?;
        let d = dir.display();
        let (udp, octet, newline) = (free_udp_port(), free_tcp_port(), free_tcp_port());
        let mut conf = String::from(
            "@version: 3.38\n\
             options { use-dns(no); dns-cache(no); keep-hostname(yes); stats-freq(0); \
             log-msg-size(131072); };\n",
        );
        for (name, source) in [
            (
                "udp",
                format!("syslog(ip(\"127.0.0.1\") port({udp}) transport(\"udp\"))"),
            ),
            (
                "octet",
                format!("syslog(ip(\"127.0.0.1\") port({octet}) transport(\"tcp\"))"),
            ),
            (
                "newline",
                format!(
                    "network(ip(\"127.0.0.1\") port({newline}) transport(\"tcp\") \
                     flags(syslog-protocol))"
                ),
            ),
        ] {
            conf += &format!(
                "source s_{name} {{ {source}; }};\n\
                 destination d_{name} {{ file(\"{d}/{name}.log\" template(\"{}\")); }};\n\
                 log {{ source(s_{name}); destination(d_{name}); }};\n",
                TEMPLATE.replace('"', "\\\"")
            );
        }
        std::fs::write(dir.join("syslog-ng.conf"), &conf).unwrap();
        let child = Command::new(&bin)
            .env("LD_LIBRARY_PATH", &lib)
            .arg("--foreground")
            .arg("--no-caps")
            .arg(format!("--module-path={}", modules.display()))
            .arg("--cfgfile")
            .arg(dir.join("syslog-ng.conf"))
            .arg("--pidfile")
            .arg(dir.join("syslog-ng.pid"))
            .arg("--persist-file")
            .arg(dir.join("syslog-ng.persist"))
            .arg("--control")
            .arg(dir.join("syslog-ng.ctl"))
            .stdout(std::fs::File::create(dir.join("syslog-ng.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("syslog-ng.err")).unwrap())
            .spawn()
            .expect("syslog-ng starts");
        let mut s = SyslogNg {
            child,
            dir: dir.to_path_buf(),
            udp,
            octet,
            newline,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = s.child.try_wait().unwrap() {
                panic!("syslog-ng exited ({st}): {}\n{conf}", s.log());
            }
            let up = UdpSocket::bind(("127.0.0.1", udp)).is_err()
                && [octet, newline]
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return Some(s);
            }
            assert!(Instant::now() < until, "syslog-ng not ready: {}", s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        ["syslog-ng.out", "syslog-ng.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The messages syslog-ng wrote for one input once there are `want` (or after
    /// `patience`), plus anything arriving in a short quiet period after that.
    pub fn received(&self, input: &str, want: usize, patience: Duration) -> Vec<Value> {
        let path = self.dir.join(format!("{input}.log"));
        let read = || -> Vec<Value> {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let whole = text.rfind('\n').map_or("", |end| &text[..end]);
            whole
                .lines()
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("syslog-ng's line is not JSON ({e}): {l}"))
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

impl Drop for SyslogNg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
