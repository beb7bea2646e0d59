use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Compiles the eBPF crate with the nightly toolchain and bpf-linker; the object
/// lands in OUT_DIR and is embedded into the hbwatch binary.
fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "hbwatch-ebpf")
        .ok_or_else(|| anyhow!("hbwatch-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
