//! `syslog+udp://`, `syslog+tcp://`, `syslog+tls://`: RFC 5424 (or 3164) with the JSON
//! event as MSG. (Being written.)

use super::SinkContext;
use crate::output::Sink;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogOptions {
    pub url: String,
}

impl SyslogOptions {
    pub fn parse(url: &url::Url) -> Result<SyslogOptions, String> {
        let _ = url;
        Err("syslog outputs are not built yet".into())
    }
}

pub fn open(opts: &SyslogOptions, ctx: &SinkContext) -> anyhow::Result<Box<dyn Sink + Send>> {
    let _ = ctx;
    anyhow::bail!("{}: syslog outputs are not built yet", opts.url)
}
