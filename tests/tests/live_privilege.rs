//! Least privilege on a real kernel: the agent runs as nobody with only CAP_BPF,
//! CAP_NET_ADMIN and CAP_PERFMON, detects anomalies, keeps only CAP_BPF and
//! CAP_NET_ADMIN once attached, and detaches cleanly. Without them it refuses clearly.
//! An interface that disappears and comes back is attached again.

use std::process::Command;
use std::time::Duration;

use hbwatch_tests::{hbwatch_bin, mds_frame, require_root, Agent, VethNs};

fn mds(seq: u32) -> Vec<u8> {
    mds_frame("10.72.0.1", "10.72.0.2", seq)
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability bits of a process.
fn cap_eff(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn kernel_before(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) < (major, minor)
}

const NOBODY: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

#[test]
fn runs_as_nobody_with_three_capabilities_and_keeps_two() {
    if !require_root("runs_as_nobody_with_three_capabilities_and_keeps_two") {
        return;
    }
    let net = VethNs::create();
    // Before 5.11 map memory is charged to RLIMIT_MEMLOCK: raising it is the fourth.
    let caps = if kernel_before(5, 11) {
        "+bpf,+net_admin,+perfmon,+sys_resource"
    } else {
        "+bpf,+net_admin,+perfmon"
    };
    let inh = format!("--inh-caps={caps}");
    let amb = format!("--ambient-caps={caps}");
    let mut wrapper = vec!["setpriv"];
    wrapper.extend(NOBODY);
    wrapper.extend([inh.as_str(), amb.as_str()]);
    let mut agent = Agent::start_as(
        &wrapper,
        &[
            "--iface",
            &net.host,
            "--port",
            "mds=41000",
            // Frames 2 ms apart: announced at the first (no plausibility wait).
            "--tune",
            "mds.confirm_beats=1",
            "--no-summary-events",
        ],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    let eff = cap_eff(agent.pid());
    assert_eq!(
        eff,
        (1 << CAP_BPF) | (1 << CAP_NET_ADMIN),
        "CAP_PERFMON dropped after load, the other two kept: {eff:#x}"
    );
    assert_eq!(eff & (1 << CAP_PERFMON), 0);
    net.inject(&[mds(1), mds(2), mds(6)], Duration::from_millis(2));
    let gap = agent.wait_for("heartbeat.gap", Duration::from_secs(10));
    assert_eq!(gap["heartbeat"]["lost"], 3);
    assert_eq!(agent.stop(), 0);
    assert!(net.host_xdp().is_none(), "detached on exit without root");
}

#[test]
fn without_capabilities_it_refuses_with_what_it_needs() {
    if !require_root("without_capabilities_it_refuses_with_what_it_needs") {
        return;
    }
    let net = VethNs::create();
    let out = Command::new("setpriv")
        .args(NOBODY)
        .arg(hbwatch_bin())
        .args(["run", "--iface", &net.host])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hbwatch: error: loading the eBPF object failed (needs root or CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON"),
        "{err}"
    );
    assert!(net.host_xdp().is_none());
}

#[test]
fn an_interface_that_disappears_and_comes_back_is_attached_again() {
    if !require_root("an_interface_that_disappears_and_comes_back_is_attached_again") {
        return;
    }
    let net = VethNs::create();
    let mut agent = Agent::start(&[
        "--iface",
        &net.host,
        "--port",
        "mds=41000",
        "--tune",
        "mds.confirm_beats=1",
        "--no-summary-events",
    ]);
    net.inject(&[mds(1), mds(2)], Duration::from_millis(2));
    agent.wait_for("peer.up", Duration::from_secs(10));

    net.remove_pair();
    let lost = agent.wait_for("agent.interface_lost", Duration::from_secs(10));
    assert!(lost["message"].as_str().unwrap().contains(&net.host));
    net.restore_pair();
    let back = agent.wait_for("agent.interface_attached", Duration::from_secs(10));
    assert_eq!(
        back["heartbeat"]["interfaces"][0]["name"],
        net.host.as_str()
    );
    assert!(net.host_xdp().is_some(), "XDP is on the new interface");

    // A fresh association on the new interface is watched as before.
    let other = |seq: u32| mds_frame("10.72.1.1", "10.72.1.2", seq);
    net.inject(&[other(10), other(11), other(15)], Duration::from_millis(2));
    let gap = agent.wait_for("heartbeat.gap", Duration::from_secs(10));
    assert_eq!(gap["heartbeat"]["lost"], 3);
    assert_eq!(
        gap["observer"]["ingress"]["interface"]["name"],
        net.host.as_str()
    );
    assert_eq!(agent.stop(), 0);
}
