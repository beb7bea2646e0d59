//! The VM's whole userspace as a newc cpio (what the kernel unpacks into its
//! rootfs): busybox for the init shell, host binaries with the shared
//! libraries `ldd` names for them, kernel modules, and the init script.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use object::Object as _;

use crate::cmd::probe;

#[derive(Clone)]
enum Entry {
    Dir,
    File { src: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// Paths (without the leading `/`) to entries; sorted, so parents come first.
#[derive(Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// The skeleton every VM gets: mount points, `/dev/console` (the kernel
    /// opens it for init before devtmpfs is mounted) and `/var/run`.
    pub fn skeleton() -> Initramfs {
        let mut fs = Initramfs::default();
        for dir in ["proc", "sys", "dev", "run", "tmp", "root", "etc", "var"] {
            fs.insert(dir, Entry::Dir);
        }
        fs.insert("dev/console", Entry::CharDev { major: 5, minor: 1 });
        // The tests open /var/run/netns/<ns>, which `ip netns add` creates under /run.
        fs.insert("var/run", Entry::Symlink("../run".into()));
        fs
    }

    fn insert(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_owned();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.entries
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Entry::Dir);
            parent = p.parent();
        }
        self.entries.insert(path, entry);
    }

    pub fn file(&mut self, dest: &str, src: &Path, mode: u32) {
        self.insert(
            dest,
            Entry::File {
                src: src.to_owned(),
                mode,
            },
        );
    }

    pub fn bytes(&mut self, dest: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.insert(
            dest,
            Entry::Bytes {
                data: data.into(),
                mode,
            },
        );
    }

    /// A dynamically linked host executable at `dest`, plus every shared
    /// library (and the loader) `ldd` resolves for it, at their host paths.
    pub fn executable(&mut self, dest: &str, src: &Path) -> Result<()> {
        self.file(dest, src, 0o755);
        for lib in shared_libraries(src)? {
            let path = lib.to_string_lossy().into_owned();
            self.file(&path, &lib, 0o755);
        }
        Ok(())
    }

    /// Write the archive to `out`.
    pub fn write(&self, out: &Path) -> Result<()> {
        let file =
            fs::File::create(out).with_context(|| format!("could not create {}", out.display()))?;
        let mut w = BufWriter::new(file);
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let builder = cpio::NewcBuilder::new(path)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (builder, data): (_, std::borrow::Cow<[u8]>) = match entry {
                Entry::Dir => (builder.mode(0o040_755).nlink(2), (&[][..]).into()),
                Entry::File { src, mode } => {
                    let data = fs::read(src)
                        .with_context(|| format!("could not read {}", src.display()))?;
                    (builder.mode(0o100_000 | mode).nlink(1), data.into())
                }
                Entry::Bytes { data, mode } => {
                    (builder.mode(0o100_000 | mode).nlink(1), data[..].into())
                }
                Entry::Symlink(target) => (
                    builder.mode(0o120_777).nlink(1),
                    target.as_bytes().to_vec().into(),
                ),
                Entry::CharDev { major, minor } => (
                    builder
                        .mode(0o020_600)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    (&[][..]).into(),
                ),
            };
            let size = u32::try_from(data.len())
                .map_err(|_| anyhow!("{path} is too large for a cpio entry"))?;
            let mut writer = builder.write(&mut w, size);
            writer.write_all(&data)?;
            writer.finish()?;
        }
        cpio::newc::trailer(&mut w)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("could not write {}", out.display()))
    }
}

/// Host paths of the shared objects `ldd` lists for `exe` (none for static ones).
fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let data = fs::read(exe).with_context(|| format!("could not read {}", exe.display()))?;
    let elf = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF file", exe.display()))?;
    // Static executables have no interpreter and no libraries to copy.
    let dynamic = elf
        .sections()
        .any(|s| object::ObjectSection::name(&s) == Ok(".interp"));
    if !dynamic {
        return Ok(Vec::new());
    }
    let out = probe(Command::new("ldd").arg(exe))
        .ok_or_else(|| anyhow!("`ldd {}` failed", exe.display()))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)";
        // linux-vdso.so.1 lives in the kernel.
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                ensure!(
                    !rest.starts_with("not found"),
                    "{}: shared library {} not found",
                    exe.display(),
                    name.trim()
                );
                rest.split(" (").next().unwrap_or("")
            }
            None => line.split(" (").next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if libs.is_empty() {
        bail!(
            "`ldd {}` listed no libraries for a dynamic executable",
            exe.display()
        );
    }
    Ok(libs)
}

/// True if the ELF file at `path` needs no dynamic loader.
pub fn is_static(path: &Path) -> Result<bool> {
    Ok(shared_libraries(path)?.is_empty())
}

/// PID 1: mount what the tests use, load the modules, run each test of each
/// binary on its own (so one hang or crash cannot hide the others), print a
/// marker line per test on the console, power off.
pub fn init_script(binaries: &[String], test_timeout_secs: u64) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
say() {{ echo "{MARKER} $*"; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf || say "mount bpffs FAILED"
mount -t debugfs debugfs /sys/kernel/debug || say "mount debugfs FAILED"
ip link set lo up
say "kernel $(uname -r)"
for m in $(cat /lib/modules/order); do
    if insmod /lib/modules/$m.ko; then say "module $m loaded"; else say "module $m FAILED"; fi
done
export CI=true HBWATCH_BIN=/bin/hbwatch HBWATCH_VM=1 RUST_BACKTRACE=1
say "agent sha256 $(sha256sum /bin/hbwatch | cut -d ' ' -f 1)"
/bin/hbwatch --version 2>&1 | while read -r line; do say "agent: $line"; done
pass=0
fail=0
for bin in {binaries}; do
    if ! list=$(/tests/$bin --list --format terse); then
        fail=$((fail + 1)); say "FAIL $bin::--list (the binary does not start)"; continue
    fi
    for t in $(echo "$list" | sed -n 's/: test$//p'); do
        say "RUN $bin::$t"
        start=$(date +%s)
        timeout {test_timeout_secs} /tests/$bin --exact "$t" --nocapture --test-threads=1 </dev/null 2>&1
        rc=$?
        secs=$(($(date +%s) - start))
        if [ $rc -eq 0 ]; then
            pass=$((pass + 1)); say "PASS $bin::$t ($secs s)"
        else
            fail=$((fail + 1)); say "FAIL $bin::$t (exit $rc, $secs s)"
        fi
    done
done
say "DONE passed=$pass failed=$fail"
poweroff -f
"#,
        MARKER = super::MARKER,
        binaries = binaries.join(" "),
    )
}
