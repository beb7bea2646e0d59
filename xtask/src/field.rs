//! The field corpus (tests/field/manifest.toml, docs/FIELD.md): real public captures from
//! Debian source packages, and captures derived from them, in `~/.cache/hbwatch/field/`
//! (or `$HBWATCH_FIELD_DIR`). Nothing fetched is committed: this downloads the pinned
//! source packages with apt-get (a private apt state, the machine's own Debian mirrors
//! turned into deb-src), extracts only the listed files, derives the others, and checks
//! every file's sha256 against the manifest. When every file is there and right it only
//! hashes them (no network).

use std::{
    collections::BTreeMap,
    fs,
    io::{BufReader, BufWriter},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use pcap_file::pcap::{PcapPacket, PcapReader, PcapWriter};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::cmd::{display, run, which};

/// The manifest, as far as fetching needs it (the tests read the expectations).
#[derive(Deserialize)]
struct Manifest {
    package: BTreeMap<String, Package>,
    capture: Vec<Capture>,
}

/// A Debian source package, pinned.
#[derive(Deserialize)]
struct Package {
    /// Source package name.
    debian: String,
    /// The bookworm version.
    version: String,
    /// The upstream tarball inside it, e.g. `ndpi_4.2.orig.tar.gz`.
    orig: String,
}

#[derive(Deserialize)]
struct Capture {
    /// File name in the corpus directory.
    name: String,
    sha256: String,
    /// Real capture: the package and the path inside its tarball, below the top directory.
    package: Option<String>,
    path: Option<String>,
    /// Derived capture: from another capture of the manifest (listed before it).
    from: Option<String>,
    derive: Option<Derive>,
}

/// How a derived capture is made; exactly one key.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Derive {
    /// Every frame twice, the copy this many microseconds later (a SPAN/mirror port).
    duplicate_us: Option<u64>,
    /// Every frame cut to this many bytes (`tcpdump -s N`).
    snaplen: Option<u32>,
    /// The file's first N bytes (copied while still being written: ends mid-frame).
    cut_bytes: Option<u64>,
    /// `tcprewrite --portmap=FROM:TO`: the traffic moved onto another port.
    portmap: Option<String>,
}

/// `$HBWATCH_FIELD_DIR`, else `~/.cache/hbwatch/field` (the tests look in the same place).
pub fn corpus_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("HBWATCH_FIELD_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow!("HOME is not set; set it or HBWATCH_FIELD_DIR"))?;
    Ok(PathBuf::from(home).join(".cache/hbwatch/field"))
}

/// Makes the corpus complete and verified in [`corpus_dir`].
pub fn fetch(workspace: &Path) -> Result<()> {
    let manifest_path = workspace.join("tests/field/manifest.toml");
    let text = fs::read_to_string(&manifest_path)
        .with_context(|| format!("could not read {}", manifest_path.display()))?;
    let manifest: Manifest =
        toml::from_str(&text).with_context(|| format!("{}", manifest_path.display()))?;
    let dir = corpus_dir()?;
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;

    let mut fetched = 0;
    let mut by_package: BTreeMap<&str, Vec<&Capture>> = BTreeMap::new();
    for c in manifest.capture.iter().filter(|c| c.package.is_some()) {
        if !verified(&dir, c)? {
            by_package
                .entry(c.package.as_deref().expect("filtered"))
                .or_default()
                .push(c);
        }
    }
    for (name, captures) in by_package {
        let package = manifest.package.get(name).ok_or_else(|| {
            anyhow!(
                "manifest: capture {} names unknown package {name:?}",
                captures[0].name
            )
        })?;
        extract(&dir, package, &captures)?;
        fetched += captures.len();
    }
    for c in manifest.capture.iter().filter(|c| c.package.is_none()) {
        if !verified(&dir, c)? {
            derive(&dir, c)?;
            fetched += 1;
        }
    }
    eprintln!(
        "xtask: field corpus ok: {} captures in {} ({fetched} fetched or derived now)",
        manifest.capture.len(),
        dir.display()
    );
    Ok(())
}

/// True if the capture is in place with the manifest's sha256; a wrong file is removed.
fn verified(dir: &Path, c: &Capture) -> Result<bool> {
    let path = dir.join(&c.name);
    if !path.exists() {
        return Ok(false);
    }
    if sha256(&path)? == c.sha256 {
        return Ok(true);
    }
    eprintln!(
        "xtask: {} has the wrong sha256, fetching it again",
        path.display()
    );
    fs::remove_file(&path).with_context(|| format!("could not remove {}", path.display()))?;
    Ok(false)
}

fn sha256(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// Moves `tmp` to `dir/name` if its sha256 is the manifest's, else fails saying both.
fn install(tmp: &Path, dir: &Path, c: &Capture, origin: &str) -> Result<()> {
    let got = sha256(tmp)?;
    if got != c.sha256 {
        let _ = fs::remove_file(tmp);
        bail!(
            "{} ({origin}) has sha256 {got}, the manifest says {}: the source changed; check it and update tests/field/manifest.toml",
            c.name,
            c.sha256
        );
    }
    let dest = dir.join(&c.name);
    fs::rename(tmp, &dest)
        .with_context(|| format!("could not move {} to {}", tmp.display(), dest.display()))
}

/// Downloads the package's upstream tarball and extracts the captures' files from it.
fn extract(dir: &Path, package: &Package, captures: &[&Capture]) -> Result<()> {
    let work = dir.join(".download");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let tarball = download(&work, package)?;
    let out = work.join("extract");
    fs::create_dir_all(&out)?;
    // The tarball's top directory is named after the upstream version: match any.
    let mut tar = Command::new("tar");
    tar.arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&out)
        .args(["--wildcards", "--strip-components=1"]);
    for c in captures {
        tar.arg(format!("*/{}", c.path.as_deref().unwrap_or_default()));
    }
    run(&mut tar)
        .with_context(|| format!("could not extract the captures from {}", tarball.display()))?;
    for c in captures {
        let path = c.path.as_deref().unwrap_or_default();
        let origin = format!("{} {}: {path}", package.debian, package.version);
        let src = out.join(path);
        ensure!(src.exists(), "{origin} is not in {}", tarball.display());
        install(&src, dir, c, &origin)?;
        eprintln!("xtask: field: {} <- {origin}", c.name);
    }
    fs::remove_dir_all(&work).with_context(|| format!("could not remove {}", work.display()))
}

/// `apt-get source --download-only --tar-only PKG=VERSION` with a private apt state whose
/// sources are the machine's Debian ones as deb-src. Returns the upstream tarball.
fn download(work: &Path, package: &Package) -> Result<PathBuf> {
    ensure!(
        which("apt-get").is_some(),
        "apt-get not found: the field corpus comes from Debian source packages (docs/FIELD.md)"
    );
    let apt = work.join("apt");
    for sub in ["lists/partial", "archives/partial"] {
        fs::create_dir_all(apt.join(sub))?;
    }
    let sources = apt.join("sources.list.d");
    fs::create_dir_all(&sources)?;
    let n = deb_src_from_system(&sources)?;
    ensure!(
        n > 0,
        "no Debian apt source found in /etc/apt/sources.list(.d) to turn into deb-src"
    );
    let opts = [
        "-o".to_string(),
        format!("Dir::Etc::SourceList={}", apt.join("none.list").display()),
        "-o".to_string(),
        format!("Dir::Etc::SourceParts={}", sources.display()),
        "-o".to_string(),
        format!("Dir::State::Lists={}", apt.join("lists").display()),
        "-o".to_string(),
        format!("Dir::Cache={}", apt.display()),
        "-o".to_string(),
        "Acquire::Retries=3".to_string(),
    ];
    let apt_get = || {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(work).arg("-q").args(&opts);
        cmd
    };
    run(apt_get().arg("update")).context("apt-get update (private deb-src lists) failed")?;
    let pinned = format!("{}={}", package.debian, package.version);
    let mut get = apt_get();
    get.args(["source", "--download-only", "--tar-only", &pinned]);
    let shown = display(&get);
    if let Err(e) = run(&mut get) {
        // A point release replaced the pinned version: the same upstream tarball is
        // still the one we want (the files' sha256 decide).
        eprintln!(
            "xtask: {shown} failed ({e}); trying the suite's current {}",
            package.debian
        );
        run(apt_get().args(["source", "--download-only", "--tar-only", &package.debian]))
            .with_context(|| format!("could not download the source of {}", package.debian))?;
    }
    let tarball = work.join(&package.orig);
    ensure!(
        tarball.exists(),
        "apt-get did not leave {} in {} (another upstream version?)",
        package.orig,
        work.display()
    );
    Ok(tarball)
}

/// Writes the machine's enabled Debian apt sources as deb-src into `dir`; returns how many.
fn deb_src_from_system(dir: &Path) -> Result<usize> {
    let mut n = 0;
    let mut one_line = String::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        match f.extension().and_then(|e| e.to_str()) {
            Some("sources") => {
                let stanzas = deb822_as_src(&text);
                n += stanzas.len();
                if !stanzas.is_empty() {
                    let name = f.file_name().expect("read_dir entries have names");
                    fs::write(dir.join(name), stanzas.join("\n"))?;
                }
            }
            Some("list") => {
                for line in text.lines().map(str::trim) {
                    if let Some(rest) = line.strip_prefix("deb ").filter(|_| is_debian(line)) {
                        one_line.push_str(&format!("deb-src {rest}\n"));
                        n += 1;
                    }
                }
            }
            _ => {}
        }
    }
    if !one_line.is_empty() {
        fs::write(dir.join("system.list"), one_line)?;
    }
    Ok(n)
}

/// Debian's own archive (not a vendor's repository), by its keyring or its path.
fn is_debian(text: &str) -> bool {
    text.contains("debian-archive-keyring") || text.contains("/debian")
}

/// deb822 stanzas with `Types: deb` (Debian's archive only), as `Types: deb-src`.
fn deb822_as_src(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|s| is_debian(s))
        .filter(|s| {
            s.lines().any(|l| {
                l.strip_prefix("Types:")
                    .is_some_and(|t| t.split_whitespace().any(|t| t == "deb"))
            })
        })
        .filter(|s| !s.lines().any(|l| l.trim() == "Enabled: no"))
        .map(|s| {
            s.lines()
                .map(|l| {
                    if l.starts_with("Types:") {
                        "Types: deb-src"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        })
        .collect()
}

/// Makes a derived capture from its source (already verified: listed before it).
fn derive(dir: &Path, c: &Capture) -> Result<()> {
    let from = c
        .from
        .as_deref()
        .ok_or_else(|| anyhow!("manifest: capture {} has neither package nor from", c.name))?;
    let how = c
        .derive
        .as_ref()
        .ok_or_else(|| anyhow!("manifest: capture {} has from but no derive", c.name))?;
    let src = dir.join(from);
    ensure!(
        src.exists(),
        "{} derives from {from}, which is not in {} (list it before)",
        c.name,
        dir.display()
    );
    let tmp = dir.join(format!(".{}.tmp", c.name));
    let origin = format!("{from} with {how:?}");
    match (how.duplicate_us, how.snaplen, how.cut_bytes, how.portmap.as_deref()) {
        (Some(us), None, None, None) => duplicate(&src, &tmp, us)?,
        (None, Some(len), None, None) => snaplen(&src, &tmp, len)?,
        (None, None, Some(n), None) => {
            let bytes = fs::read(&src)?;
            ensure!((n as usize) < bytes.len(), "{}: cut_bytes {n} is not shorter than {from}", c.name);
            fs::write(&tmp, &bytes[..n as usize])?;
        }
        (None, None, None, Some(map)) => {
            ensure!(
                which("tcprewrite").is_some(),
                "tcprewrite not found: install Debian's tcpreplay (cargo xtask bootstrap does)"
            );
            run(Command::new("tcprewrite")
                .arg(format!("--portmap={map}"))
                .arg("-i")
                .arg(&src)
                .arg("-o")
                .arg(&tmp))?;
        }
        _ => bail!("manifest: capture {}: derive needs exactly one of duplicate_us, snaplen, cut_bytes, portmap", c.name),
    }
    install(&tmp, dir, c, &origin)?;
    eprintln!("xtask: field: {} <- {origin}", c.name);
    Ok(())
}

fn pcap_in(src: &Path) -> Result<PcapReader<BufReader<fs::File>>> {
    let f = fs::File::open(src).with_context(|| format!("could not open {}", src.display()))?;
    PcapReader::new(BufReader::new(f))
        .with_context(|| format!("{}: not a classic pcap file", src.display()))
}

/// Every frame twice, the copy `us` microseconds later: same bytes, same IP ID.
fn duplicate(src: &Path, dest: &Path, us: u64) -> Result<()> {
    let mut reader = pcap_in(src)?;
    let header = reader.header();
    let mut frames: Vec<PcapPacket<'static>> = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p
            .with_context(|| format!("{}", src.display()))?
            .into_owned();
        let mut copy = p.clone();
        copy.timestamp += Duration::from_micros(us);
        frames.push(p);
        frames.push(copy);
    }
    // A copy may land after the next original: keep the file in time order.
    frames.sort_by_key(|p| p.timestamp);
    let mut w = PcapWriter::with_header(BufWriter::new(fs::File::create(dest)?), header)?;
    for p in &frames {
        w.write_packet(p)?;
    }
    Ok(())
}

/// Every frame cut to `len` bytes, the header's snaplen set to it; `orig_len` kept.
fn snaplen(src: &Path, dest: &Path, len: u32) -> Result<()> {
    let mut reader = pcap_in(src)?;
    let mut header = reader.header();
    header.snaplen = len;
    let mut w = PcapWriter::with_header(BufWriter::new(fs::File::create(dest)?), header)?;
    while let Some(p) = reader.next_packet() {
        let p = p.with_context(|| format!("{}", src.display()))?;
        let keep = p.data.len().min(len as usize);
        w.write_packet(&PcapPacket::new(p.timestamp, p.orig_len, &p.data[..keep]))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_stanzas_become_deb_src() {
        let text = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: https://vendor.example/apt\nSuites: stable\nComponents: main\n";
        let out = deb822_as_src(text);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].starts_with("Types: deb-src\nURIs: http://mirror.example/debian"));
    }

    #[test]
    fn the_manifest_parses_and_derived_captures_follow_their_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = fs::read_to_string(root.join("tests/field/manifest.toml")).unwrap();
        let m: Manifest = toml::from_str(&text).unwrap();
        let mut seen = std::collections::HashSet::new();
        for c in &m.capture {
            assert_eq!(c.sha256.len(), 64, "{}: sha256", c.name);
            match (&c.package, &c.from) {
                (Some(p), None) => {
                    assert!(m.package.contains_key(p), "{}: package {p}", c.name);
                    assert!(c.path.is_some(), "{}: path", c.name);
                }
                (None, Some(f)) => {
                    assert!(
                        seen.contains(f.as_str()),
                        "{} derives from {f}, listed later or not at all",
                        c.name
                    );
                    assert!(c.derive.is_some(), "{}: derive", c.name);
                }
                _ => panic!("{}: needs package+path or from+derive", c.name),
            }
            assert!(seen.insert(c.name.as_str()), "{}: listed twice", c.name);
        }
    }
}
