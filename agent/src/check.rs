//! `hbwatch check`: preflight for an operator, each finding with what to do about it.

use std::fmt;

use crate::datapath::{attached_xdp, ingress_claimed, AttachMode, Datapath};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub status: Status,
    pub what: String,
    /// What to do about it (empty when all is well).
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.what)?;
        if !self.fix.is_empty() {
            write!(f, "\n     -> {}", self.fix)?;
        }
        Ok(())
    }
}

fn ok(what: impl Into<String>) -> Finding {
    Finding {
        status: Status::Ok,
        what: what.into(),
        fix: String::new(),
    }
}

fn bad(status: Status, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        status,
        what: what.into(),
        fix: fix.into(),
    }
}

/// Kernel release as (major, minor).
pub fn kernel_version() -> Option<(u32, u32, String)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let release = release.trim().to_string();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor, release))
}

/// Effective capabilities of this process (CapEff of /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Runs every check; interfaces are optional (kernel and privileges are always checked).
pub fn run(interfaces: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    match kernel_version() {
        Some((maj, min, rel)) if (maj, min) >= (5, 8) => out.push(ok(format!(
            "kernel {rel}: BPF ring buffer available (needs 5.8+)"
        ))),
        Some((_, _, rel)) => out.push(bad(
            Status::Fail,
            format!("kernel {rel} is older than 5.8: no BPF ring buffer"),
            "run hbwatch on kernel 5.8 or newer (Debian 11+, RHEL 8.4+ backport kernels are not enough)",
        )),
        None => out.push(bad(
            Status::Warn,
            "kernel version unreadable (/proc/sys/kernel/osrelease)",
            "mount /proc",
        )),
    }
    if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        out.push(ok("kernel BTF present (/sys/kernel/btf/vmlinux)"));
    } else {
        out.push(bad(
            Status::Warn,
            "no kernel BTF (/sys/kernel/btf/vmlinux): BPF logs are less detailed",
            "not required by hbwatch; a kernel built with CONFIG_DEBUG_INFO_BTF=y gives better verifier messages",
        ));
    }
    let caps = effective_caps();
    let has = |c: u32| caps & (1 << c) != 0;
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c) && !has(CAP_SYS_ADMIN))
    .map(|(_, n)| n)
    .collect();
    if missing.is_empty() {
        out.push(ok(
            "privileges: CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root)",
        ));
    } else {
        out.push(bad(
            Status::Fail,
            format!("missing capabilities: {}", missing.join(", ")),
            "run as root, or grant them: setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(which hbwatch), or AmbientCapabilities= in the systemd unit",
        ));
        return out;
    }
    // Loading the real object proves the BPF syscall, map types and the verifier.
    let ports = crate::ports::port_table(&crate::ports::default_specs());
    match Datapath::load(&ports, &Default::default()) {
        Ok(dp) => {
            let work: Vec<String> = dp
                .verifier_work()
                .into_iter()
                .filter_map(|(name, n)| Some(format!("{name} {}", n?)))
                .collect();
            out.push(ok(if work.is_empty() {
                "eBPF programs load and pass the verifier".to_owned()
            } else {
                format!(
                    "eBPF programs load and pass the verifier (instructions processed: {}; limit 1000000 each)",
                    work.join(", ")
                )
            }))
        }
        Err(e) => {
            out.push(bad(
                Status::Fail,
                format!("eBPF programs do not load: {e:#}"),
                "check `dmesg`; the verifier output above names the failing instruction; kernels before 5.8 lack the ring buffer",
            ));
            return out;
        }
    }
    for iface in interfaces {
        if crate::datapath::ifindex(iface).is_err() {
            out.push(bad(
                Status::Fail,
                format!("interface {iface} does not exist"),
                "list interfaces with `ip link`; give the capture/SPAN interface with --iface",
            ));
            continue;
        }
        if let Some(other) = attached_xdp(iface) {
            out.push(bad(
                Status::Fail,
                format!("interface {iface} already has an XDP program attached ({other})"),
                format!("another tool (or another hbwatch) owns {iface}'s XDP hook: stop it, or remove it with `ip link set dev {iface} xdp off`"),
            ));
            continue;
        }
        if ingress_claimed(iface) {
            out.push(bad(
                Status::Fail,
                format!("interface {iface} is watched by another hbwatch (TC ingress)"),
                "stop the other agent first: two agents would each report every heartbeat",
            ));
            continue;
        }
        for (mode, name) in [
            (AttachMode::Driver, "XDP driver"),
            (AttachMode::Skb, "XDP skb"),
            (AttachMode::Tc, "TC"),
        ] {
            // A fresh load per try: dropping it detaches, leaving the interface as it was.
            let tried = Datapath::load(&ports, &Default::default())
                .and_then(|mut dp| dp.attach(iface, mode).map(|_| ()));
            match tried {
                Ok(()) => out.push(ok(format!("interface {iface}: {name} mode attaches"))),
                Err(e) if mode == AttachMode::Driver => out.push(bad(
                    Status::Warn,
                    format!("interface {iface}: XDP driver mode unavailable ({e:#})"),
                    "hbwatch falls back to skb (generic) mode: works everywhere, costs more CPU per packet",
                )),
                Err(e) if mode == AttachMode::Tc => out.push(bad(
                    Status::Warn,
                    format!("interface {iface}: TC mode unavailable ({e:#})"),
                    "`--mode tc` needs the clsact qdisc (kernels before 6.6: the sch_ingress and cls_bpf modules); XDP modes do not",
                )),
                Err(e) => out.push(bad(
                    Status::Fail,
                    format!("interface {iface}: XDP cannot attach at all ({e:#})"),
                    "check that the interface is up and not a bond slave or a device without XDP support",
                )),
            }
        }
    }
    out
}
