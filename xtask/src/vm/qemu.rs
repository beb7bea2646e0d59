//! Boot one kernel with the test initramfs in QEMU, capture its serial
//! console to a log file, and read the init script's marker lines from it.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::MARKER;
use crate::cmd::display;

/// What one VM run produced.
#[derive(Default)]
pub struct Console {
    /// Time from starting QEMU to the init script's first line.
    pub boot: Option<Duration>,
    /// Time from then to the `DONE` line (or to the end of the run).
    pub tests: Duration,
    pub passed: Vec<String>,
    /// Failed test ("bin::name (exit N, S s)") and its console output
    /// (between its RUN and FAIL lines).
    pub failed: Vec<(String, Vec<String>)>,
    /// Problems outside any one test: module load failures, panics, a hang.
    pub problems: Vec<String>,
    pub done: bool,
    /// The sha256 of /bin/hbwatch as the VM computed it.
    pub agent_sha256: Option<String>,
    /// The last console lines, shown when the VM did not finish cleanly.
    pub tail: Vec<String>,
}

const TAIL: usize = 60;

/// True if QEMU can run a vCPU with KVM here. /dev/kvm can exist and still be
/// unusable (nested virtualisation without MSR support), so ask QEMU itself:
/// creating a host-model vCPU fails right away in that case.
pub fn kvm_works() -> bool {
    // Nested KVM can pass this probe and still hang or fail the guest at boot (seen:
    // "KVM internal error ... emulation failure" on cmpxchg16b): HBWATCH_VM_ACCEL=tcg.
    if std::env::var("HBWATCH_VM_ACCEL").is_ok_and(|a| a == "tcg") {
        return false;
    }
    if fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(["-monitor", "stdio", "-S"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    child.wait().is_ok_and(|s| s.success())
}

/// Boot `vmlinuz` + `initrd`, console to `log`; kill the VM after `timeout`.
pub fn boot(
    label: &str,
    vmlinuz: &Path,
    initrd: &Path,
    log: &Path,
    kvm: bool,
    timeout: Duration,
) -> Result<Console> {
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        // Without cx16: QEMU 7.2's TCG sometimes leaves EFLAGS garbage (RAX's low
        // bits) after a cmpxchg16b, and SLUB's fast path on 6.12 then double-faults
        // (seen at boot and mid-test). Without the feature SLUB takes its locked path.
        cmd.args(["-accel", "tcg", "-cpu", "max,-cx16"]);
    }
    cmd.args([
        "-m",
        "1024",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    // panic=-1 + -no-reboot: a panic ends QEMU at once instead of hanging;
    // oops=panic: an oops in BPF code is a failure, not a stuck test.
    .args([
        "-append",
        "console=ttyS0 panic=-1 oops=panic quiet rdinit=/init",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    eprintln!("xtask: $ {}", display(&cmd));
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("could not start qemu-system-x86_64 (apt-get install qemu-system-x86)")?;

    // stdout (the serial console) and stderr (QEMU's own errors) both go to the log.
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = strip_escapes(&String::from_utf8_lossy(&buf));
                if tx.send(line).is_err() {
                    break;
                }
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut file =
        fs::File::create(log).with_context(|| format!("could not create {}", log.display()))?;
    let mut console = Console::default();
    let mut parser = Parser::default();
    let deadline = start + timeout;
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(file, "{line}")?;
                if let Some(rest) = marker(&line) {
                    // Progress on the terminal: one line per test.
                    if !rest.starts_with("RUN ") {
                        eprintln!("[{label}] {rest}");
                    }
                    if rest.starts_with("kernel ") && console.boot.is_none() {
                        console.boot = Some(start.elapsed());
                    }
                }
                parser.line(&line, &mut console);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            // Both pipes closed: QEMU has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().context("waiting for qemu")?;
    console.tests = start.elapsed() - console.boot.unwrap_or_default();
    console.tail = parser.tail.into_iter().collect();
    if timed_out {
        console.problems.push(format!(
            "the VM did not finish within {} s and was killed{}",
            timeout.as_secs(),
            parser
                .current
                .as_ref()
                .map(|(t, _)| format!(" (while running {t})"))
                .unwrap_or_default()
        ));
    } else if !console.done {
        console.problems.push(format!(
            "the VM stopped ({status}) before the init script finished{}",
            parser
                .current
                .as_ref()
                .map(|(t, _)| format!(" (while running {t})"))
                .unwrap_or_default()
        ));
    }
    Ok(console)
}

/// A console line without its line end and the terminal escape sequences the
/// firmware prints (`ESC c`, `ESC [ ... letter`).
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// The text after the init script's marker. It can follow escape codes that
/// the firmware left on the same console line.
fn marker(line: &str) -> Option<&str> {
    line.find(MARKER).map(|i| line[i + MARKER.len()..].trim())
}

/// Splits the console into per-test output using the marker lines.
#[derive(Default)]
struct Parser {
    /// The running test and its output so far.
    current: Option<(String, Vec<String>)>,
    tail: std::collections::VecDeque<String>,
}

impl Parser {
    fn line(&mut self, line: &str, console: &mut Console) {
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
        if line.contains("Kernel panic") || line.contains("BUG: ") || line.contains("Oops") {
            console.problems.push(format!("kernel: {}", line.trim()));
        }
        let Some(rest) = marker(line) else {
            if let Some((_, out)) = &mut self.current {
                out.push(line.to_owned());
            }
            return;
        };
        if let Some(test) = rest.strip_prefix("RUN ") {
            self.current = Some((test.to_owned(), Vec::new()));
        } else if let Some(test) = rest.strip_prefix("PASS ") {
            let name = test.split(" (").next().unwrap_or(test).to_owned();
            console.passed.push(name);
            self.current = None;
        } else if let Some(test) = rest.strip_prefix("FAIL ") {
            let out = self.current.take().map(|(_, out)| out).unwrap_or_default();
            console.failed.push((test.to_owned(), out));
        } else if let Some(sum) = rest.strip_prefix("agent sha256 ") {
            console.agent_sha256 = Some(sum.trim().to_owned());
        } else if rest.starts_with("DONE") {
            console.done = true;
        } else if rest.starts_with("module ") && rest.ends_with("FAILED")
            || rest.starts_with("mount ")
        {
            console.problems.push(rest.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines() {
        let line = strip_escapes("\x1bc\x1b[?7l\x1b[2JHBWATCH-VM: kernel 6.1.0\r\n");
        assert_eq!(line, "HBWATCH-VM: kernel 6.1.0");
        assert_eq!(marker(&line), Some("kernel 6.1.0"));

        let mut console = Console::default();
        let mut parser = Parser::default();
        for line in [
            "HBWATCH-VM: agent sha256 00ff",
            "HBWATCH-VM: RUN a::one",
            "test one ... ok",
            "HBWATCH-VM: PASS a::one (2 s)",
            "HBWATCH-VM: RUN a::two",
            "assertion failed",
            "HBWATCH-VM: FAIL a::two (exit 101, 1 s)",
            "HBWATCH-VM: module veth FAILED",
            "HBWATCH-VM: DONE passed=1 failed=1",
        ] {
            parser.line(line, &mut console);
        }
        assert_eq!(console.passed, ["a::one"]);
        assert_eq!(console.failed.len(), 1);
        assert_eq!(console.failed[0].0, "a::two (exit 101, 1 s)");
        assert_eq!(console.failed[0].1, ["assertion failed"]);
        assert_eq!(console.problems, ["module veth FAILED"]);
        assert!(console.done);
        assert_eq!(console.agent_sha256.as_deref(), Some("00ff"));
    }
}
