//! TLS settings of an `https` batching output (Loki, OTLP): the CAs to trust (`ca=`, else
//! the system store through rustls-native-certs) and the client certificate (`cert=`,
//! `key=`), checked when the output opens so that a bad file is an error at start, not at
//! every handshake.

use tracing::debug;

/// Certificates of a PEM file (`what`: `ca=PATH` for messages).
fn pem_certs(
    path: &std::path::Path,
    what: &str,
) -> anyhow::Result<Vec<ureq::tls::Certificate<'static>>> {
    use rustls_pki_types::pem::PemObject as _;
    let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let mut certs = Vec::new();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| anyhow::anyhow!("{what}: bad PEM ({e})"))?;
        certs.push(ureq::tls::Certificate::from_der(c.as_ref()).to_owned());
    }
    if certs.is_empty() {
        anyhow::bail!("{what}: no PEM certificate (BEGIN CERTIFICATE) in the file");
    }
    Ok(certs)
}

/// TLS settings of output `name`: the CAs to trust (`ca=`, else the system store) and the
/// client certificate (`cert=`, `key=`).
pub(super) fn config(
    opts: &super::QueueOptions,
    name: &str,
) -> anyhow::Result<ureq::tls::TlsConfig> {
    use super::auth::{credential_path, describe_path};
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::PrivateKeyDer;
    let roots =
        match &opts.ca {
            Some(ca) => {
                let path = credential_path(ca);
                let what = describe_path("ca", ca, &path);
                let certs = pem_certs(&path, &what)?;
                // rustls would skip a certificate it cannot use without a word.
                let mut store = rustls::RootCertStore::empty();
                for (i, c) in certs.iter().enumerate() {
                    store
                        .add(rustls_pki_types::CertificateDer::from(c.der().to_vec()))
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "{what}: certificate {} is not a usable CA certificate ({e})",
                                i + 1
                            )
                        })?;
                }
                certs
            }
            None => {
                // SSL_CERT_FILE and SSL_CERT_DIR, else the distribution's bundle.
                let found = rustls_native_certs::load_native_certs();
                if found.certs.is_empty() {
                    let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    anyhow::bail!(
                    "no CA certificate in the system trust store ({}); install ca-certificates, \
                     or give ca=PATH",
                    if why.is_empty() { "it is empty".to_string() } else { why.join("; ") }
                );
                }
                for e in &found.errors {
                    debug!("output {name}: system trust store: {e}");
                }
                found
                    .certs
                    .iter()
                    .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
                    .collect()
            }
        };
    let mut tls =
        ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        let cert_path = credential_path(cert);
        let cert_what = describe_path("cert", cert, &cert_path);
        let chain = pem_certs(&cert_path, &cert_what)?;
        let key_path = credential_path(key);
        let key_what = describe_path("key", key, &key_path);
        let pem = std::fs::read(&key_path).map_err(|e| anyhow::anyhow!("{key_what}: {e}"))?;
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
                "{key_what}: no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) \
                 in the file"
            ),
            e => anyhow::anyhow!("{key_what}: bad PEM ({e})"),
        })?;
        // The key must be usable and belong to the certificate: say so now rather than
        // at every handshake.
        let provider = rustls::crypto::ring::default_provider();
        rustls::sign::CertifiedKey::from_der(
            chain
                .iter()
                .map(|c| rustls_pki_types::CertificateDer::from(c.der().to_vec()))
                .collect(),
            der.clone_key(),
            &provider,
        )
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                anyhow::anyhow!("{key_what} is not the key of {cert_what}")
            }
            e => anyhow::anyhow!("{cert_what} with {key_what}: {e}"),
        })?;
        let key = ureq::tls::PrivateKey::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{key_what}: bad PEM ({e})"))?;
        tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
    }
    Ok(tls.build())
}
