//! `file:PATH`: NDJSON to a file with size and time rotation. (Being written.)

use crate::output::Sink;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    pub path: std::path::PathBuf,
}

impl FileOptions {
    /// `PATH[?options]` (what follows `file:`).
    pub fn parse(spec: &str) -> Result<FileOptions, String> {
        let _ = spec;
        Err("file outputs are not built yet".into())
    }
}

pub fn open(opts: &FileOptions) -> anyhow::Result<Box<dyn Sink + Send>> {
    anyhow::bail!(
        "file:{}: file outputs are not built yet",
        opts.path.display()
    )
}
