//! `cargo xtask vm-test`: the root integration tests (verifier loads,
//! BPF_PROG_TEST_RUN, XDP on veth pairs in network namespaces, ring buffer,
//! detach) on Debian's cloud kernels in QEMU, one VM per kernel.
//!
//! The host builds everything; each VM boots the Debian kernel with an
//! initramfs holding the test binaries, the agent, iproute2 and busybox, runs
//! every test once and powers off. Results come back as marker lines on the
//! serial console.

mod debian;
mod initramfs;
mod qemu;

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

use crate::cmd::{display, run, which};
pub use debian::sha256_file;
use debian::{Kernel, KERNELS};
pub use initramfs::is_static;
use initramfs::Initramfs;

/// Prefix of the init script's result lines on the console.
pub const MARKER: &str = "HBWATCH-VM:";

/// Modules the tests need: veth for the pairs; sch_ingress (clsact) and
/// cls_bpf for TC egress on kernels without TCX links (before 6.6).
const MODULES: &[&str] = &["veth", "sch_ingress", "cls_bpf"];

/// Inside the VM no single test may take longer than this.
const TEST_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Options {
    /// A kernel name from `KERNELS` or `all`.
    pub kernel: String,
    /// Look the packages up in Debian's index again instead of the cached pick.
    pub refresh: bool,
    /// Limit for one VM, boot to power-off.
    pub timeout: Duration,
    /// Test binaries to boot (empty: all).
    pub only: Vec<String>,
    /// The agent to boot, as it is (e.g. `cargo xtask dist`'s static binary); default:
    /// the workspace's debug build, without its debug info.
    pub agent: Option<PathBuf>,
}

/// One test binary built by cargo and the tests it lists.
struct TestBinary {
    name: String,
    path: PathBuf,
    tests: Vec<String>,
}

struct Outcome {
    kernel: &'static str,
    package: String,
    download: Duration,
    downloaded: u64,
    console: Option<qemu::Console>,
    /// Tests the host listed that reported neither PASS nor FAIL.
    missing: Vec<String>,
    /// A setup error (download, unpack, QEMU start).
    error: Option<String>,
    log: PathBuf,
}

impl Outcome {
    /// A VM that ran another agent than the host gave it (or none) has not tested it.
    fn check_agent(&mut self, sha256: &str) {
        let Some(console) = &mut self.console else {
            return;
        };
        match console.agent_sha256.as_deref() {
            Some(s) if s == sha256 => {}
            other => console.problems.push(format!(
                "the VM's /bin/hbwatch has sha256 {}, not the host's {sha256}",
                other.unwrap_or("(not reported)")
            )),
        }
    }

    fn ok(&self) -> bool {
        self.error.is_none()
            && self.missing.is_empty()
            && self
                .console
                .as_ref()
                .is_some_and(|c| c.done && c.failed.is_empty() && c.problems.is_empty())
    }
}

pub fn vm_test(opts: &Options) -> Result<()> {
    let kernels: Vec<&Kernel> = if opts.kernel == "all" {
        KERNELS.iter().collect()
    } else {
        let k = KERNELS
            .iter()
            .find(|k| k.name == opts.kernel)
            .ok_or_else(|| {
                let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
                anyhow!(
                    "unknown kernel {:?}; choose one of {} or all",
                    opts.kernel,
                    names.join(", ")
                )
            })?;
        vec![k]
    };
    let tool = |name: &str, package: &str| {
        which(name).ok_or_else(|| {
            anyhow!("{name} not found; install it with: apt-get install {package} (cargo xtask bootstrap does)")
        })
    };
    tool("qemu-system-x86_64", "qemu-system-x86")?;
    let strip = tool("strip", "binutils")?;
    let ip = tool("ip", "iproute2")?;
    // The TC-mode fault test lists TC filters a killed agent left behind.
    let tc = tool("tc", "iproute2")?;
    // The differential test captures the wire with tcpdump; the demo test drops root
    // with setpriv (util-linux).
    let tcpdump = tool("tcpdump", "tcpdump")?;
    let setpriv = tool("setpriv", "util-linux")?;
    let busybox = tool("busybox", "busybox-static")?;
    ensure!(
        initramfs::is_static(&busybox)?,
        "{} is dynamically linked; the VM's init needs a static one: apt-get install busybox-static",
        busybox.display()
    );

    let (agent, mut binaries) = build(opts.agent.is_none())?;
    if !opts.only.is_empty() {
        binaries.retain(|b| opts.only.contains(&b.name));
        ensure!(
            !binaries.is_empty(),
            "no test binary is named {:?}",
            opts.only
        );
    }
    let vm_dir = crate::target_dir().join("vm");
    let stage = vm_dir.join("stage");
    fs::create_dir_all(&stage).with_context(|| format!("could not create {}", stage.display()))?;

    // The userspace is the same for every kernel. Debug info is stripped: it
    // would make the initramfs ~5x larger and every boot slower.
    let mut base = Initramfs::skeleton();
    base.file("bin/busybox", &busybox, 0o755);
    base.executable("usr/sbin/ip", &ip)?;
    base.executable("usr/sbin/tc", &tc)?;
    base.executable("usr/bin/tcpdump", &tcpdump)?;
    base.executable("usr/bin/setpriv", &setpriv)?;
    // tcpdump looks its -Z user up by name.
    base.bytes("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644);
    base.bytes("etc/group", "root:x:0:\n", 0o644);
    let agent = match &opts.agent {
        Some(given) => given.clone(),
        None => strip_debug(&strip, &agent, &stage)?,
    };
    // The VM prints the hash of the agent it runs: proof it is this very file.
    let agent_sha256 = sha256_file(&agent)?;
    eprintln!("xtask: agent {} (sha256 {agent_sha256})", agent.display());
    base.executable("bin/hbwatch", &agent)?;
    for bin in &binaries {
        base.executable(
            &format!("tests/{}", bin.name),
            &strip_debug(&strip, &bin.path, &stage.join(&bin.name))?,
        )?;
    }
    let names: Vec<String> = binaries.iter().map(|b| b.name.clone()).collect();
    base.bytes(
        "init",
        initramfs::init_script(&names, TEST_TIMEOUT.as_secs()),
        0o755,
    );

    let kvm = qemu::kvm_works();
    eprintln!(
        "xtask: vm-test on {} with {} ({} tests per kernel)",
        kernels
            .iter()
            .map(|k| k.name)
            .collect::<Vec<_>>()
            .join(", "),
        if kvm { "KVM" } else { "TCG (no usable KVM)" },
        binaries.iter().map(|b| b.tests.len()).sum::<usize>()
    );

    let mut outcomes = Vec::new();
    for kernel in kernels {
        let mut outcome = run_kernel(kernel, &base, &binaries, &vm_dir, kvm, opts);
        outcome.check_agent(&agent_sha256);
        report(&outcome);
        outcomes.push(outcome);
    }
    summary(&outcomes)
}

/// Build the agent (unless one is given) and the test binaries; list each binary's tests
/// on the host.
fn build(agent: bool) -> Result<(PathBuf, Vec<TestBinary>)> {
    if agent {
        run(crate::cargo().args(["build", "--package", "hbwatch"]))?;
    }
    let agent = crate::target_dir().join("debug").join("hbwatch");

    let mut cmd = crate::cargo();
    cmd.args([
        "test",
        "--package",
        "hbwatch-tests",
        "--no-run",
        "--message-format=json",
    ])
    .stderr(Stdio::inherit());
    let shown = display(&cmd);
    eprintln!("xtask: $ {shown}");
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    ensure!(out.status.success(), "`{shown}` failed ({})", out.status);

    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = msg["reason"] == "compiler-artifact" && msg["profile"]["test"] == true;
        let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str())
        else {
            continue;
        };
        if !is_test {
            continue;
        }
        let path = PathBuf::from(exe);
        let tests = list_tests(&path)?;
        // The library's unit-test binary has no tests: nothing to boot it for.
        if !tests.is_empty() {
            binaries.push(TestBinary {
                name: name.to_owned(),
                path,
                tests,
            });
        }
    }
    ensure!(!binaries.is_empty(), "`{shown}` built no test binaries");
    // The verifier tests first: if loading fails, that is the first thing to read.
    binaries.sort_by_key(|b| (b.name != "prog_test_run", b.name.clone()));
    Ok((agent, binaries))
}

fn list_tests(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not run {} --list", exe.display()))?;
    ensure!(
        out.status.success(),
        "{} --list failed ({})",
        exe.display(),
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

/// A copy of `src` without debug info, at `dest` (or `dest/<file name>` when it is a dir).
fn strip_debug(strip: &Path, src: &Path, dest: &Path) -> Result<PathBuf> {
    let dest = if dest.is_dir() {
        dest.join(src.file_name().unwrap_or_default())
    } else {
        dest.to_owned()
    };
    let mut cmd = Command::new(strip);
    cmd.arg("--strip-debug").arg("-o").arg(&dest).arg(src);
    let shown = display(&cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(dest)
}

fn run_kernel(
    kernel: &'static Kernel,
    base: &Initramfs,
    binaries: &[TestBinary],
    vm_dir: &Path,
    kvm: bool,
    opts: &Options,
) -> Outcome {
    let dir = vm_dir.join(kernel.name);
    let mut outcome = Outcome {
        kernel: kernel.name,
        package: format!("Debian {}", kernel.suite),
        download: Duration::ZERO,
        downloaded: 0,
        console: None,
        missing: Vec::new(),
        error: None,
        log: dir.join("console.log"),
    };
    if let Err(e) = boot_kernel(kernel, base, binaries, &dir, kvm, opts, &mut outcome) {
        outcome.error = Some(format!("{e:#}"));
    }
    outcome
}

fn boot_kernel(
    kernel: &Kernel,
    base: &Initramfs,
    binaries: &[TestBinary],
    dir: &Path,
    kvm: bool,
    opts: &Options,
    outcome: &mut Outcome,
) -> Result<()> {
    eprintln!(
        "xtask: == kernel {} (Debian {}) ==",
        kernel.name, kernel.suite
    );
    let start = Instant::now();
    let unpacked = debian::prepare(kernel, MODULES, opts.refresh)?;
    outcome.download = start.elapsed();
    outcome.downloaded = unpacked.downloaded;
    outcome.package = format!("{}, uname -r {}", unpacked.package, unpacked.release);

    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut fs = base.clone();
    let mut order = String::new();
    for module in &unpacked.modules {
        let name = module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        fs.file(&format!("lib/modules/{name}.ko"), module, 0o644);
        writeln!(order, "{name}").expect("writing to a String");
    }
    fs.bytes("lib/modules/order", order, 0o644);
    let initrd = dir.join("initramfs.cpio");
    fs.write(&initrd)?;

    let console = qemu::boot(
        kernel.name,
        &unpacked.vmlinuz,
        &initrd,
        &outcome.log,
        kvm,
        opts.timeout,
    )?;
    let reported = |t: &str| {
        let done = |r: &String| r.split(" (").next() == Some(t);
        console.passed.iter().any(done) || console.failed.iter().any(|(r, _)| done(r))
    };
    outcome.missing = binaries
        .iter()
        .flat_map(|b| b.tests.iter().map(move |t| format!("{}::{t}", b.name)))
        .filter(|t| !reported(t))
        .collect();
    outcome.console = Some(console);
    Ok(())
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn timing(o: &Outcome) -> String {
    let download = if o.downloaded > 0 {
        format!(
            "{} ({:.1} MB downloaded)",
            secs(Some(o.download)),
            o.downloaded as f64 / 1e6
        )
    } else {
        format!("{} (cached)", secs(Some(o.download)))
    };
    let c = o.console.as_ref();
    format!(
        "fetch+unpack {download}, boot {}, tests {}",
        secs(c.and_then(|c| c.boot)),
        secs(c.map(|c| c.tests))
    )
}

fn counts(o: &Outcome) -> String {
    let (passed, failed) = o
        .console
        .as_ref()
        .map_or((0, 0), |c| (c.passed.len(), c.failed.len()));
    match o.missing.len() {
        0 => format!("{passed} passed, {failed} failed"),
        n => format!("{passed} passed, {failed} failed, {n} without result"),
    }
}

/// Everything about one kernel, failures with their output.
fn report(o: &Outcome) {
    let verdict = if o.ok() { "PASS" } else { "FAIL" };
    eprintln!(
        "xtask: kernel {}: {verdict}: {} ({}; {}); console log {}",
        o.kernel,
        counts(o),
        o.package,
        timing(o),
        o.log.display()
    );
    if let Some(e) = &o.error {
        eprintln!("xtask: kernel {}: error: {e}", o.kernel);
    }
    let Some(c) = &o.console else { return };
    for (test, output) in &c.failed {
        eprintln!("xtask: kernel {}: FAILED {test}; its output:", o.kernel);
        // The end of a long output is where the assertion is.
        let skip = output.len().saturating_sub(150);
        if skip > 0 {
            eprintln!("    [... {skip} earlier lines in {}]", o.log.display());
        }
        for line in &output[skip..] {
            eprintln!("    {line}");
        }
    }
    for p in &c.problems {
        eprintln!("xtask: kernel {}: {p}", o.kernel);
    }
    if !o.missing.is_empty() {
        eprintln!(
            "xtask: kernel {}: no result for: {}",
            o.kernel,
            o.missing.join(", ")
        );
    }
    if !c.done {
        eprintln!(
            "xtask: kernel {}: last console lines ({}):",
            o.kernel,
            o.log.display()
        );
        for line in &c.tail {
            eprintln!("    {line}");
        }
    }
}

fn summary(outcomes: &[Outcome]) -> Result<()> {
    eprintln!("xtask: vm-test summary:");
    for o in outcomes {
        eprintln!(
            "  {:<5} {}  {}  ({}; {})",
            o.kernel,
            if o.ok() { "PASS" } else { "FAIL" },
            counts(o),
            o.package,
            timing(o)
        );
    }
    let failing: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| o.kernel)
        .collect();
    let (passed, failed) = outcomes
        .iter()
        .filter_map(|o| o.console.as_ref())
        .fold((0, 0), |(p, f), c| (p + c.passed.len(), f + c.failed.len()));
    // A test that never reported (hang, panic) counts as failed too.
    let failed = failed + outcomes.iter().map(|o| o.missing.len()).sum::<usize>();
    println!("vm-test: {passed} passed, {failed} failed");
    if !failing.is_empty() {
        bail!("vm-test failed on kernel {}", failing.join(", "));
    }
    Ok(())
}
