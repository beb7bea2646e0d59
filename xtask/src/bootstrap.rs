//! Installs what building and testing hbwatch needs: the nightly toolchain with
//! rust-src (aya-build compiles the eBPF crate with `-Z build-std`), a
//! bpf-linker that runs on nightly's own LLVM, and the tools the integration
//! tests call (Debian packages, and the rotel wheel from PyPI). Idempotent: when
//! everything is there it only runs a few local probes (no network), so
//! build/run/test can always call it first.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

use crate::cmd::{display, is_root, probe, run, which};

/// Debian packages the integration tests use (prometheus for promtool; rsyslog and its
/// TLS driver: the syslog outputs' receiver; tcpreplay: the field corpus's derived
/// captures and its live replay; protobuf-compiler: `protoc --decode` reads the Loki
/// pushes with Loki's schema, not the agent's; logrotate: the file output's rotation
/// test; the six libraries syslog-ng needs, whose own package conflicts with rsyslog and
/// is unpacked by [`syslog_ng`] instead; chromium: headless, it renders `analyze
/// --report`'s HTML in agent/tests/report.rs); the last five for `vm-test`
/// (QEMU, a static busybox as the VM's init shell, strip, and checking the
/// signature of Debian's index before downloading kernels from it).
const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "tshark",
    "tcpdump",
    "ethtool",
    "prometheus",
    "rsyslog",
    "rsyslog-gnutls",
    "tcpreplay",
    "protobuf-compiler",
    "chromium",
    // hbwatch top is tested in a real terminal (live_top).
    "tmux",
    // pip, where python3 is Debian's own (PIP_PACKAGES).
    "python3-pip",
    "logrotate",
    "libivykis0",
    "libpcre3",
    "libnet1",
    "libjson-c5",
    "libwrap0",
    "libglib2.0-0",
    "qemu-system-x86",
    "busybox-static",
    "binutils",
    "gpgv",
    "debian-archive-keyring",
];

/// PyPI packages the tests use, pinned, with the module that proves each installed:
/// `communityid`, the Community ID reference implementation (agent/tests/ecs.rs).
const PIP_PACKAGES: &[(&str, &str)] = &[("communityid==1.5.0", "communityid")];

/// npm packages the tests use, pinned, installed under `~/.cache/hbwatch/npm` (the tests
/// look there): Grafana's LogQL grammar, which parses the Loki queries the dashboard and
/// the Loki rules ship (tests/tests/dashboards.rs).
const NPM_PACKAGES: &[&str] = &["@grafana/lezer-logql@0.4.2"];

pub fn bootstrap(no_apt: bool) -> Result<()> {
    if which("rustup").is_none() {
        bail!("rustup was not found on PATH; install it from https://rustup.rs and re-run `cargo xtask bootstrap`.");
    }
    let toolchains = rustup_toolchains()?;
    nightly(&toolchains)?;
    rust_src()?;
    bpf_linker(&toolchains)?;
    if no_apt {
        eprintln!("xtask: apt packages skipped (--no-apt)");
    } else {
        apt_packages(APT_PACKAGES)?;
        syslog_ng()?;
    }
    rotel(no_apt)?;
    pip_packages(PIP_PACKAGES)?;
    npm_packages(NPM_PACKAGES)
}

/// The PyPI wheel whose bundled binary, `rotel-agent` (an OpenTelemetry collector written
/// in Rust), receives the OTLP output in agent/tests/sink_otlp.rs. Pinned: the tests parse
/// its debug exporter's output. agent/tests/support/rotel.rs looks for it in [`ROTEL_DIR`].
const ROTEL_WHEEL: &str = "rotel==0.0.1a15";
/// Under `$HOME`: pip's `--target` directory for [`ROTEL_WHEEL`].
const ROTEL_DIR: &str = ".cache/hbwatch/pip/rotel-0.0.1a15";

/// Installs [`ROTEL_WHEEL`] into `~/`[`ROTEL_DIR`] with `python3 -m pip install --target`
/// (no site-packages touched, so neither a virtualenv nor Debian's externally-managed
/// Python is in the way), bringing pip from Debian (`python3-pip`) when the Python on
/// PATH has none. A file probe when it is there already.
fn rotel(no_apt: bool) -> Result<()> {
    let Some(dir) = home().map(|h| h.join(ROTEL_DIR)) else {
        eprintln!(
            "xtask: warning: no $HOME; not installing {ROTEL_WHEEL} (the OTLP tests need it)"
        );
        return Ok(());
    };
    let bin = dir.join("rotel/rotel-agent");
    if bin.exists() {
        eprintln!("xtask: rotel ok ({})", bin.display());
        return Ok(());
    }
    let has_pip = || probe(Command::new("python3").args(["-m", "pip", "--version"])).is_some();
    if !has_pip() && !no_apt {
        apt_packages(&["python3-pip"])?;
    }
    if !has_pip() {
        eprintln!(
            "xtask: warning: no `python3 -m pip`; not installing {ROTEL_WHEEL} (the OTLP tests need it)"
        );
        return Ok(());
    }
    let tmp = dir.with_file_name(format!("{}.partial", ROTEL_WHEEL.replace("==", "-")));
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("python3")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
        ])
        .arg(&tmp)
        .arg(ROTEL_WHEEL))
    .with_context(|| format!("could not install {ROTEL_WHEEL} from PyPI"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("could not move {} to {}", tmp.display(), dir.display()))?;
    ensure!(
        bin.exists(),
        "{ROTEL_WHEEL} installed, but {} is not there",
        bin.display()
    );
    eprintln!("xtask: rotel installed ({})", bin.display());
    Ok(())
}

/// `npm install` into `~/.cache/hbwatch/npm` what is not there yet.
fn npm_packages(packages: &[&str]) -> Result<()> {
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    let prefix = PathBuf::from(home).join(".cache/hbwatch/npm");
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|spec| {
            let (name, version) = spec.rsplit_once('@').unwrap_or((spec, ""));
            let manifest = prefix.join("node_modules").join(name).join("package.json");
            !std::fs::read_to_string(manifest)
                .is_ok_and(|m| m.contains(&format!("\"version\": \"{version}\"")))
        })
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: npm packages ok");
        return Ok(());
    }
    if which("npm").is_none() {
        eprintln!(
            "xtask: warning: npm not found; the dashboard tests need: npm install --prefix {} {}",
            prefix.display(),
            missing.join(" ")
        );
        return Ok(());
    }
    std::fs::create_dir_all(&prefix)?;
    let mut cmd = Command::new("npm");
    cmd.args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .args(&missing);
    run(&mut cmd)
}

/// `pip install` what is missing (a module import is the check: fast when present).
fn pip_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(_, module)| {
            probe(Command::new("python3").args(["-c", &format!("import {module}")])).is_none()
        })
        .map(|(spec, _)| *spec)
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: pip packages ok");
        return Ok(());
    }
    eprintln!("xtask: installing pip packages: {}", missing.join(" "));
    let pip = |extra: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]);
        cmd.args(extra).args(&missing);
        run(&mut cmd)
    };
    // Debian's own python3 is "externally managed" (PEP 668): say that this is wanted.
    pip(&[])
        .or_else(|_| pip(&["--break-system-packages"]))
        .with_context(|| {
            format!(
                "Could not install pip packages; fix it with: python3 -m pip install {}",
                missing.join(" ")
            )
        })
}

/// syslog-ng, the second receiver of the syslog output tests. Debian's `syslog-ng-core`
/// conflicts with `rsyslog` (installing it removes rsyslog), so its package is downloaded
/// (`apt-get download`) and unpacked (`dpkg -x`) into ~/.cache/hbwatch/syslog-ng/root
/// instead, where agent/tests/support/syslog_ng.rs runs it from; its libraries come from
/// APT_PACKAGES. Idempotent: a local probe when it is there.
fn syslog_ng() -> Result<()> {
    let dir = home()
        .ok_or_else(|| anyhow!("HOME is not set; set it and re-run `cargo xtask bootstrap`."))?
        .join(".cache/hbwatch/syslog-ng");
    let root = dir.join("root");
    if root.join("usr/sbin/syslog-ng").exists() {
        eprintln!("xtask: syslog-ng ok (unpacked in {})", root.display());
        return Ok(());
    }
    if which("apt-get").is_none() || which("dpkg").is_none() {
        eprintln!("xtask: warning: no apt-get/dpkg: not unpacking syslog-ng (its tests skip)");
        return Ok(());
    }
    eprintln!("xtask: unpacking syslog-ng-core into {}", root.display());
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let download = || {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(&dir)
            .args(["-q", "download", "syslog-ng-core"]);
        run(&mut cmd)
    };
    if download().is_err() {
        // No package lists yet (a fresh machine): fetch them once and try again.
        apt_get(&["update"])?;
        download().context("apt-get download syslog-ng-core")?;
    }
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("syslog-ng-core_") && n.ends_with(".deb"))
        })
        .max()
        .ok_or_else(|| {
            anyhow!(
                "apt-get download left no syslog-ng-core_*.deb in {}",
                dir.display()
            )
        })?;
    let tmp = dir.join("root.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))
        .with_context(|| format!("dpkg -x {}", deb.display()))?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root)
        .with_context(|| format!("could not rename to {}", root.display()))?;
    Ok(())
}

/// What `cargo xtask dist` needs on top: the musl target for the static binary, and its
/// Debian packages (with `--check`, those the checks run).
pub fn dist_tools(no_apt: bool, check: bool) -> Result<()> {
    musl_target()?;
    if no_apt {
        return Ok(());
    }
    let mut packages = crate::dist::APT_PACKAGES.to_vec();
    if check {
        packages.extend(crate::dist::CHECK_APT_PACKAGES);
    }
    apt_packages(&packages)
}

/// `rustup target add` for the toolchain cargo uses here (a local probe when present).
fn musl_target() -> Result<()> {
    let target = crate::dist::TARGET;
    let installed = probe(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|out| out.lines().any(|l| l.trim() == target));
    if installed {
        eprintln!("xtask: {target} target ok");
        return Ok(());
    }
    eprintln!("xtask: installing the {target} target");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(crate::workspace_root())
        .args(["target", "add", target]);
    let fix = display(&cmd);
    run(&mut cmd).with_context(|| format!("Could not add the {target} target; fix it with: {fix}"))
}

/// `$CARGO_HOME`, defaulting to `~/.cargo` like rustup does.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cargo")))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn rustup_toolchains() -> Result<Vec<String>> {
    let list = probe(Command::new("rustup").args(["toolchain", "list"]))
        .ok_or_else(|| anyhow!("`rustup toolchain list` failed; check that rustup works."))?;
    Ok(list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// True if `toolchains` has the plain channel (`nightly-<host>`), not a dated one.
fn has_channel(toolchains: &[String], channel: &str) -> bool {
    toolchains.iter().any(|t| {
        t.strip_prefix(channel)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn nightly(toolchains: &[String]) -> Result<()> {
    if has_channel(toolchains, "nightly") {
        eprintln!("xtask: nightly toolchain ok");
        return Ok(());
    }
    eprintln!("xtask: installing nightly toolchain");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "toolchain",
        "install",
        "nightly",
        "--profile",
        "minimal",
        "-c",
        "rust-src",
    ]);
    let fix = display(&cmd);
    run(&mut cmd)
        .with_context(|| format!("Could not install the nightly toolchain; fix it with: {fix}"))
}

fn rust_src() -> Result<()> {
    let installed = probe(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .is_some_and(|out| out.lines().any(|l| l.trim().starts_with("rust-src")));
    if installed {
        eprintln!("xtask: rust-src (nightly) ok");
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for nightly");
    let mut cmd = Command::new("rustup");
    cmd.args(["component", "add", "rust-src", "--toolchain", "nightly"]);
    let fix = display(&cmd);
    run(&mut cmd)
        .with_context(|| format!("Could not install rust-src for nightly; fix it with: {fix}"))
}

/// bpf-linker must load the same LLVM major as nightly's rustc, because it
/// reads the bitcode that rustc emits. Prebuilt releases bundle another LLVM,
/// so build it against the libLLVM shipped in nightly's sysroot.
fn bpf_linker(toolchains: &[String]) -> Result<()> {
    let major = nightly_llvm_major()?;
    if let Some(version) = bpf_linker_version() {
        eprintln!("xtask: bpf-linker ok ({version}; nightly LLVM {major})");
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker for nightly's LLVM {major} (takes about a minute)");

    let prefix = home()
        .ok_or_else(|| anyhow!("HOME is not set; set it and re-run `cargo xtask bootstrap`."))?
        .join(format!(".cache/hbwatch/llvm-{major}"));
    // Use stable cargo to build bpf-linker; only its libLLVM comes from nightly.
    let mut cmd = Command::new("cargo");
    if has_channel(toolchains, "stable") {
        cmd.arg("+stable");
    }
    cmd.env("LLVM_PREFIX", &prefix).args([
        "install",
        "bpf-linker",
        "--locked",
        // Replace an installed but broken (wrong libLLVM) binary.
        "--force",
        "--version",
        "^0.13",
        "--no-default-features",
        "--features",
        &format!("llvm-{major}"),
    ]);
    let fix = display(&cmd);
    let context = || format!("Could not install bpf-linker for LLVM {major}; fix it with: {fix}");

    link_nightly_llvm(&prefix.join("lib"), &major).with_context(context)?;
    run(&mut cmd).with_context(context)?;
    match bpf_linker_version() {
        Some(version) => {
            eprintln!("xtask: bpf-linker ok ({version}; nightly LLVM {major})");
            Ok(())
        }
        None => Err(anyhow!(
            "`bpf-linker --version` still fails after installing it"
        ))
        .with_context(context),
    }
}

/// Major of `LLVM version: 22.1.4` in `rustc +nightly -vV`.
fn nightly_llvm_major() -> Result<String> {
    let out = probe(Command::new("rustc").args(["+nightly", "-vV"]))
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` failed; fix the nightly toolchain with: rustup toolchain install nightly --profile minimal -c rust-src"))?;
    out.lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .filter(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("`rustc +nightly -vV` printed no LLVM version; reinstall nightly with: rustup toolchain install nightly --force"))
}

/// `bpf-linker --version` if it is found and starts (libLLVM resolves).
fn bpf_linker_version() -> Option<String> {
    let exe = which("bpf-linker")?;
    let out = probe(Command::new(exe).arg("--version"))?;
    Some(out.lines().next().unwrap_or("").trim().to_owned())
}

/// Point `dir` at nightly's libLLVM. bpf-linker records `dir` as its rpath,
/// which is why it lives under ~/.cache and not in /tmp.
fn link_nightly_llvm(dir: &Path, major: &str) -> Result<()> {
    let sysroot = probe(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .ok_or_else(|| anyhow!("`rustc +nightly --print sysroot` failed"))?;
    let src_dir = Path::new(sysroot.trim()).join("lib");
    let name = format!("libLLVM.so.{major}");
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&src_dir)
        .with_context(|| format!("could not read {}", src_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == name || n.starts_with(&format!("{name}.")))
        })
        .collect();
    libs.sort();
    ensure!(!libs.is_empty(), "no {name}* in {}", src_dir.display());

    std::fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
    // Drop links left over from an older nightly.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let stale = entry.file_name().to_string_lossy().starts_with("libLLVM")
            && path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink());
        if stale {
            std::fs::remove_file(&path)
                .with_context(|| format!("could not remove {}", path.display()))?;
        }
    }
    for lib in &libs {
        let link = dir.join(lib.file_name().expect("read_dir entries have names"));
        symlink(lib, &link)?;
    }
    symlink(&libs[0], &dir.join("libLLVM.so"))
}

fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).with_context(|| {
        format!(
            "could not symlink {} -> {}",
            link.display(),
            target.display()
        )
    })
}

fn apt_packages(packages: &[&str]) -> Result<()> {
    if which("dpkg-query").is_none() {
        eprintln!(
            "xtask: warning: dpkg-query not found (not Debian/Ubuntu?); skipping apt, the tests need: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("xtask: apt packages ok ({})", packages.join(" "));
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() {
        eprintln!(
            "xtask: warning: not root, not installing apt packages the tests need; run: sudo apt-get update && sudo apt-get install -y {list}"
        );
        return Ok(());
    }
    eprintln!("xtask: installing apt packages: {list}");
    let context = || {
        format!("Could not install apt packages ({list}); fix it with: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {list}")
    };
    apt_get(&["update"]).with_context(context)?;
    let mut install = vec!["install", "-y"];
    install.extend(&missing);
    apt_get(&install).with_context(context)?;
    let still: Vec<&str> = missing
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !still.is_empty() {
        return Err(anyhow!(
            "still not installed after apt-get: {}",
            still.join(" ")
        ))
        .with_context(context);
    }
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("install ok installed"))
}

/// Run apt-get, waiting up to ~2 min for locks held by another apt/dpkg.
/// `DPkg::Lock::Timeout` only covers the dpkg lock, not the lists/archives
/// locks, so also retry when apt-get reports "Could not get lock".
fn apt_get(args: &[&str]) -> Result<()> {
    const WAIT: Duration = Duration::from_secs(120);
    let start = Instant::now();
    loop {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-o", "DPkg::Lock::Timeout=120"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        let shown = display(&cmd);
        eprintln!("xtask: $ {shown}");
        let out = cmd
            .output()
            .with_context(|| format!("could not start `{shown}`"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprint!("{stderr}");
        if out.status.success() {
            return Ok(());
        }
        if stderr.contains("Could not get lock") && start.elapsed() < WAIT {
            eprintln!("xtask: apt is locked by another process, retrying in 5 s");
            thread::sleep(Duration::from_secs(5));
            continue;
        }
        bail!("`{shown}` failed ({})", out.status);
    }
}
