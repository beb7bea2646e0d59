//! `cargo xtask dist`: hbwatch as operators install it. One static binary (musl, the
//! eBPF object embedded) goes into every artifact under target/dist:
//! - `hbwatch`: the bare binary (what `vm-test --agent` boots);
//! - `hbwatch_VERSION_amd64.deb`: binary, hardened unit, conffile, man pages,
//!   completions, docs, copyright, maintainer scripts (dpkg-deb);
//! - `hbwatch-VERSION-x86_64-linux-musl.tar.xz`: the same tree for other distributions;
//! - `hbwatch-VERSION-oci.tar`: an OCI image archive holding only the binary (umoci, no
//!   registry, no base image), and `hbwatch-k8s.yaml`, a DaemonSet for it;
//! - `SHA256SUMS` over all of them.
//!
//! `--check` then proves them on this machine (dist/check.rs).

mod check;

pub use check::CHECK_APT_PACKAGES;

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

use crate::cmd::{probe, run, which};

/// The static target: no libc needed on the host, so it runs on Debian 11, Ubuntu 20.04
/// and RHEL 8 alike.
pub const TARGET: &str = "x86_64-unknown-linux-musl";
const DEB_ARCH: &str = "amd64";
/// The workspace version, which hbwatch shares (`version.workspace = true`).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Debian packages `dist` uses: musl's headers for the C in ring; umoci for the image.
pub const APT_PACKAGES: &[&str] = &["musl-tools", "umoci"];

pub struct Options {
    pub check: bool,
}

/// Everything one run produced, in `dir`.
pub struct Artifacts {
    pub dir: PathBuf,
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub tarball: PathBuf,
    pub oci: PathBuf,
    pub manifest: PathBuf,
    pub stamp: Stamp,
}

/// What identifies this build: HEAD, and the time used for `--version` and file dates.
#[derive(Clone)]
pub struct Stamp {
    /// `git rev-parse --short=12 HEAD`, `-dirty` with uncommitted changes to tracked files.
    pub commit: String,
    /// SOURCE_DATE_EPOCH if set (reproducible builds), else HEAD's commit time.
    pub epoch: u64,
    /// The build day, UTC: SOURCE_DATE_EPOCH's if set, else today.
    pub date: String,
}

pub fn dist(opts: &Options) -> Result<()> {
    let start = Instant::now();
    let artifacts = build_all()?;
    let built = start.elapsed();
    eprintln!(
        "xtask: dist: built in {:.0} s, in {}:",
        built.as_secs_f64(),
        artifacts.dir.display()
    );
    for path in artifacts.list() {
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "xtask:   {:<44} {:>6.1} MB",
            file_name(path),
            size as f64 / 1e6
        );
    }
    if opts.check {
        check::check(&artifacts)?;
        eprintln!(
            "xtask: dist --check: all passed; {:.0} s in all",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

impl Artifacts {
    fn list(&self) -> [&Path; 5] {
        [
            &self.binary,
            &self.deb,
            &self.tarball,
            &self.oci,
            &self.manifest,
        ]
    }
}

fn build_all() -> Result<Artifacts> {
    let root = crate::workspace_root();
    let out = crate::target_dir().join("dist");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("could not empty {}", out.display()))?;
    }
    fs::create_dir_all(&out).with_context(|| format!("could not create {}", out.display()))?;
    let stamp = Stamp::of_head()?;

    let binary = build_binary(&stamp, &out)?;
    // Man pages and completions come from the binary's own CLI definition.
    let gen = out.join("generated");
    run(Command::new(&binary).arg("generate-docs").arg(&gen))?;
    let config = probe(Command::new(&binary).args(["config", "--print-default"]))
        .ok_or_else(|| anyhow!("`hbwatch config --print-default` failed"))?;
    let third_party = third_party()?;
    let common = Common {
        root,
        binary: &binary,
        gen: &gen,
        config: &config,
        third_party: &third_party,
        stamp: &stamp,
    };

    let deb = deb(&common, &out)?;
    let tarball = tarball(&common, &out)?;
    let oci = oci_image(&common, &out)?;
    let manifest = k8s_manifest(root, &out)?;
    let artifacts = Artifacts {
        dir: out,
        binary,
        deb,
        tarball,
        oci,
        manifest,
        stamp,
    };
    checksums(&artifacts)?;
    Ok(artifacts)
}

impl Stamp {
    fn of_head() -> Result<Stamp> {
        let git = |args: &[&str]| {
            probe(
                Command::new("git")
                    .current_dir(crate::workspace_root())
                    .args(args),
            )
            .map(|s| s.trim().to_owned())
        };
        let mut commit = git(&["rev-parse", "--short=12", "HEAD"]).ok_or_else(|| {
            anyhow!("`git rev-parse HEAD` failed: dist builds from a git checkout")
        })?;
        if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) {
            commit.push_str("-dirty");
        }
        let source_date = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let epoch = match source_date {
            Some(e) => e,
            None => git(&["log", "-1", "--format=%ct"])
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| anyhow!("`git log -1 --format=%ct` failed"))?,
        };
        let mut date = Command::new("date");
        date.args(["-u", "+%Y-%m-%d"]);
        if let Some(e) = source_date {
            date.arg(format!("--date=@{e}"));
        }
        let date = probe(&mut date)
            .map(|s| s.trim().to_owned())
            .ok_or_else(|| anyhow!("`date -u` failed"))?;
        Ok(Stamp {
            commit,
            epoch,
            date,
        })
    }

    /// RFC 3339, for the image's creation time.
    fn rfc3339(&self) -> Result<String> {
        probe(Command::new("date").args([
            "-u",
            "+%Y-%m-%dT%H:%M:%SZ",
            &format!("--date=@{}", self.epoch),
        ]))
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| anyhow!("`date -u` failed"))
    }
}

/// Release build for the musl target, stripped into `out/hbwatch`. The commit and date
/// reach `hbwatch --version` through the environment (only the binary's crate rebuilds
/// when they change).
fn build_binary(stamp: &Stamp, out: &Path) -> Result<PathBuf> {
    run(crate::cargo()
        .args([
            "build",
            "--release",
            "--package",
            "hbwatch",
            "--bin",
            "hbwatch",
        ])
        .args(["--target", TARGET])
        .env("HBWATCH_GIT_COMMIT", &stamp.commit)
        .env("HBWATCH_BUILD_DATE", &stamp.date))?;
    let built = crate::target_dir()
        .join(TARGET)
        .join("release")
        .join("hbwatch");
    let binary = out.join("hbwatch");
    let strip =
        which("strip").ok_or_else(|| anyhow!("strip not found: apt-get install binutils"))?;
    run(Command::new(strip)
        .args(["--strip-all", "--remove-section=.comment"])
        .arg("-o")
        .arg(&binary)
        .arg(&built))?;
    Ok(binary)
}

/// What the .deb, the tarball and the image are made of.
struct Common<'a> {
    root: &'a Path,
    binary: &'a Path,
    gen: &'a Path,
    config: &'a str,
    third_party: &'a str,
    stamp: &'a Stamp,
}

impl Common<'_> {
    fn packaging(&self, name: &str) -> PathBuf {
        self.root.join("packaging").join(name)
    }

    /// The files both the .deb and the tarball install, by their path under `/`;
    /// `unit_dir`, `zsh_dir`: where this kind of host looks for units and zsh functions.
    fn tree(&self, unit_dir: &str, zsh_dir: &str) -> Result<Tree> {
        let mut t = Tree::default();
        t.file("usr/bin/hbwatch", self.binary, 0o755)?;
        t.file(
            &format!("{unit_dir}/hbwatch.service"),
            &self.packaging("hbwatch.service"),
            0o644,
        )?;
        let mut pages: Vec<PathBuf> = read_dir(&self.gen.join("man1"))?;
        pages.sort();
        for page in pages {
            let name = file_name(&page);
            t.bytes(
                &format!("usr/share/man/man1/{name}.gz"),
                gzip(&fs::read(&page)?)?,
                0o644,
            );
        }
        let completions = self.gen.join("completions");
        t.file(
            "usr/share/bash-completion/completions/hbwatch",
            &completions.join("hbwatch.bash"),
            0o644,
        )?;
        t.file(
            &format!("{zsh_dir}/_hbwatch"),
            &completions.join("_hbwatch"),
            0o644,
        )?;
        t.file(
            "usr/share/fish/vendor_completions.d/hbwatch.fish",
            &completions.join("hbwatch.fish"),
            0o644,
        )?;
        let doc = "usr/share/doc/hbwatch";
        for (name, src) in [
            ("README.md", "README.md"),
            ("SECURITY.md", "SECURITY.md"),
            ("OPERATIONS.md", "docs/OPERATIONS.md"),
            ("EVENTS.md", "docs/EVENTS.md"),
            ("PROTOCOLS.md", "docs/PROTOCOLS.md"),
            ("outputs/loki.md", "docs/outputs/loki.md"),
            ("outputs/otlp.md", "docs/outputs/otlp.md"),
            (
                "outputs/syslog-and-file.md",
                "docs/outputs/syslog-and-file.md",
            ),
            // Grafana dashboard, Prometheus alert rules (and their promtool tests), Loki
            // ruler rules (docs/OPERATIONS.md, Dashboards and alerts).
            (
                "grafana/hbwatch-dashboard.json",
                "packaging/grafana/hbwatch-dashboard.json",
            ),
            (
                "prometheus/hbwatch-alerts.yml",
                "packaging/prometheus/hbwatch-alerts.yml",
            ),
            (
                "prometheus/hbwatch-alerts.test.yml",
                "packaging/prometheus/hbwatch-alerts.test.yml",
            ),
            ("loki/hbwatch-rules.yml", "packaging/loki/hbwatch-rules.yml"),
            // Index templates for Elasticsearch/OpenSearch (docs/EVENTS.md).
            (
                "elasticsearch/hbwatch-template.json",
                "packaging/elasticsearch/hbwatch-template.json",
            ),
            (
                "elasticsearch/hbwatch-template-opensearch.json",
                "packaging/elasticsearch/hbwatch-template-opensearch.json",
            ),
        ] {
            t.file(&format!("{doc}/{name}"), &self.root.join(src), 0o644)?;
        }
        self.legal(&mut t)?;
        Ok(t)
    }

    /// The copyright file and the list of crates linked in: with every copy of the binary.
    fn legal(&self, t: &mut Tree) -> Result<()> {
        let doc = "usr/share/doc/hbwatch";
        t.file(
            &format!("{doc}/copyright"),
            &self.packaging("debian/copyright"),
            0o644,
        )?;
        t.bytes(
            &format!("{doc}/THIRD-PARTY"),
            self.third_party.as_bytes().to_vec(),
            0o644,
        );
        Ok(())
    }
}

fn deb(c: &Common, out: &Path) -> Result<PathBuf> {
    let changelog = fs::read_to_string(c.packaging("debian/changelog"))?;
    let top = format!("hbwatch ({VERSION})");
    ensure!(
        changelog.starts_with(&top),
        "packaging/debian/changelog must start with an entry for {top}, as Cargo.toml's version"
    );
    // Debian's locations: units in /lib (also on hosts without merged /usr).
    let mut t = c.tree("lib/systemd/system", "usr/share/zsh/vendor-completions")?;
    t.bytes(
        "etc/hbwatch/hbwatch.toml",
        c.config.as_bytes().to_vec(),
        0o644,
    );
    t.bytes(
        "usr/share/doc/hbwatch/changelog.gz",
        gzip(changelog.as_bytes())?,
        0o644,
    );
    t.file(
        "usr/share/lintian/overrides/hbwatch",
        &c.packaging("debian/lintian-overrides"),
        0o644,
    )?;

    let dir = out.join("deb");
    t.write(&dir, c.stamp.epoch)?;
    let control_dir = dir.join("DEBIAN");
    fs::create_dir_all(&control_dir)?;
    let control = fs::read_to_string(c.packaging("debian/control"))?
        .replace("@VERSION@", VERSION)
        .replace("@ARCH@", DEB_ARCH)
        .replace("@INSTALLED_SIZE@", &t.installed_kib().to_string());
    write(&control_dir.join("control"), control.as_bytes(), 0o644)?;
    for (name, mode) in [
        ("conffiles", 0o644),
        ("postinst", 0o755),
        ("prerm", 0o755),
        ("postrm", 0o755),
    ] {
        write(
            &control_dir.join(name),
            &fs::read(c.packaging(&format!("debian/{name}")))?,
            mode,
        )?;
    }
    write(
        &control_dir.join("md5sums"),
        t.md5sums(&dir)?.as_bytes(),
        0o644,
    )?;

    let deb = out.join(format!("hbwatch_{VERSION}_{DEB_ARCH}.deb"));
    run(Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", c.stamp.epoch.to_string())
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&dir)
        .arg(&deb))?;
    Ok(deb)
}

/// The same tree for hosts without dpkg, under one top directory, with the sysusers.d
/// entry and the default config as an example (never over an existing one).
fn tarball(c: &Common, out: &Path) -> Result<PathBuf> {
    let name = format!("hbwatch-{VERSION}-x86_64-linux-musl");
    let mut t = c.tree("usr/lib/systemd/system", "usr/share/zsh/site-functions")?;
    t.file(
        "usr/lib/sysusers.d/hbwatch.conf",
        &c.packaging("sysusers.d/hbwatch.conf"),
        0o644,
    )?;
    t.bytes(
        "usr/share/doc/hbwatch/hbwatch.toml",
        c.config.as_bytes().to_vec(),
        0o644,
    );
    t.file("INSTALL", &c.packaging("INSTALL"), 0o644)?;
    let path = out.join(format!("{name}.tar.xz"));
    let file =
        fs::File::create(&path).with_context(|| format!("could not create {}", path.display()))?;
    let xz = liblzma::write::XzEncoder::new(file, 9);
    let xz = t.append_to(tar::Builder::new(xz), &name, c.stamp.epoch)?;
    xz.finish()?.sync_all()?;
    Ok(path)
}

/// An OCI image with the binary, a default config and the copyright: nothing else (no
/// shell, no libc). umoci writes the layout; the archive is that layout as a tar, which
/// `podman load`, `skopeo copy oci-archive:` and `ctr import` read.
fn oci_image(c: &Common, out: &Path) -> Result<PathBuf> {
    let umoci = which("umoci").ok_or_else(|| anyhow!("umoci not found: apt-get install umoci"))?;
    let mut t = Tree::default();
    t.file("usr/bin/hbwatch", c.binary, 0o755)?;
    t.bytes(
        "etc/hbwatch/hbwatch.toml",
        c.config.as_bytes().to_vec(),
        0o644,
    );
    c.legal(&mut t)?;
    let rootfs = out.join("oci-rootfs");
    t.write(&rootfs, c.stamp.epoch)?;

    let layout = out.join("oci");
    let image = format!("{}:hbwatch:{VERSION}", layout.display());
    let created = c.stamp.rfc3339()?;
    let umoci = |args: &[&str]| run(Command::new(&umoci).args(args));
    umoci(&["init", "--layout", &layout.to_string_lossy()])?;
    umoci(&["new", "--image", &image])?;
    umoci(&[
        "insert",
        "--image",
        &image,
        "--history.created",
        &created,
        "--history.created_by",
        "cargo xtask dist",
        &rootfs.to_string_lossy(),
        "/",
    ])?;
    umoci(&[
        "config",
        "--image",
        &image,
        "--created",
        &created,
        "--history.created",
        &created,
        "--config.entrypoint",
        "/usr/bin/hbwatch",
        "--config.cmd",
        "run",
        "--config.cmd",
        "--format",
        "--config.cmd",
        "json",
        "--config.env",
        "HBWATCH_CONFIG=/etc/hbwatch/hbwatch.toml",
        "--config.label",
        &format!("org.opencontainers.image.version={VERSION}"),
        "--config.label",
        &format!("org.opencontainers.image.revision={}", c.stamp.commit),
        "--config.label",
        "org.opencontainers.image.title=hbwatch",
        "--config.label",
        "org.opencontainers.image.licenses=MIT OR Apache-2.0",
    ])?;
    umoci(&["gc", "--layout", &layout.to_string_lossy()])?;

    let archive = out.join(format!("hbwatch-{VERSION}-oci.tar"));
    let file = fs::File::create(&archive)
        .with_context(|| format!("could not create {}", archive.display()))?;
    let mut tar = tar::Builder::new(file);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", &layout)
        .with_context(|| format!("could not archive {}", layout.display()))?;
    tar.into_inner()?.sync_all()?;
    Ok(archive)
}

/// packaging/k8s/hbwatch.yaml with this version and packaging/k8s/hbwatch.toml as the
/// ConfigMap (so `--check` can validate that config with the binary).
fn k8s_manifest(root: &Path, out: &Path) -> Result<PathBuf> {
    let dir = root.join("packaging/k8s");
    let config = fs::read_to_string(dir.join("hbwatch.toml"))?;
    let indented: Vec<String> = config
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect();
    let yaml = fs::read_to_string(dir.join("hbwatch.yaml"))?
        .replace("@VERSION@", VERSION)
        .replace("@CONFIG@", &indented.join("\n"));
    let path = out.join("hbwatch-k8s.yaml");
    write(&path, yaml.as_bytes(), 0o644)?;
    Ok(path)
}

/// `SHA256SUMS` in `sha256sum -c` format.
fn checksums(a: &Artifacts) -> Result<()> {
    let mut sums = String::new();
    for path in a.list() {
        sums.push_str(&format!(
            "{}  {}\n",
            crate::vm::sha256_file(path)?,
            file_name(path)
        ));
    }
    write(&a.dir.join("SHA256SUMS"), sums.as_bytes(), 0o644)
}

/// The crates linked into the binary (normal dependencies for the musl target, not
/// build or dev ones) with their licenses, for the copyright file's pointer.
fn third_party() -> Result<String> {
    let json = probe(crate::cargo().args([
        "metadata",
        "--format-version",
        "1",
        "--filter-platform",
        TARGET,
    ]))
    .ok_or_else(|| anyhow!("`cargo metadata` failed"))?;
    let meta: serde_json::Value = serde_json::from_str(&json)?;
    let packages: std::collections::HashMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: std::collections::HashMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == "hbwatch")
        .map(|(id, _)| *id)
        .ok_or_else(|| anyhow!("cargo metadata has no hbwatch package"))?;
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null());
            if let (true, Some(pkg)) = (normal, dep["pkg"].as_str()) {
                todo.push(pkg);
            }
        }
    }
    let mut lines: Vec<String> = seen
        .iter()
        .map(|id| packages[id])
        .filter(|p| p["source"].is_string()) // not the workspace's own crates
        .map(|p| {
            format!(
                "{} {}: {}",
                p["name"].as_str().unwrap_or("?"),
                p["version"].as_str().unwrap_or("?"),
                p["license"].as_str().unwrap_or("see the crate")
            )
        })
        .collect();
    lines.sort();
    Ok(format!(
        "Crates statically linked into /usr/bin/hbwatch ({}), from crates.io, with their licenses:\n\n{}\n",
        lines.len(),
        lines.join("\n")
    ))
}

/// Files by their path under `/`, written to a directory or a tar with fixed owners,
/// modes and times.
#[derive(Default)]
struct Tree {
    entries: std::collections::BTreeMap<String, (Vec<u8>, u32)>,
}

impl Tree {
    fn file(&mut self, dest: &str, src: &Path, mode: u32) -> Result<()> {
        let data = fs::read(src).with_context(|| format!("could not read {}", src.display()))?;
        self.bytes(dest, data, mode);
        Ok(())
    }

    fn bytes(&mut self, dest: &str, data: Vec<u8>, mode: u32) {
        self.entries.insert(dest.to_owned(), (data, mode));
    }

    /// Directories of every entry, parents first.
    fn dirs(&self) -> std::collections::BTreeSet<String> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.entries.keys() {
            let mut p = Path::new(path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_string_lossy().into_owned());
                p = d.parent();
            }
        }
        dirs
    }

    fn write(&self, dir: &Path, mtime: u64) -> Result<()> {
        for d in self.dirs() {
            let path = dir.join(d);
            fs::create_dir_all(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        }
        for (path, (data, mode)) in &self.entries {
            let dest = dir.join(path);
            write(&dest, data, *mode)?;
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            fs::File::options()
                .write(true)
                .open(&dest)?
                .set_modified(time)?;
        }
        Ok(())
    }

    fn append_to<W: std::io::Write>(
        &self,
        mut tar: tar::Builder<W>,
        top: &str,
        mtime: u64,
    ) -> Result<W> {
        let header = |size: u64, mode: u32, kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(mode);
            h.set_entry_type(kind);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h
        };
        let mut dirs: Vec<String> = vec![String::new()];
        dirs.extend(self.dirs());
        for d in dirs {
            let path = format!("{top}/{d}");
            let mut h = header(0, 0o755, tar::EntryType::Directory);
            tar.append_data(&mut h, path.trim_end_matches('/'), std::io::empty())?;
        }
        for (path, (data, mode)) in &self.entries {
            let mut h = header(data.len() as u64, *mode, tar::EntryType::Regular);
            tar.append_data(&mut h, format!("{top}/{path}"), &data[..])?;
        }
        Ok(tar.into_inner()?)
    }

    /// dpkg's Installed-Size: KiB, each file and directory rounded up to 1 KiB.
    fn installed_kib(&self) -> u64 {
        let files: u64 = self
            .entries
            .values()
            .map(|(d, _)| (d.len() as u64).div_ceil(1024))
            .sum();
        files + self.dirs().len() as u64
    }

    /// DEBIAN/md5sums (conffiles included, as dpkg-buildpackage does) of the tree as
    /// written under `dir`.
    fn md5sums(&self, dir: &Path) -> Result<String> {
        let out = Command::new("md5sum")
            .current_dir(dir)
            .arg("--")
            .args(self.entries.keys())
            .output()
            .context("could not start md5sum")?;
        ensure!(out.status.success(), "md5sum failed ({})", out.status);
        String::from_utf8(out.stdout).context("md5sum printed non-UTF-8")
    }
}

/// gzip -9n: no name or time in the header, so the same input gives the same bytes.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start gzip")?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow!("gzip writer panicked"))??;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, data).with_context(|| format!("could not write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not chmod {}", path.display()))
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(fs::read_dir(dir)
        .with_context(|| format!("could not read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
