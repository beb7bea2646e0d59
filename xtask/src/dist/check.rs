//! `cargo xtask dist --check`: what an operator would check, on this machine, as root.
//! The package is installed, looked at as installed, run (also as its service user with
//! the unit's capabilities, and through the live tests), then purged; the image runs
//! under podman. The package is purged whatever failed before, and what purge leaves
//! behind is compared with a listing taken before the install.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{anyhow, bail, ensure, Result};

use super::{file_name, Artifacts, TARGET, VERSION};
use crate::cmd::{display, is_root, probe, run, which};

/// Debian packages the checks run: lintian; podman and runc for the image (runc: crun
/// refuses hybrid cgroup hierarchies such as this machine's).
pub const CHECK_APT_PACKAGES: &[&str] = &["lintian", "podman", "runc"];

/// The unit's capabilities (packaging/hbwatch.service, AmbientCapabilities=) but
/// CAP_SYS_RESOURCE, which only kernels before 5.11 need and which a sandbox may not
/// have to give (this machine's root has not).
const UNIT_CAPS: &str = "+bpf,+perfmon,+net_admin";

/// `systemd-analyze security` exposure the unit must stay at or under.
const MAX_EXPOSURE: f64 = 3.0;

/// Live tests run again with the installed /usr/bin/hbwatch: every protocol on a veth
/// pair, the unprivileged start with three capabilities, and [`SCALE_ASSOCIATIONS`] at
/// their real pace (`cargo xtask test`'s debug agent gets 10,000). (`cargo xtask vm-test
/// --agent target/dist/hbwatch` runs the whole live suite with this binary.)
const LIVE_TESTS: &[&str] = &["live_protocols", "live_privilege", "live_scale"];

/// live_scale's crowd here: 100,000 associations (its default, BENCHMARKS.md) need
/// hbgen and the veth path to keep up 200,000 frames a second beside the agent, which a
/// busy 2-core CI host did not (seconds behind: not the protocol's timing); 50,000 did.
const SCALE_ASSOCIATIONS: &str = "50000";

/// Trees whose listing must be the same before install and after purge.
const WATCHED: &[&str] = &["/etc", "/usr", "/lib", "/var", "/opt", "/srv"];
/// Under WATCHED, what other programs change meanwhile: dpkg's and apt's own state and
/// logs, man-db's index, podman's storage.
const NOT_OURS: &[&str] = &[
    "/var/lib/dpkg",
    "/var/log",
    "/var/cache",
    "/var/lib/containers",
    "/var/tmp",
    "/var/lib/apt",
];
/// What purge keeps on purpose: the system user `hbwatch` (shadow's backup copies of
/// the files adduser edited appear with it).
const KEPT: &[&str] = &[
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
];

pub fn check(a: &Artifacts) -> Result<()> {
    ensure!(
        is_root(),
        "dist --check installs the package and loads eBPF: run it as root"
    );
    let mut c = Checker::default();
    c.step("binary is static", || static_binary(&a.binary));
    c.step("--version of the built binary", || {
        version(&a.binary, a).map(|_| ())
    });
    c.step("SHA256SUMS", || {
        run(Command::new("sha256sum").current_dir(&a.dir).args([
            "--check",
            "--strict",
            "SHA256SUMS",
        ]))
    });
    c.step("lintian: no errors", || lintian(&a.deb));
    c.step("tarball contents", || tarball(a));
    c.step("k8s ConfigMap config is valid", || {
        run(Command::new(&a.binary)
            .args(["config", "--check"])
            .arg(crate::workspace_root().join("packaging/k8s/hbwatch.toml")))
    });
    c.step("unit hardening score", || {
        exposure(&a.dir.join("deb/lib/systemd/system/hbwatch.service")).map(|_| ())
    });

    if installed("hbwatch") {
        eprintln!("xtask: check: hbwatch is installed here; purging it before the check");
        run(Command::new("dpkg").args(["--purge", "hbwatch"]))?;
    }
    let before = listing()?;
    let install = c.step("dpkg -i", || {
        run(Command::new("dpkg").arg("--install").arg(&a.deb))
    });
    if install {
        installed_checks(&mut c, a);
    }
    if install {
        c.step("enabled and run, as an admin would leave it", leave_traces);
    }
    c.step("dpkg --purge", || {
        run(Command::new("dpkg").args(["--purge", "hbwatch"]))
    });
    c.step("purge leaves nothing behind", || purge_leftovers(&before));
    c.step("OCI image under podman", || podman(a));
    c.finish()
}

fn installed_checks(c: &mut Checker, a: &Artifacts) {
    let bin = Path::new("/usr/bin/hbwatch");
    c.step("/usr/bin/hbwatch is the built binary", || {
        let (got, want) = (
            crate::vm::sha256_file(bin)?,
            crate::vm::sha256_file(&a.binary)?,
        );
        ensure!(got == want, "sha256 {got}, the built binary's is {want}");
        Ok(())
    });
    c.step("/usr/bin/hbwatch --version", || version(bin, a).map(|_| ()));
    c.step("man pages", || {
        let gen = a.dir.join("generated/man1");
        for page in super::read_dir(&gen)? {
            let name = file_name(&page);
            let topic = name.trim_end_matches(".1");
            let path = probe(Command::new("man").args(["-w", topic]))
                .ok_or_else(|| anyhow!("`man -w {topic}` found nothing"))?;
            ensure!(
                path.trim() == format!("/usr/share/man/man1/{name}.gz"),
                "`man -w {topic}` says {}",
                path.trim()
            );
        }
        Ok(())
    });
    c.step("completions", || {
        for f in [
            "/usr/share/bash-completion/completions/hbwatch",
            "/usr/share/zsh/vendor-completions/_hbwatch",
            "/usr/share/fish/vendor_completions.d/hbwatch.fish",
        ] {
            ensure!(Path::new(f).is_file(), "{f} is missing");
        }
        // bash loads it and registers a completion for hbwatch.
        run(Command::new("bash").args([
            "-c",
            "source /usr/share/bash-completion/completions/hbwatch && complete -p hbwatch",
        ]))
    });
    c.step("systemd-analyze verify", || {
        let out = Command::new("systemd-analyze")
            .args(["verify", "/lib/systemd/system/hbwatch.service"])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && err.trim().is_empty(),
            "systemd-analyze verify: {}{err}",
            out.status
        );
        Ok(())
    });
    c.step("Documentation= is installed", || {
        let unit = fs::read_to_string("/lib/systemd/system/hbwatch.service")?;
        for doc in unit
            .lines()
            .filter_map(|l| l.strip_prefix("Documentation="))
            .flat_map(str::split_whitespace)
        {
            if let Some(path) = doc.strip_prefix("file://") {
                ensure!(Path::new(path).is_file(), "{doc}: not installed");
            } else if let Some(page) = doc.strip_prefix("man:") {
                let topic = page.split('(').next().unwrap_or(page);
                probe(Command::new("man").args(["-w", topic]))
                    .ok_or_else(|| anyhow!("{doc}: no such man page"))?;
            }
        }
        Ok(())
    });
    c.step("config: conffile, root:hbwatch 0640", || config_access(bin));
    c.step("hbwatch check (root)", || {
        run(Command::new(bin).arg("check"))
    });
    c.step(
        "hbwatch check (user hbwatch, the unit's capabilities)",
        || run(as_service_user().arg(bin).arg("check")),
    );
    c.step("live tests with /usr/bin/hbwatch", || {
        // As `cargo xtask test` runs them (the default members), so nothing rebuilds.
        let mut cmd = crate::cargo();
        cmd.arg("test");
        for t in LIVE_TESTS {
            cmd.args(["--test", t]);
        }
        run(cmd
            .env("HBWATCH_BIN", bin)
            .env("HBWATCH_SCALE_ASSOCIATIONS", SCALE_ASSOCIATIONS))
    });
}

/// Runs each step, says how it went and how long it took; a failure does not stop the
/// others (the package must be purged in any case).
#[derive(Default)]
struct Checker {
    failed: Vec<String>,
    passed: usize,
}

impl Checker {
    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<()>) -> bool {
        let start = Instant::now();
        let result = f();
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                eprintln!("xtask: check: ok   {name} ({secs:.1} s)");
                self.passed += 1;
                true
            }
            Err(e) => {
                eprintln!("xtask: check: FAIL {name} ({secs:.1} s): {e:#}");
                self.failed.push(name.to_owned());
                false
            }
        }
    }

    fn finish(self) -> Result<()> {
        println!(
            "dist-check: {} passed, {} failed",
            self.passed,
            self.failed.len()
        );
        if !self.failed.is_empty() {
            bail!("dist --check failed: {}", self.failed.join("; "));
        }
        Ok(())
    }
}

/// No interpreter, no shared libraries: `file` and `ldd` say so, and the ELF has no
/// PT_INTERP.
fn static_binary(bin: &Path) -> Result<()> {
    let file = probe(Command::new("file").arg("--brief").arg(bin))
        .ok_or_else(|| anyhow!("`file {}` failed", bin.display()))?;
    ensure!(
        file.contains("statically linked") || file.contains("static-pie linked"),
        "file: {}",
        file.trim()
    );
    let ldd = Command::new("ldd").arg(bin).output()?;
    let said = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    ensure!(
        said.contains("statically linked") || said.contains("not a dynamic executable"),
        "ldd: {}",
        said.trim()
    );
    ensure!(
        crate::vm::is_static(bin)?,
        "{} has an ELF interpreter",
        bin.display()
    );
    eprintln!("xtask: check:      file: {}", file.trim());
    Ok(())
}

/// `--version` names this version, commit, date, the musl target and the eBPF hash.
fn version(bin: &Path, a: &Artifacts) -> Result<String> {
    let out = probe(Command::new(bin).arg("--version"))
        .ok_or_else(|| anyhow!("`{} --version` failed", bin.display()))?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .ok_or_else(|| anyhow!("no `{name}` line in --version:\n{out}"))
    };
    ensure!(
        out.starts_with(&format!("hbwatch {VERSION}\n")),
        "--version: {out}"
    );
    ensure!(field("commit:")? == a.stamp.commit, "--version: {out}");
    ensure!(field("build date:")? == a.stamp.date, "--version: {out}");
    let arch = TARGET.split('-').next().unwrap_or(TARGET);
    ensure!(
        field("target:")? == format!("{arch}-linux-musl (static)"),
        "--version: {out}"
    );
    let ebpf = field("eBPF object:")?;
    ensure!(
        ebpf.starts_with("sha256:") && ebpf.len() > 7 + 64,
        "--version: {out}"
    );
    Ok(out)
}

fn lintian(deb: &Path) -> Result<()> {
    let lintian =
        which("lintian").ok_or_else(|| anyhow!("lintian not found: apt-get install lintian"))?;
    let out = Command::new(lintian)
        .args([
            "--fail-on",
            "error",
            "--display-level",
            ">=info",
            "--no-tag-display-limit",
        ])
        .arg(deb)
        .output()?;
    let tags = String::from_utf8_lossy(&out.stdout);
    for line in tags.lines() {
        eprintln!("xtask: check:      lintian: {line}");
    }
    ensure!(
        out.status.success() && !tags.lines().any(|l| l.starts_with("E: ")),
        "lintian reported errors ({})",
        out.status
    );
    Ok(())
}

/// The tarball holds the binary (byte for byte), the unit, a page per subcommand, the
/// three completions and the sysusers.d entry.
fn tarball(a: &Artifacts) -> Result<()> {
    let file = fs::File::open(&a.tarball)?;
    let mut tar = tar::Archive::new(liblzma::read::XzDecoder::new(file));
    let mut names = BTreeSet::new();
    let mut binary_ok = false;
    let want = fs::read(&a.binary)?;
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let inner = path.split_once('/').map_or("", |(_, p)| p).to_owned();
        if inner == "usr/bin/hbwatch" {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data)?;
            binary_ok = data == want && entry.header().mode()? == 0o755;
        }
        names.insert(inner);
    }
    ensure!(
        binary_ok,
        "usr/bin/hbwatch is not the built binary (or not 0755)"
    );
    let mut wanted = vec![
        "usr/lib/systemd/system/hbwatch.service".to_owned(),
        "usr/lib/sysusers.d/hbwatch.conf".to_owned(),
        "usr/share/bash-completion/completions/hbwatch".to_owned(),
        "usr/share/zsh/site-functions/_hbwatch".to_owned(),
        "usr/share/fish/vendor_completions.d/hbwatch.fish".to_owned(),
        "usr/share/doc/hbwatch/copyright".to_owned(),
        "INSTALL".to_owned(),
    ];
    for page in super::read_dir(&a.dir.join("generated/man1"))? {
        wanted.push(format!("usr/share/man/man1/{}.gz", file_name(&page)));
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !names.contains(*w)).collect();
    ensure!(missing.is_empty(), "missing from the tarball: {missing:?}");
    Ok(())
}

/// `systemd-analyze security` of the unit file: the exposure level, at most MAX_EXPOSURE.
fn exposure(unit: &Path) -> Result<f64> {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let level = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for hbwatch.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok())
        .ok_or_else(|| {
            anyhow!("no exposure level in systemd-analyze security's output:\n{text}")
        })?;
    eprintln!(
        "xtask: check:      systemd-analyze security: exposure {level} (at most {MAX_EXPOSURE})"
    );
    ensure!(level <= MAX_EXPOSURE, "exposure {level} > {MAX_EXPOSURE}");
    Ok(level)
}

/// The config is a conffile, root:hbwatch 0640: the service user reads it, others not.
fn config_access(bin: &Path) -> Result<()> {
    let path = "/etc/hbwatch/hbwatch.toml";
    let conffiles = probe(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "hbwatch"]))
        .unwrap_or_default();
    ensure!(
        conffiles.contains(path),
        "{path} is not a conffile: {conffiles}"
    );
    let meta = fs::metadata(path)?;
    let group = probe(Command::new("getent").args(["group", "hbwatch"]))
        .and_then(|g| g.split(':').nth(2)?.trim().parse::<u32>().ok())
        .ok_or_else(|| anyhow!("no group hbwatch"))?;
    ensure!(
        meta.uid() == 0 && meta.gid() == group && meta.permissions().mode() & 0o7777 == 0o640,
        "{path}: uid {} gid {} mode {:o}",
        meta.uid(),
        meta.gid(),
        meta.permissions().mode() & 0o7777
    );
    run(as_service_user().arg(bin).args(["config", "--check", path]))?;
    let nobody = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .args(["config", "--check", path])
        .output()?;
    ensure!(!nobody.status.success(), "user nobody could read {path}");
    Ok(())
}

/// A command prefix that runs as the service's user with the unit's capabilities.
fn as_service_user() -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=hbwatch",
        "--regid=hbwatch",
        "--init-groups",
        &format!("--inh-caps={UNIT_CAPS}"),
        &format!("--ambient-caps={UNIT_CAPS}"),
    ]);
    cmd
}

/// What purge must also take away: the enablement link `systemctl enable` makes, and
/// what the service writes (systemd is not PID 1 on every build machine, so the spool
/// and a file output are made here as the service's user would).
fn leave_traces() -> Result<()> {
    run(Command::new("systemctl").args(["enable", "hbwatch.service"]))?;
    let uid_gid = |db: &str| {
        probe(Command::new("getent").args([db, "hbwatch"]))
            .and_then(|l| l.split(':').nth(2)?.trim().parse::<u32>().ok())
            .ok_or_else(|| anyhow!("no {db} entry hbwatch"))
    };
    let (uid, gid) = (uid_gid("passwd")?, uid_gid("group")?);
    for (dir, file) in [
        ("/var/lib/hbwatch/spool", "00000001.batch"),
        ("/var/log/hbwatch", "events.ndjson"),
    ] {
        fs::create_dir_all(dir)?;
        let path = Path::new(dir).join(file);
        fs::write(&path, "{}\n")?;
        for p in [Path::new(dir), &path] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))?;
        }
    }
    std::os::unix::fs::chown("/var/lib/hbwatch", Some(uid), Some(gid))?;
    Ok(())
}

fn installed(package: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.contains("installed") || s.contains("config-files"))
}

/// Every path under WATCHED but NOT_OURS.
fn listing() -> Result<BTreeSet<PathBuf>> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        if NOT_OURS.iter().any(|n| dir == Path::new(n)) {
            return;
        }
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            out.insert(path.clone());
            if is_dir {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for root in WATCHED {
        // /lib is a symlink to usr/lib on merged-/usr hosts: walked once, as /usr/lib.
        let p = Path::new(root);
        if p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            walk(p, &mut out);
        }
    }
    Ok(out)
}

fn purge_leftovers(before: &BTreeSet<PathBuf>) -> Result<()> {
    let after = listing()?;
    let left: Vec<&PathBuf> = after
        .difference(before)
        .filter(|p| !KEPT.iter().any(|k| p.as_path() == Path::new(k)))
        .collect();
    ensure!(left.is_empty(), "left behind by purge: {left:?}");
    // Named too, since /var/log is not in the listing.
    for ours in [
        "/etc/hbwatch",
        "/var/lib/hbwatch",
        "/var/log/hbwatch",
        "/etc/systemd/system/multi-user.target.wants/hbwatch.service",
    ] {
        ensure!(
            Path::new(ours).symlink_metadata().is_err(),
            "{ours} is still there after purge"
        );
    }
    let gone: Vec<&PathBuf> = before.difference(&after).collect();
    ensure!(gone.is_empty(), "gone after install and purge: {gone:?}");
    ensure!(
        probe(Command::new("getent").args(["passwd", "hbwatch"])).is_some(),
        "the system user hbwatch was removed (Debian keeps system users)"
    );
    eprintln!("xtask: check:      kept on purpose: the system user hbwatch");
    Ok(())
}

/// Load the archive into podman and run the binary as the DaemonSet does: host network,
/// every capability dropped but BPF, PERFMON and NET_ADMIN, read-only root.
fn podman(a: &Artifacts) -> Result<()> {
    let podman =
        which("podman").ok_or_else(|| anyhow!("podman not found: apt-get install podman"))?;
    let image = format!("localhost/hbwatch:{VERSION}");
    let manifest = fs::read_to_string(&a.manifest)?;
    ensure!(
        manifest.contains(&format!("image: {image}")),
        "{} does not name {image}",
        a.manifest.display()
    );
    let load = probe(Command::new(&podman).arg("load").arg("--input").arg(&a.oci))
        .ok_or_else(|| anyhow!("`podman load --input {}` failed", a.oci.display()))?;
    ensure!(load.contains(&image), "podman load: {load}");
    let run_in = |args: &[&str]| -> Result<String> {
        let mut cmd = Command::new(&podman);
        // runc: crun refuses this machine's hybrid cgroups. Limits at or below the
        // sandbox's: root here cannot raise them (no CAP_SYS_RESOURCE), podman's
        // defaults would.
        cmd.args([
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
        ])
        .args([
            "--ulimit",
            "nproc=1024:1024",
            "--network=host",
            "--read-only",
        ])
        .args(["--cap-drop=all", "--cap-add=bpf,perfmon,net_admin"])
        // As the DaemonSet: podman's default seccomp profile allows bpf(2) only with
        // CAP_SYS_ADMIN.
        .args(["--security-opt", "seccomp=unconfined", &image])
        .args(args);
        let shown = display(&cmd);
        let out = cmd.output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "`{shown}`: {}\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(text)
    };
    let result = (|| {
        let v = run_in(&["--version"])?;
        ensure!(v.contains(&a.stamp.commit), "--version in the image: {v}");
        let check = run_in(&["check"])?;
        eprintln!(
            "xtask: check:      in the image: {}",
            check.lines().last().unwrap_or("").trim()
        );
        Ok(())
    })();
    let _ = Command::new(&podman).args(["rmi", &image]).output();
    result
}
