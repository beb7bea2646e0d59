use which::which;

/// Rebuild when bpf-linker changes (as aya-template does): it is the linker of this crate.
fn main() {
    let bpf_linker =
        which("bpf-linker").expect("bpf-linker not found; run `cargo xtask bootstrap`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
