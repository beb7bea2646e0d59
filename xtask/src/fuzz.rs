//! `cargo xtask fuzz [--seconds N] [--target NAME]...`: the cargo-fuzz targets in
//! `fuzz/` (docs/FUZZING.md), each run for N seconds. Installs cargo-fuzz when missing,
//! builds the targets with nightly (AddressSanitizer, debug assertions), writes a
//! target's seed corpus from the traffic generator when its corpus is empty, then
//! reports executions per target. A crash or hang fails the run with the reproducer.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{display, probe, run, which};
use crate::workspace_root;

pub struct Options {
    pub seconds: u64,
    /// Empty: every target.
    pub targets: Vec<String>,
}

/// What one target's run gave.
struct Outcome {
    target: String,
    execs: Option<u64>,
    per_sec: Option<u64>,
    corpus: Option<u64>,
    seconds: f64,
    /// Reproducer of a crash, leak or timeout.
    artifact: Option<String>,
    ok: bool,
}

pub fn fuzz(o: &Options) -> Result<()> {
    cargo_fuzz()?;
    let root = workspace_root();
    let all = list(root)?;
    let targets: Vec<String> = if o.targets.is_empty() {
        all.clone()
    } else {
        for t in &o.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t:?}; there are: {}", all.join(", "));
            }
        }
        o.targets.clone()
    };
    // One build for all targets (they share every dependency), or just the one asked for.
    let mut build = nightly_cargo(root);
    build.args(["fuzz", "build"]);
    if let [one] = targets.as_slice() {
        build.arg(one);
    }
    run(&mut build)?;
    let bin_dir = root
        .join("fuzz/target")
        .join(host_triple()?)
        .join("release");
    let mut outcomes = Vec::new();
    for t in &targets {
        let corpus = root.join("fuzz/corpus").join(t);
        let artifacts = root.join("fuzz/artifacts").join(t);
        fs::create_dir_all(&artifacts)?;
        let exe = bin_dir.join(t);
        if is_empty_dir(&corpus) {
            seed(&exe, &corpus)?;
        }
        outcomes.push(run_target(t, &exe, &corpus, &artifacts, o.seconds)?);
    }
    report(&outcomes);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok).collect();
    if failed.is_empty() {
        return Ok(());
    }
    for f in &failed {
        match &f.artifact {
            Some(a) => eprintln!(
                "xtask: {} failed; reproduce with `cargo +nightly fuzz run {} {a}`",
                f.target, f.target
            ),
            None => eprintln!(
                "xtask: {} failed without a reproducer; see its log",
                f.target
            ),
        }
    }
    bail!("{} of {} fuzz targets failed", failed.len(), outcomes.len())
}

/// `cargo +nightly` in the workspace root (cargo-fuzz needs nightly's sanitizer flags).
fn nightly_cargo(root: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly").current_dir(root);
    cmd
}

/// cargo-fuzz from crates.io, once.
fn cargo_fuzz() -> Result<()> {
    if which("cargo-fuzz").is_some() {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing; installing it");
    run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
}

fn list(root: &Path) -> Result<Vec<String>> {
    let mut cmd = nightly_cargo(root);
    cmd.args(["fuzz", "list"]);
    let out = probe(&mut cmd).with_context(|| format!("`{}` failed", display(&cmd)))?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn host_triple() -> Result<String> {
    let vv = probe(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("`rustc +nightly -vV` failed")?;
    vv.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
        .context("no host in `rustc -vV`")
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// The target writes its own seeds (fuzz/src/seeds.rs) when HBWATCH_FUZZ_SEEDS is set.
fn seed(exe: &Path, corpus: &Path) -> Result<()> {
    run(Command::new(exe).env("HBWATCH_FUZZ_SEEDS", corpus))
}

fn run_target(
    target: &str,
    exe: &Path,
    corpus: &Path,
    artifacts: &Path,
    seconds: u64,
) -> Result<Outcome> {
    let log_path = artifacts.join("last-run.log");
    let mut prefix = artifacts.as_os_str().to_owned();
    prefix.push("/");
    let mut cmd = Command::new(exe);
    cmd.arg(corpus)
        .arg(format!("-max_total_time={seconds}"))
        // A single input running this long is a hang, reported like a crash.
        .arg("-timeout=10")
        .arg("-print_final_stats=1")
        .arg({
            let mut a = std::ffi::OsString::from("-artifact_prefix=");
            a.push(&prefix);
            a
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("xtask: $ {}", display(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", exe.display()))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let mut log = Vec::new();
    let mut outcome = Outcome {
        target: target.to_string(),
        execs: None,
        per_sec: None,
        corpus: None,
        seconds: 0.0,
        artifact: None,
        ok: false,
    };
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        parse_line(&line, &mut outcome);
        log.push(line);
    }
    let status = child.wait()?;
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.ok = status.success() && outcome.artifact.is_none();
    fs::write(&log_path, log.join("\n") + "\n")?;
    if !outcome.ok {
        // The end of libFuzzer's report: the panic message and the stack.
        eprintln!(
            "xtask: {target}: {status}; the end of {}:",
            log_path.display()
        );
        for line in &log[log.len().saturating_sub(60)..] {
            eprintln!("  {line}");
        }
    }
    Ok(outcome)
}

/// Picks the figures out of libFuzzer's output.
fn parse_line(line: &str, o: &mut Outcome) {
    let num = |s: &str| s.trim().parse::<u64>().ok();
    if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
        o.execs = num(v);
    } else if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
        o.per_sec = num(v);
    } else if let Some(rest) = line.split("Test unit written to ").nth(1) {
        o.artifact = Some(rest.trim().to_string());
    } else if line.starts_with('#') {
        // Status lines: `#12345  NEW    cov: 123 ft: 456 corp: 78/9kb ... exec/s: 1000 ...`
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(n) = words.first().and_then(|w| num(&w[1..])) {
            o.execs = Some(n);
        }
        for pair in words.windows(2) {
            match pair[0] {
                "corp:" => o.corpus = pair[1].split('/').next().and_then(num),
                "exec/s:" => o.per_sec = num(pair[1]),
                _ => {}
            }
        }
    }
}

fn report(outcomes: &[Outcome]) {
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    eprintln!();
    eprintln!(
        "{:<15} {:>12} {:>9} {:>7} {:>7}  result",
        "target", "execs", "exec/s", "corpus", "secs"
    );
    for o in outcomes {
        let result = match (&o.artifact, o.ok) {
            (_, true) => "ok".to_string(),
            (Some(a), false) => format!("FAILED {a}"),
            (None, false) => "FAILED".to_string(),
        };
        eprintln!(
            "{:<15} {:>12} {:>9} {:>7} {:>7.0}  {result}",
            o.target,
            show(o.execs),
            show(o.per_sec),
            show(o.corpus),
            o.seconds
        );
    }
    let total: u64 = outcomes.iter().filter_map(|o| o.execs).sum();
    eprintln!("{:<15} {:>12}", "total", total);
}
