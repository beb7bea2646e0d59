//! Operator faults on a real veth: `hbwatch check` before and while an agent runs, a
//! second agent on the same interface refused clearly, SIGKILL then restart attaching
//! cleanly (the kernel drops a dead agent's XDP link with its file descriptor); the same
//! in TC mode, where a dead agent's netlink filter stays and must be removed.

use std::process::Command;
use std::time::Duration;

use hbwatch_common::proto::Role;
use hbwatch_tests::{hbwatch_bin, require_root, rudp_frame, Agent, VethNs};

fn check(iface: &str) -> (i32, String) {
    let out = Command::new(hbwatch_bin())
        .args(["check", "--iface", iface])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn check_second_agent_and_sigkill_restart() {
    if !require_root("check_second_agent_and_sigkill_restart") {
        return;
    }
    let net = VethNs::create();
    let (code, text) = check(&net.host);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("eBPF programs load and pass the verifier"),
        "{text}"
    );
    assert!(
        text.contains(&format!("interface {}: XDP driver mode attaches", net.host)),
        "{text}"
    );
    assert!(net.host_xdp().is_none(), "check leaves nothing attached");
    let (code, text) = check("nosuch0");
    assert_eq!(code, 1);
    assert!(
        text.contains("FAIL interface nosuch0 does not exist"),
        "{text}"
    );

    let mut first = Agent::start(&["--iface", &net.host]);
    let (code, text) = check(&net.host);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("already has an XDP program attached"),
        "{text}"
    );

    // A second agent on the same interface: refused, with the reason, non-zero exit.
    let second = Command::new(hbwatch_bin())
        .args(["run", "--iface", &net.host])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already has an XDP program attached"), "{err}");
    assert!(
        net.host_xdp().is_some(),
        "the first agent keeps its attachment"
    );

    // SIGKILL: no cleanup code runs; the kernel releases the XDP link.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    let _ = first.stop_killed();
    let mut restarted = Agent::start(&["--iface", &net.host]);
    net.inject(
        &[
            rudp_frame(&[], "10.1.1.1", "10.1.1.2", 7, Role::Request),
            rudp_frame(&[], "10.1.1.2", "10.1.1.1", 7, Role::Response),
        ],
        Duration::from_millis(2),
    );
    restarted.wait_for("peer.up", Duration::from_secs(10));
    assert_eq!(restarted.stop(), 0);
    assert!(
        net.host_xdp().is_none(),
        "clean after the restarted agent stops"
    );
}

/// TC programs the agent left on `hook` of `iface`, as `tc filter show` lists them
/// (netlink filters, kernels before 6.6; TCX links on 6.6+ are not listed there and go
/// with their process anyway).
fn tc_filters(iface: &str, hook: &str) -> usize {
    let out = Command::new("tc")
        .args(["filter", "show", "dev", iface, hook])
        .output()
        .expect("tc (iproute2)");
    // One line per filter; it names the program twice (filter name, program info).
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("hbwatch_tc"))
        .count()
}

/// `--mode tc` (and `--egress`): a second agent refused whatever its mode; after a
/// SIGKILL, which leaves a netlink TC filter behind on kernels before 6.6, the restarted
/// agent removes that stale filter instead of running next to it, sees traffic, and
/// leaves nothing attached when it stops.
#[test]
fn tc_mode_second_agent_and_sigkill_restart() {
    if !require_root("tc_mode_second_agent_and_sigkill_restart") {
        return;
    }
    let net = VethNs::create();
    let args = ["--iface", &net.host, "--mode", "tc", "--egress"];
    let mut first = Agent::start(&args);
    for mode in ["tc", "skb"] {
        let second = Command::new(hbwatch_bin())
            .args(["run", "--iface", &net.host, "--mode", mode])
            .output()
            .unwrap();
        assert!(!second.status.success(), "second agent in {mode} mode ran");
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(
            err.contains(&format!(
                "another hbwatch already watches {} ingress",
                net.host
            )),
            "{err}"
        );
    }
    assert!(net.host_xdp().is_none(), "tc mode attaches no XDP");
    let (code, text) = check(&net.host);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is watched by another hbwatch"), "{text}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    let _ = first.stop_killed();
    let mut restarted = Agent::start(&args);
    for hook in ["ingress", "egress"] {
        assert!(
            tc_filters(&net.host, hook) <= 1,
            "a killed agent's {hook} filter still runs next to the new one"
        );
    }
    net.inject(
        &[
            rudp_frame(&[], "10.1.1.1", "10.1.1.2", 7, Role::Request),
            rudp_frame(&[], "10.1.1.2", "10.1.1.1", 7, Role::Response),
        ],
        Duration::from_millis(2),
    );
    let up = restarted.wait_for("peer.up", Duration::from_secs(10));
    assert_eq!(
        up["observer"]["ingress"]["interface"]["name"],
        net.host.as_str()
    );
    assert_eq!(restarted.stop(), 0);
    for hook in ["ingress", "egress"] {
        assert_eq!(
            tc_filters(&net.host, hook),
            0,
            "{hook} filter left attached"
        );
    }
}
