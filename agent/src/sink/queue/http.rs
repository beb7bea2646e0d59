//! The HTTP side of the batching outputs: one `ureq` agent (connection reuse, rustls), a
//! POST per batch, and the answer classified into an [`Outcome`].

use std::time::Duration;

use super::Outcome;

/// One output's HTTP client.
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    /// `Content-Type`, authorization, tenant...: sent with every push (secrets among them).
    headers: Vec<(String, Secret)>,
}

/// A successful answer: its status and (the start of) its body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Client {
    /// `tls`: for `https` endpoints, the CAs to trust and the client certificate
    /// ([`super::tls::config`]).
    pub fn new(
        endpoint: &str,
        timeout: Duration,
        tls: Option<ureq::tls::TlsConfig>,
        headers: Vec<(String, Secret)>,
    ) -> anyhow::Result<Client> {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent(format!("hbwatch/{}", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = tls {
            cfg = cfg.tls_config(tls);
        }
        Ok(Client {
            agent: cfg.build().into(),
            endpoint: endpoint.to_string(),
            headers,
        })
    }

    /// POSTs `body`. 2xx is `Ok`; other answers and transport errors become an
    /// [`Outcome`]: `Retry` when `retryable(status)` (or on a transport error), with the
    /// receiver's `Retry-After` seconds, else `Rejected`.
    pub fn post(
        &self,
        body: &[u8],
        timeout: Duration,
        retryable: fn(u16) -> bool,
    ) -> Result<Answer, Outcome> {
        let mut req = self
            .agent
            .post(&self.endpoint)
            .config()
            .timeout_global(Some(timeout))
            .build();
        for (k, v) in &self.headers {
            req = req.header(k, &v.0);
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => return Err(Outcome::Retry(e.to_string(), None)),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the answer to the end (the connection is then reused).
        let answer = resp.body_mut().with_config().limit(1 << 20).read_to_vec();
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                body: answer.unwrap_or_default(),
            });
        }
        // Keep a bit for logs.
        let text = match answer {
            Ok(b) => {
                let t = String::from_utf8_lossy(&b);
                let t = t.trim();
                match t.char_indices().nth(1000) {
                    Some((i, _)) => format!("{}...", &t[..i]),
                    None => t.to_string(),
                }
            }
            Err(e) => format!("(answer unreadable: {e})"),
        };
        let what = match resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            Some(to) if (300..400).contains(&status) => {
                format!("HTTP {status}: redirected to {to}; give that URL instead")
            }
            _ if text.is_empty() => format!("HTTP {status}"),
            _ => format!("HTTP {status}: {text}"),
        };
        Err(if retryable(status) {
            Outcome::Retry(what, retry_after)
        } else {
            Outcome::Rejected(what)
        })
    }
}

/// `Authorization: Basic ...` for a user and password from the URL.
pub fn basic_auth(user: &str, password: &str) -> (String, String) {
    use base64::Engine as _;
    (
        "Authorization".to_string(),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ),
    )
}

/// A password, token or header value: kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}
