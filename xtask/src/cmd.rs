//! Small helpers around `std::process::Command`.
//!
//! Commands that change or build something are echoed as `xtask: $ ...` so CI
//! logs show exactly what ran. Quick read-only probes (`rustup toolchain list`,
//! `dpkg-query`, ...) stay silent so a no-op bootstrap prints one line per step.

use std::{
    ffi::OsStr,
    fmt,
    path::PathBuf,
    process::{Command, ExitStatus},
};

use anyhow::{Context as _, Result};

/// A child command that exited unsuccessfully; `main` exits with `code`.
#[derive(Debug)]
pub struct Failed {
    pub cmd: String,
    pub code: i32,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed with exit code {}", self.cmd, self.code)
    }
}

impl std::error::Error for Failed {}

/// Shell-like rendering of a command, including env vars set on it.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./=:+,@%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Echo and run `cmd` with inherited stdio; error if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("xtask: $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    check(status, shown)
}

fn check(status: ExitStatus, cmd: String) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    // Killed by a signal: use the shell convention 128 + signal.
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt as _;
        128 + status.signal().unwrap_or(0)
    });
    Err(Failed { cmd, code }.into())
}

/// Run a silent probe; `Some(stdout)` only if it started and succeeded.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// First executable file called `name` on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Effective uid 0? Read from /proc to avoid a libc dependency.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
