//! Operator faults on a real veth: `hbwatch check` before and while an agent runs, a
//! second agent on the same interface refused clearly, SIGKILL then restart attaching
//! cleanly (the kernel drops a dead agent's XDP link with its file descriptor).

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
