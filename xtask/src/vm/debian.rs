//! Debian cloud kernels: find the current `linux-image-*-cloud-amd64` in a
//! suite's Packages index (InRelease signature checked with gpgv), download it
//! once into `~/.cache/hbwatch/kernels`, verify it against the index's SHA256
//! and unpack the kernel image and the modules the tests need (with their
//! dependencies, in load order).

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use object::{Object as _, ObjectSection as _};
use sha2::{Digest as _, Sha256};

/// Old suites move from the main mirror to the archive; try both in order.
const MIRRORS: &[&str] = &[
    "http://deb.debian.org/debian",
    "http://archive.debian.org/debian",
];

/// The metapackage whose Depends names the suite's current cloud kernel.
const META: &str = "linux-image-cloud-amd64";

/// One kernel of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// What `--kernel` takes and the reports print.
    pub name: &'static str,
    /// The Debian suite shipping it.
    pub suite: &'static str,
}

pub const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
    },
];

/// A kernel unpacked in the cache, ready to boot.
pub struct Unpacked {
    /// `uname -r`, e.g. `6.1.0-50-cloud-amd64`.
    pub release: String,
    /// Debian package and version, for the report.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// Modules to insmod, dependencies first (built-in ones left out).
    pub modules: Vec<PathBuf>,
    /// Bytes downloaded this run (0 when everything came from the cache).
    pub downloaded: u64,
}

/// The package file chosen from the index, remembered so that later runs
/// need no network at all.
struct Pin {
    package: String,
    version: String,
    filename: String,
    sha256: String,
    mirror: String,
}

pub fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            anyhow!("HOME is not set; the kernel cache lives in ~/.cache/hbwatch/kernels")
        })?;
    Ok(PathBuf::from(home).join(".cache/hbwatch/kernels"))
}

/// Download (unless cached) and unpack `kernel`; `refresh` looks the package up
/// in the index again instead of using the one pinned by an earlier run.
pub fn prepare(kernel: &Kernel, modules: &[&str], refresh: bool) -> Result<Unpacked> {
    let cache = cache_dir()?;
    fs::create_dir_all(&cache).with_context(|| format!("could not create {}", cache.display()))?;
    let pin_path = cache.join(format!("{}.pin", kernel.suite));
    let pinned = if refresh { None } else { read_pin(&pin_path) };
    let from_cache = pinned.is_some();
    let mut pin = match pinned {
        Some(pin) => pin,
        None => {
            let pin = resolve(kernel.suite)?;
            write_pin(&pin_path, &pin)?;
            pin
        }
    };
    let mut deb = cache.join(deb_name(&pin)?);
    let mut downloaded = 0;
    if sha256_file(&deb).ok().as_deref() != Some(pin.sha256.as_str()) {
        let url = format!("{}/{}", pin.mirror, pin.filename);
        downloaded = match download(&url, &deb, &pin.sha256) {
            Ok(n) => n,
            // A pinned package can leave the mirror (a point release replaced it).
            Err(e) if from_cache => {
                eprintln!("xtask: {e:#}; looking {} up again", kernel.suite);
                pin = resolve(kernel.suite)?;
                write_pin(&pin_path, &pin)?;
                deb = cache.join(deb_name(&pin)?);
                download(
                    &format!("{}/{}", pin.mirror, pin.filename),
                    &deb,
                    &pin.sha256,
                )?
            }
            Err(e) => return Err(e),
        };
    }
    let file_name = deb_name(&pin)?;
    let dir = cache.join(file_name.trim_end_matches(".deb"));
    let unpacked = unpack(&deb, &dir, modules)
        .with_context(|| format!("could not unpack {}", deb.display()))?;
    Ok(Unpacked {
        package: format!("{} {}", pin.package, pin.version),
        downloaded,
        ..unpacked
    })
}

/// The package's file name in the cache: the last part of its pool path.
fn deb_name(pin: &Pin) -> Result<&str> {
    pin.filename
        .rsplit('/')
        .next()
        .filter(|n| n.ends_with(".deb"))
        .ok_or_else(|| anyhow!("unexpected Filename {:?} in the index", pin.filename))
}

fn read_pin(path: &Path) -> Option<Pin> {
    let text = fs::read_to_string(path).ok()?;
    let fields = fields(&text);
    let get = |k: &str| fields.get(k).map(|v| v.to_string());
    Some(Pin {
        package: get("Package")?,
        version: get("Version")?,
        filename: get("Filename")?,
        sha256: get("SHA256")?,
        mirror: get("Mirror")?,
    })
}

fn write_pin(path: &Path, pin: &Pin) -> Result<()> {
    let text = format!(
        "Package: {}\nVersion: {}\nFilename: {}\nSHA256: {}\nMirror: {}\n",
        pin.package, pin.version, pin.filename, pin.sha256, pin.mirror
    );
    fs::write(path, text).with_context(|| format!("could not write {}", path.display()))
}

/// Look the suite's cloud kernel up on the first mirror that has the suite.
fn resolve(suite: &str) -> Result<Pin> {
    let mut errors = Vec::new();
    for mirror in MIRRORS {
        match resolve_on(mirror, suite) {
            Ok(pin) => return Ok(pin),
            Err(e) => errors.push(format!("{mirror}: {e:#}")),
        }
    }
    bail!(
        "no mirror has Debian {suite}'s {META}:\n  {}",
        errors.join("\n  ")
    )
}

fn resolve_on(mirror: &str, suite: &str) -> Result<Pin> {
    const INDEX: &str = "main/binary-amd64/Packages.xz";
    // Plain http: only the archive's signature makes the checksums below trustworthy.
    let signed = get(&format!("{mirror}/dists/{suite}/InRelease"))?;
    let release = verify_release(suite, &signed)?;
    // The Release file lists each index with its SHA256: check the index with it.
    let want = release
        .split("\nSHA256:")
        .nth(1)
        .and_then(|sums| {
            sums.lines()
                .skip(1)
                .take_while(|l| l.starts_with(' '))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|f| f.len() == 3 && f[2] == INDEX)
                .map(|f| f[0].to_owned())
        })
        .ok_or_else(|| anyhow!("{suite}'s Release file has no SHA256 for {INDEX}"))?;
    let url = format!("{mirror}/dists/{suite}/{INDEX}");
    let xz = get(&url)?;
    ensure!(
        hex(&Sha256::digest(&xz)) == want,
        "{url} does not match the SHA256 in {suite}'s Release file"
    );
    let mut text = String::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_string(&mut text)
        .with_context(|| format!("could not decompress {url}"))?;
    let stanzas: HashMap<&str, HashMap<&str, &str>> = text
        .split("\n\n")
        .map(fields)
        .filter_map(|f| Some((*f.get("Package")?, f)))
        .collect();
    let field = |package: &str, key: &str| -> Result<String> {
        stanzas
            .get(package)
            .and_then(|f| f.get(key))
            .map(|v| v.to_string())
            .ok_or_else(|| anyhow!("{url}: no {key} for package {package}"))
    };
    // "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)": the first name is the image.
    let depends = field(META, "Depends")?;
    let package = depends
        .split([' ', ',', '|'])
        .next()
        .filter(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| anyhow!("{url}: unexpected Depends of {META}: {depends}"))?
        .to_owned();
    Ok(Pin {
        version: field(&package, "Version")?,
        filename: field(&package, "Filename")?,
        sha256: field(&package, "SHA256")?,
        mirror: mirror.to_owned(),
        package,
    })
}

/// Debian's keys, as apt uses them (package debian-archive-keyring).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The text of a clearsigned InRelease file once `gpgv` has checked its
/// signature against Debian's archive keys.
fn verify_release(suite: &str, signed: &[u8]) -> Result<String> {
    ensure!(
        Path::new(KEYRING).exists(),
        "{KEYRING} is missing; install it with: apt-get install debian-archive-keyring gpgv"
    );
    let file = cache_dir()?.join(format!("{suite}.InRelease"));
    fs::write(&file, signed).with_context(|| format!("could not write {}", file.display()))?;
    let out = std::process::Command::new("gpgv")
        .arg("--keyring")
        .arg(KEYRING)
        .args(["--output", "-"])
        .arg(&file)
        .output()
        .context("could not run gpgv (apt-get install gpgv)")?;
    ensure!(
        out.status.success(),
        "{suite}'s InRelease has no valid signature from Debian's archive keys: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `Key: value` fields of one control stanza (continuation lines ignored).
fn fields(stanza: &str) -> HashMap<&str, &str> {
    stanza
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k, v.trim()))
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        // Whole transfers: a kernel package is ~35 MB.
        .timeout_global(Some(Duration::from_secs(900)))
        .build()
        .into()
}

fn get(url: &str) -> Result<Vec<u8>> {
    let mut resp = agent()
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let mut body = Vec::new();
    resp.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .with_context(|| format!("reading {url}"))?;
    Ok(body)
}

/// Stream `url` into `dest` (via a `.part` file, so an interrupted download is
/// never taken for a cached one); error unless its SHA256 is `sha256`.
fn download(url: &str, dest: &Path, sha256: &str) -> Result<u64> {
    eprintln!("xtask: downloading {url}");
    let part = dest.with_extension("deb.part");
    let mut resp = agent()
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let mut reader = resp.body_mut().as_reader();
    let mut file =
        fs::File::create(&part).with_context(|| format!("could not create {}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .with_context(|| format!("reading {url}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part.display()))?;
        total += n as u64;
    }
    let got = hex(&hasher.finalize());
    if got != sha256 {
        let _ = fs::remove_file(&part);
        bail!("{url}: SHA256 {got} does not match the index's {sha256}");
    }
    fs::rename(&part, dest).with_context(|| format!("could not rename {}", part.display()))?;
    Ok(total)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpack vmlinuz and the modules (dependencies first) into `dir`, unless an
/// earlier run already did it for the same module list (the `complete` stamp).
fn unpack(deb: &Path, dir: &Path, wanted: &[&str]) -> Result<Unpacked> {
    let stamp = dir.join("complete");
    let want_stamp = format!("wanted: {}\n", wanted.join(" "));
    let done = fs::read_to_string(&stamp).ok();
    if let Some(done) = done.as_deref().and_then(|s| s.strip_prefix(&want_stamp)) {
        let mut lines = done.lines();
        let release = lines
            .next()
            .and_then(|l| l.strip_prefix("release: "))
            .ok_or_else(|| anyhow!("bad stamp {}", stamp.display()))?;
        return Ok(Unpacked {
            release: release.to_owned(),
            package: String::new(),
            vmlinuz: dir.join("vmlinuz"),
            modules: lines.map(|m| dir.join(m)).collect(),
            downloaded: 0,
        });
    }
    eprintln!("xtask: unpacking {}", deb.display());
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("could not remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;

    let contents = read_deb(deb)?;
    let (release, image) = contents
        .vmlinuz
        .ok_or_else(|| anyhow!("no boot/vmlinuz-* in the package"))?;
    fs::write(dir.join("vmlinuz"), image)?;

    let mut order = Vec::new();
    let mut seen = HashSet::new();
    for name in wanted {
        load_order(
            name,
            &contents.modules,
            &contents.builtin,
            &mut seen,
            &mut order,
        )?;
    }
    let mut files = Vec::new();
    for (name, data) in order {
        let file = format!("{name}.ko");
        fs::write(dir.join(&file), data)?;
        files.push(file);
    }
    fs::write(
        &stamp,
        format!(
            "{want_stamp}release: {release}\n{}",
            files.iter().map(|f| format!("{f}\n")).collect::<String>()
        ),
    )?;
    Ok(Unpacked {
        modules: files.iter().map(|f| dir.join(f)).collect(),
        vmlinuz: dir.join("vmlinuz"),
        release,
        package: String::new(),
        downloaded: 0,
    })
}

struct DebContents {
    /// (release, image) from `boot/vmlinuz-<release>`.
    vmlinuz: Option<(String, Vec<u8>)>,
    /// Module name (underscores, as the kernel spells it) -> file bytes as packaged.
    modules: HashMap<String, (PathBuf, Vec<u8>)>,
    /// Names of modules built into the kernel (modules.builtin).
    builtin: HashSet<String>,
}

/// One pass over the package's data.tar.xz. Every module is kept in memory
/// (~100 MB at most) because dependencies are only known once a module is read.
fn read_deb(deb: &Path) -> Result<DebContents> {
    let file = fs::File::open(deb).with_context(|| format!("could not open {}", deb.display()))?;
    let mut ar = ar::Archive::new(file);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.context("reading the .deb (ar)")?;
        let id = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        if !id.starts_with("data.tar") {
            continue;
        }
        ensure!(
            id == "data.tar.xz",
            "{id}: only xz-compressed packages are supported"
        );
        let mut out = DebContents {
            vmlinuz: None,
            modules: HashMap::new(),
            builtin: HashSet::new(),
        };
        let mut tar = tar::Archive::new(liblzma::read::XzDecoder::new(entry));
        for item in tar.entries().context("reading data.tar.xz")? {
            let mut item = item.context("reading data.tar.xz")?;
            if !item.header().entry_type().is_file() {
                continue;
            }
            let path = item.path()?.into_owned();
            let path_str = path.to_string_lossy().into_owned();
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let in_modules = path_str.contains("lib/modules/");
            if let Some(release) = file_name.strip_prefix("vmlinuz-") {
                let mut data = Vec::new();
                item.read_to_end(&mut data)?;
                out.vmlinuz = Some((release.to_owned(), data));
            } else if in_modules && file_name == "modules.builtin" {
                let mut text = String::new();
                item.read_to_string(&mut text)?;
                out.builtin = text.lines().filter_map(module_name).collect();
            } else if in_modules && path_str.contains("/kernel/") {
                if let Some(name) = module_name(&file_name) {
                    let mut data = Vec::new();
                    item.read_to_end(&mut data)?;
                    out.modules.insert(name, (path, data));
                }
            }
        }
        return Ok(out);
    }
    bail!("no data.tar.* member in the package")
}

/// `kernel/drivers/net/veth.ko.xz` -> `veth`; module names use `_` where files may use `-`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(stem.replace('-', "_"))
}

/// Depth-first: a module's `depends=` (from its .modinfo section) before itself.
fn load_order(
    name: &str,
    modules: &HashMap<String, (PathBuf, Vec<u8>)>,
    builtin: &HashSet<String>,
    seen: &mut HashSet<String>,
    order: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    let name = name.replace('-', "_");
    if !seen.insert(name.clone()) || builtin.contains(&name) {
        return Ok(());
    }
    let (path, data) = modules
        .get(&name)
        .ok_or_else(|| anyhow!("module {name} is neither in the package nor built in"))?;
    let data = decompress_module(path, data)?;
    for dep in modinfo(&data, "depends")?
        .split(',')
        .filter(|d| !d.is_empty())
    {
        load_order(dep, modules, builtin, seen, order)?;
    }
    order.push((name, data));
    Ok(())
}

/// Busybox insmod hands the file to init_module(2) as it is; only newer kernels
/// decompress modules themselves, so always unpack them here.
fn decompress_module(path: &Path, data: &[u8]) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    if name.ends_with(".ko") {
        return Ok(data.to_vec());
    }
    ensure!(
        name.ends_with(".ko.xz"),
        "{name}: only plain and xz-compressed modules are supported"
    );
    let mut out = Vec::new();
    liblzma::read::XzDecoder::new(data)
        .read_to_end(&mut out)
        .with_context(|| format!("could not decompress {name}"))?;
    Ok(out)
}

/// A `key=value` from a module's .modinfo section ("" when absent).
fn modinfo(ko: &[u8], key: &str) -> Result<String> {
    let elf = object::File::parse(ko).context("module is not an ELF object")?;
    let section = elf
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow!("module has no .modinfo section"))?;
    let data = section.data().context("reading .modinfo")?;
    let prefix = format!("{key}=");
    Ok(data
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(prefix.as_str()))
        .unwrap_or_default()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names() {
        assert_eq!(
            module_name("kernel/drivers/net/veth.ko.xz").as_deref(),
            Some("veth")
        );
        assert_eq!(
            module_name("kernel/net/sched/sch-ingress.ko").as_deref(),
            Some("sch_ingress")
        );
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn control_fields() {
        let f = fields("Package: a\nDepends: b (= 1)\nDescription: x\n more\n");
        assert_eq!(f["Package"], "a");
        assert_eq!(f["Depends"], "b (= 1)");
        assert_eq!(f.len(), 3);
    }
}
