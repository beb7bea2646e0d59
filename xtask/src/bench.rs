//! `cargo xtask bench`: builds the release agent and `hbwatch-bench`, runs the benchmarks
//! as root and leaves `summary.json`, `summary.md` and `per-packet.png` in
//! `target/bench/`; `--doc` also puts them into BENCHMARKS.md and docs/bench/.
//! Never part of `cargo xtask test`: figures need a quiet machine and minutes.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{is_root, probe, run, which};
use crate::{cargo, target_dir, workspace_root};

/// The generated section of BENCHMARKS.md lies between these lines.
const BEGIN: &str = "<!-- bench:begin (cargo xtask bench --doc writes this section) -->";
const END: &str = "<!-- bench:end -->";
const PLOT: &str = "docs/bench/per-packet.png";
/// The plot's font (the bench reads it from the system).
const FONT_PACKAGE: &str = "fonts-dejavu-core";

pub fn bench(quick: bool, doc: bool, args: &[OsString]) -> Result<()> {
    if quick && doc {
        bail!("--quick figures do not go into BENCHMARKS.md; drop one of --quick and --doc");
    }
    font()?;
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "hbwatch",
        "--package",
        "hbwatch-bench",
    ]))?;
    let release = target_dir().join("release");
    let out = target_dir().join("bench");
    let exe = release.join("hbwatch-bench");
    // BPF_PROG_TEST_RUN and map creation need root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON).
    let mut cmd = if is_root() {
        Command::new(&exe)
    } else if let Some(sudo) = which("sudo") {
        eprintln!("xtask: the benchmarks need root, running them via sudo");
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&exe);
        cmd
    } else {
        bail!("the benchmarks need root (BPF_PROG_TEST_RUN) and sudo was not found");
    };
    cmd.current_dir(workspace_root())
        .arg("--out")
        .arg(&out)
        .arg("--hbwatch")
        .arg(release.join("hbwatch"))
        .args(quick.then_some("--quick"))
        .args(args);
    run(&mut cmd)?;
    if doc {
        update_doc(&out)?;
    }
    Ok(())
}

/// The plot needs a TrueType font; install Debian's DejaVu if it is missing.
fn font() -> Result<()> {
    let installed = probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", FONT_PACKAGE]))
        .is_some_and(|s| s.contains("ok installed"));
    if installed || which("dpkg-query").is_none() {
        return Ok(());
    }
    if !is_root() {
        eprintln!("xtask: warning: {FONT_PACKAGE} missing (the plot needs it); run: sudo apt-get install -y {FONT_PACKAGE}");
        return Ok(());
    }
    run(Command::new("apt-get")
        .args(["install", "-y", FONT_PACKAGE])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {FONT_PACKAGE} for the plot"))
}

/// Replaces the generated section of BENCHMARKS.md and copies the plot beside it.
fn update_doc(out: &Path) -> Result<()> {
    let root = workspace_root();
    let md = std::fs::read_to_string(out.join("summary.md"))
        .context("reading target/bench/summary.md")?;
    let doc_path = root.join("BENCHMARKS.md");
    let doc = std::fs::read_to_string(&doc_path).context("reading BENCHMARKS.md")?;
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        bail!("BENCHMARKS.md lacks the lines `{BEGIN}` and `{END}`");
    };
    let new = format!(
        "{}{BEGIN}\n\n{}\n\n![per-packet cost by case]({PLOT})\n\n{}",
        &doc[..b],
        md.trim_end(),
        &doc[e..]
    );
    std::fs::write(&doc_path, new)?;
    let plot = root.join(PLOT);
    std::fs::create_dir_all(plot.parent().expect("has a parent"))?;
    std::fs::copy(out.join("per-packet.png"), &plot).context("copying the plot")?;
    eprintln!("xtask: BENCHMARKS.md and {PLOT} updated");
    Ok(())
}
