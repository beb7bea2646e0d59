//! What the fuzz targets share: their input formats, the oracles they check, and the
//! seed corpora they start from (generated from `hbgen` scenarios, never committed).
//!
//! Every target is a thin `fuzz_target!` over one `check_*` function here, so a crash
//! reproduces the same way in a unit test: `hbwatch_fuzz::check_engine(&bytes)`.

pub mod input;
pub mod oracle;
pub mod reference;
pub mod seeds;
pub mod targets;

pub use targets::*;

/// Called from each target's `init`: with `HBWATCH_FUZZ_SEEDS=DIR` in the environment
/// the binary writes the target's seed corpus into DIR and exits instead of fuzzing
/// (`cargo xtask fuzz` does that for a target whose corpus is empty).
pub fn init(target: &str) {
    let Some(dir) = std::env::var_os("HBWATCH_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let inputs = seeds::for_target(target);
    if let Err(e) = seeds::write(&dir, &inputs) {
        eprintln!("{target}: writing seeds to {}: {e}", dir.display());
        std::process::exit(1);
    }
    eprintln!(
        "{target}: wrote {} seed inputs to {}",
        inputs.len(),
        dir.display()
    );
    std::process::exit(0);
}
