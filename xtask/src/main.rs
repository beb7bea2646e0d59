//! `cargo xtask`: install the toolchain pieces hbwatch needs, then build, run
//! or test it. build/run/test/clippy always bootstrap first (fast no-op when
//! everything is installed).

mod bench;
mod bootstrap;
mod cmd;
mod dist;
mod field;
mod fuzz;
mod vm;

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::cmd::{display, is_root, probe, run, which, Failed};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Bootstrap, build, run and test hbwatch"
)]
struct Cli {
    /// Neither check nor install the apt packages the tests use.
    #[arg(long, global = true, env = "XTASK_NO_APT")]
    no_apt: bool,
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing: nightly + rust-src, bpf-linker, apt packages.
    Bootstrap,
    /// Build the workspace; the agent's build.rs also builds the eBPF object.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build and run hbwatch as root (via sudo if needed): `cargo xtask run -- ARGS`.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for hbwatch, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build and run `hbwatch demo` as root: real XDP on a veth pair, a ~60 s incident
    /// story, live and offline compared: `cargo xtask demo [-- DEMO_ARGS]`.
    Demo {
        /// Arguments for `hbwatch demo`, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Build, then `cargo test` with HBWATCH_BIN set: `cargo xtask test -- CARGO_TEST_ARGS`.
    Test {
        /// Arguments for `cargo test`, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Download and check the field corpus (real captures from Debian source packages,
    /// tests/field/manifest.toml) into ~/.cache/hbwatch/field; `test` does it first.
    Field,
    /// `cargo clippy --all-targets -- -D warnings` (benchmarks included).
    Clippy,
    /// Run the root tests on Debian's 5.10, 6.1 and 6.12 cloud kernels in QEMU.
    VmTest {
        /// Which kernel: 5.10, 6.1, 6.12 or all.
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Look the kernel packages up in Debian's index again (newer point
        /// releases) instead of reusing the ones cached by an earlier run.
        #[arg(long)]
        refresh: bool,
        /// Seconds one VM may take from boot to power-off before it counts as hung.
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
        /// Only these test binaries (repeatable, e.g. prog_test_run): a quick look at one
        /// suite on a slow kernel; CI runs them all.
        #[arg(long = "only")]
        only: Vec<String>,
        /// Boot this agent binary as it is, e.g. target/dist/hbwatch from `cargo xtask
        /// dist` (default: the debug build).
        #[arg(long, value_name = "PATH")]
        agent: Option<PathBuf>,
    },
    /// Build what operators install, in target/dist: the static binary, a .deb, a tarball,
    /// an OCI image and a DaemonSet manifest, with SHA256SUMS (docs/OPERATIONS.md, Install).
    Dist {
        /// Then prove them here (root): lintian, install, the installed files and unit,
        /// the service user, the image under podman, purge. Installs and purges the
        /// hbwatch package on this machine.
        #[arg(long)]
        check: bool,
    },
    /// Build the cargo-fuzz targets (nightly, ASan) and run each for a while; a crash
    /// fails with the reproducer's path (docs/FUZZING.md).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Only this target (repeatable); default: all of `cargo fuzz list`.
        #[arg(long = "target")]
        targets: Vec<String>,
    },
    /// Release build, then the benchmarks as root; figures in target/bench/.
    Bench {
        /// Fewer trials and repeats: tries the bench, figures not for BENCHMARKS.md.
        #[arg(long)]
        quick: bool,
        /// Also write the figures and the plot into BENCHMARKS.md and docs/bench/.
        #[arg(long)]
        doc: bool,
        /// Arguments for hbwatch-bench (`--only xdp,pipeline,offline`, `--trials N`, ...).
        #[arg(last = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cargo_bin_on_path();
    match try_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("xtask:   caused by: {cause}");
            }
            // Forward a failed child's exit code (e.g. cargo test's 101).
            let code = e.downcast_ref::<Failed>().map_or(1, |f| f.code);
            ExitCode::from(u8::try_from(code).ok().filter(|&c| c != 0).unwrap_or(1))
        }
    }
}

fn try_main(cli: Cli) -> Result<()> {
    bootstrap::bootstrap(cli.no_apt)?;
    match cli.command {
        Task::Bootstrap => Ok(()),
        Task::Build { release } => build(release),
        Task::Run { release, args } => run_agent(release, &args),
        Task::Demo { args } => {
            let mut all = vec![OsString::from("demo")];
            all.extend(args);
            run_agent(true, &all)
        }
        Task::Test { args } => test(&args),
        Task::Field => field::fetch(workspace_root()),
        // The whole workspace but the bpf-only crate: the default members plus the bench.
        Task::Clippy => run(cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "hbwatch-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])),
        Task::Bench { quick, doc, args } => bench::bench(quick, doc, &args),
        Task::Fuzz { seconds, targets } => fuzz::fuzz(&fuzz::Options { seconds, targets }),
        Task::VmTest {
            kernel,
            refresh,
            timeout,
            only,
            agent,
        } => vm::vm_test(&vm::Options {
            kernel,
            refresh,
            timeout: std::time::Duration::from_secs(timeout),
            only,
            agent,
        }),
        Task::Dist { check } => {
            bootstrap::dist_tools(cli.no_apt, check)?;
            dist::dist(&dist::Options { check })
        }
    }
}

// No `--workspace`: that would also build hbwatch-ebpf for the host, which it
// does not support. Running at the workspace root builds the default members,
// and the agent's build.rs builds the eBPF object through aya-build.
fn build(release: bool) -> Result<()> {
    run(cargo().arg("build").args(release.then_some("--release")))
}

fn run_agent(release: bool, args: &[OsString]) -> Result<()> {
    run(cargo()
        .args(["build", "--package", "hbwatch"])
        .args(release.then_some("--release")))?;
    let exe = target_dir().join(profile(release)).join("hbwatch");
    let mut cmd = if is_root() {
        Command::new(&exe)
    } else if let Some(sudo) = which("sudo") {
        eprintln!("xtask: hbwatch needs root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON), running it via sudo");
        let mut cmd = Command::new(sudo);
        cmd.arg("-E").arg(&exe);
        cmd
    } else {
        eprintln!("xtask: warning: hbwatch needs root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON) and sudo was not found; trying anyway");
        Command::new(&exe)
    };
    cmd.args(args);
    let shown = display(&cmd);
    eprintln!("xtask: $ {shown}");
    // exec: hbwatch replaces xtask, so stdio, signals (Ctrl-C) and the exit
    // code are exactly hbwatch's. Returns only if exec itself failed.
    Err(cmd.exec()).with_context(|| format!("Could not start `{shown}`."))
}

fn test(args: &[OsString]) -> Result<()> {
    build(false)?;
    // CI must run the field corpus; elsewhere (offline) its tests print SKIP.
    if let Err(e) = field::fetch(workspace_root()) {
        if env::var("CI").is_ok_and(|v| v == "true") {
            return Err(e.context("the field corpus is required when CI=true"));
        }
        eprintln!("xtask: warning: field corpus not available ({e:#}); its tests will SKIP");
    }
    let bin = target_dir().join(profile(false)).join("hbwatch");
    if !is_root() {
        eprintln!(
            "xtask: warning: not root; the integration tests need root (CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON)"
        );
    }
    run(cargo().arg("test").env("HBWATCH_BIN", &bin).args(args))
}

fn profile(release: bool) -> &'static str {
    if release {
        "release"
    } else {
        "debug"
    }
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
}

/// `cargo` (the rustup proxy, so the caller's toolchain) run from the workspace root.
fn cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root());
    cmd
}

/// Cargo's target directory: `cargo metadata` knows about CARGO_TARGET_DIR and
/// config files; fall back to those conventions if it fails.
fn target_dir() -> PathBuf {
    let metadata = probe(cargo().args(["metadata", "--format-version", "1", "--no-deps"]));
    if let Some(dir) = metadata.and_then(|json| json_str_field(&json, "target_directory")) {
        return dir.into();
    }
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The string value of `"key":"..."` in compact JSON (enough for cargo metadata,
/// without pulling in serde).
fn json_str_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut chars = json[start..].chars();
    let mut value = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                'b' => value.push('\u{8}'),
                'f' => value.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => value.push(c), // \" \\ \/
            },
            c => value.push(c),
        }
    }
}

/// Put `$CARGO_HOME/bin` first on PATH for us and every child, so the
/// bpf-linker installed there is the one aya-build finds.
fn cargo_bin_on_path() {
    let Some(bin) = bootstrap::cargo_home().map(|home| home.join("bin")) else {
        return;
    };
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
    if dirs.first() == Some(&bin) {
        return;
    }
    dirs.insert(0, bin);
    if let Ok(path) = env::join_paths(dirs) {
        // Single-threaded at this point, so mutating the environment is fine.
        env::set_var("PATH", path);
    }
}

#[cfg(test)]
mod tests {
    use super::json_str_field;

    #[test]
    fn reads_escaped_json_string() {
        let json = r#"{"packages":[],"target_directory":"/a \"b\"\\c\u00e9","version":1}"#;
        assert_eq!(
            json_str_field(json, "target_directory").as_deref(),
            Some("/a \"b\"\\cé")
        );
        assert_eq!(json_str_field(json, "missing"), None);
    }
}
