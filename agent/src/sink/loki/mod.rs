//! `loki+http://`, `loki+https://`: the Loki push API. (Being written.)

use super::SinkContext;
use crate::output::Sink;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiOptions {
    pub url: String,
}

impl LokiOptions {
    pub fn parse(url: &url::Url) -> Result<LokiOptions, String> {
        let _ = url;
        Err("Loki outputs are not built yet".into())
    }
}

pub fn open(opts: &LokiOptions, ctx: &SinkContext) -> anyhow::Result<Box<dyn Sink + Send>> {
    let _ = ctx;
    anyhow::bail!("{}: Loki outputs are not built yet", opts.url)
}
