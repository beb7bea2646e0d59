//! Who the batching outputs say they are: basic auth (password in the URL or
//! `password_file`), a bearer token (`bearer_token_file`, or inline), extra headers
//! (`header.NAME=VALUE`, `header_file.NAME=PATH`), and the files they come from: a
//! relative name is taken in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`).
//! Secrets never appear in errors, `Debug` output or logs.

use std::path::{Path, PathBuf};

pub use super::http::Secret;

/// Prefixes of the header options (`header.NAME=VALUE`, `header_file.NAME=PATH`), which
/// take any header name and so are not in the outputs' option lists.
pub const HEADER: &str = "header.";
pub const HEADER_FILE: &str = "header_file.";

/// Headers hbwatch sets itself, or that would break the request framing.
pub const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "host",
    "transfer-encoding",
    "user-agent",
];

/// RFC 9110 `tchar`: what a header name is made of.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A header value hbwatch can send as is: visible ASCII, spaces and tabs inside, not empty.
/// The reason never quotes the value (it may be a secret).
pub fn check_header_value(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("empty".into());
    }
    if let Some(c) = v
        .chars()
        .find(|&c| !(c == ' ' || c == '\t' || c.is_ascii_graphic()))
    {
        return Err(if c == '\n' || c == '\r' {
            "more than one line".into()
        } else {
            format!(
                "a character an HTTP header cannot carry (U+{:04X})",
                c as u32
            )
        });
    }
    if v != v.trim() {
        return Err("leading or trailing white space".into());
    }
    Ok(())
}

/// Where a file option points: a relative name is taken in `$CREDENTIALS_DIRECTORY` when
/// that is set (systemd `LoadCredential=`, `LoadCredentialEncrypted=`), else as usual
/// (relative to the working directory).
pub fn credential_path(p: &Path) -> PathBuf {
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) if p.is_relative() && !dir.is_empty() => PathBuf::from(dir).join(p),
        _ => p.to_path_buf(),
    }
}

/// `opt=PATH` for errors: the path as given and, when it differs, where it was looked for.
pub fn describe_path(opt: &str, given: &Path, resolved: &Path) -> String {
    if given == resolved {
        format!("{opt}={}", given.display())
    } else {
        format!("{opt}={} ({})", given.display(), resolved.display())
    }
}

/// A password can be any one line of text: it travels base64-encoded.
pub fn check_password(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("empty".into());
    }
    match v.chars().find(|c| c.is_control()) {
        Some('\n' | '\r') => Err("more than one line".into()),
        Some(c) => Err(format!("a control character (U+{:04X})", c as u32)),
        None => Ok(()),
    }
}

/// A one-line secret from a file (trailing newline dropped). Errors say what is wrong with
/// the file and never quote its content.
pub fn read_secret(opt: &str, given: &Path) -> anyhow::Result<Secret> {
    let path = credential_path(given);
    let what = describe_path(opt, given, &path);
    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{what}: not UTF-8 text"))?;
    let value = text.strip_suffix('\n').unwrap_or(&text);
    let value = value.strip_suffix('\r').unwrap_or(value);
    let check = if opt == "password_file" {
        check_password
    } else {
        check_header_value
    };
    check(value).map_err(|why| anyhow::anyhow!("{what}: {why}"))?;
    Ok(Secret(value.to_string()))
}

/// `url` for messages: the password, `bearer_token` and header values replaced by `***`.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret_key = |k: &str| k == "bearer_token" || k.starts_with(HEADER);
    if url.query_pairs().any(|(k, _)| secret_key(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_key(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}
