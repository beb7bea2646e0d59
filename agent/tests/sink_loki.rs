//! The Loki output end to end, against the recording Loki push endpoint of
//! `support/loki.rs`.
//!
//! No Loki server can be installed on this machine, so the endpoint implements Loki's
//! documented push API (`POST /loki/api/v1/push`, snappy-compressed protobuf
//! `logproto.PushRequest` or the JSON body) over HTTP/1.1 with keep-alive, decodes every
//! request the way Loki does (protobuf with Loki's published schema through `protoc`, its
//! own label parser; nothing of the agent's), answers 400 with the reason for anything Loki would refuse, and records what
//! it accepted. The tests run the real `hbwatch analyze` on hbgen captures and compare
//! what arrived with the NDJSON the same run printed on stdout.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::loki::{assert_stream_order, lines, spooled, Endpoint, Entry, Expect};
use support::{capture, finish, free_tcp_port, sorted, Run};

// ---- running hbwatch ----

fn tempdir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "hbwatch-sink-loki-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn analyze_cmd(pcap: &Path, host: &str, state: &Path, flush: &str, outputs: &[String]) -> Command {
    let mut c = Command::new(support::BIN);
    c.arg("analyze")
        .arg(pcap)
        .args([
            "--hostname",
            host,
            "--flush-timeout",
            flush,
            "--format",
            "json",
        ])
        .env("STATE_DIRECTORY", state)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for o in outputs {
        c.args(["--output", o]);
    }
    c
}

fn analyze(pcap: &Path, host: &str, state: &Path, flush: &str, outputs: &[String]) -> Run {
    let child = analyze_cmd(pcap, host, state, flush, outputs)
        .spawn()
        .unwrap();
    finish(child, Duration::from_secs(60))
}

// ---- scenarios ----

/// (a) Both encodings: every event of the run arrives exactly once, in order, with the
/// labels, time, tenant and metadata a Loki user queries by.
#[test]
fn every_event_arrives_exactly_once_in_both_encodings() {
    let dir = tempdir("both");
    let pcap = capture(&dir, "faults");
    for (encoding, query) in [
        ("protobuf", "?tenant=ops&batch_wait=1m"),
        ("json", "?encoding=json&tenant=ops&batch_size=8KiB"),
    ] {
        let t = Instant::now();
        let ep = Endpoint::start(
            0,
            &[],
            Expect {
                tenant: Some("ops".into()),
                ..Expect::default()
            },
        );
        let run = analyze(
            &pcap,
            "probe-1",
            &dir.join(encoding),
            "10s",
            &["stdout".into(), ep.url(query)],
        );
        assert_eq!(run.code(), Some(0), "{encoding}: {}", run.stderr);
        assert!(ep.errors().is_empty(), "{encoding}: {:?}", ep.errors());
        let got = ep.accepted();
        assert!(
            run.stdout.len() > 100,
            "a real run: {} events",
            run.stdout.len()
        );
        assert_eq!(
            sorted(lines(&got)),
            sorted(run.stdout.clone()),
            "{encoding}: what Loki got is what stdout showed, each once"
        );
        assert_stream_order(&run.stdout, &got);
        let reqs = ep.requests();
        assert!(reqs
            .iter()
            .all(|r| r.encoding == encoding && r.status == 204));
        assert!(reqs.iter().all(|r| r.tenant.as_deref() == Some("ops")));
        assert!(reqs.iter().all(|r| r.authorization.is_none()));
        if encoding == "json" {
            assert!(reqs.len() > 3, "8 KiB batches: {} pushes", reqs.len());
        } else {
            assert_eq!(reqs.len(), 1, "everything fits one default batch");
        }
        // Labels stay few: one stream per protocol and level.
        let streams: BTreeSet<_> = got.iter().map(|e| e.labels.clone()).collect();
        let protocols: BTreeSet<_> = got.iter().map(|e| e.labels["protocol"].clone()).collect();
        assert!(protocols.len() >= 3, "{protocols:?}");
        assert!(streams.len() < 30, "{} streams", streams.len());
        assert!(got
            .iter()
            .any(|e| e.metadata.contains_key("heartbeat_diagnosis")));
        eprintln!(
            "{encoding}: {} events in {} pushes, run took {:.2}s",
            got.len(),
            reqs.len(),
            t.elapsed().as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// (b) Loki down (connections refused), then overloaded (503 three times, 429 once), then
/// fine: after recovery nothing is lost or duplicated, and nothing is reported lost.
#[test]
fn outage_loses_and_duplicates_nothing() {
    let dir = tempdir("outage");
    let pcap = capture(&dir, "faults");
    let port = free_tcp_port();
    let url =
        format!("loki+http://127.0.0.1:{port}?batch_size=4KiB&min_backoff=20ms&max_backoff=200ms");
    let child = analyze_cmd(&pcap, "probe-1", &dir, "20s", &["stdout".into(), url])
        .spawn()
        .unwrap();
    // Connections are refused until a batch had to go to the spool, and a little longer...
    let t = Instant::now();
    while spooled(&dir).0.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nothing spooled during the outage"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // ...then Loki comes up overloaded.
    let ep = Endpoint::start(port, &[503, 503, 503, 429], Expect::default());
    let run = finish(child, Duration::from_secs(30));
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    assert!(
        run.stderr.contains("push failed") && run.stderr.contains("refused"),
        "the outage is logged: {}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Loki takes pushes again"),
        "{}",
        run.stderr
    );
    let statuses = ep.statuses();
    assert_eq!(&statuses[..4], [503, 503, 503, 429], "{statuses:?}");
    assert!(statuses[4..].iter().all(|s| *s == 204), "{statuses:?}");
    let got = ep.accepted();
    assert_eq!(
        sorted(lines(&got)),
        sorted(run.stdout.clone()),
        "exactly once"
    );
    assert_stream_order(&run.stdout, &got);
    assert!(run.lost_events().is_empty());
    // The batches refused during the outage were the ones delivered afterwards.
    let refused: BTreeSet<String> = ep
        .requests()
        .iter()
        .filter(|r| r.status != 204)
        .flat_map(|r| lines(&r.entries))
        .collect();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|l| run.stdout.contains(l)));
    let (files, _) = spooled(&dir);
    assert!(
        files.is_empty(),
        "the spool is empty after delivery: {files:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// (c) Loki down at exit: the events stay in the spool (nothing lost, exit 0); the next
/// run delivers them first, once.
#[test]
fn spool_survives_a_restart() {
    let dir = tempdir("restart");
    let faults = capture(&dir, "faults");
    let healthy = capture(&dir, "healthy");
    let port = free_tcp_port();
    let url = format!("loki+http://127.0.0.1:{port}?min_backoff=20ms&max_backoff=100ms");

    let t = Instant::now();
    let first = analyze(
        &faults,
        "first",
        &dir,
        "300ms",
        &["stdout".into(), url.clone()],
    );
    let took = t.elapsed();
    assert_eq!(
        first.code(),
        Some(0),
        "spooled is not lost: {}",
        first.stderr
    );
    assert!(
        took < Duration::from_secs(5),
        "the flush timeout holds: {took:?}"
    );
    assert!(first.lost_events().is_empty());
    assert!(
        first
            .stderr
            .contains(&format!("{} events not delivered", first.stdout.len()))
            && first.stderr.contains("stay in the spool"),
        "{}",
        first.stderr
    );
    let (files, entries) = spooled(&dir);
    assert!(!files.is_empty());
    assert_eq!(
        sorted(lines(&entries)),
        sorted(first.stdout.clone()),
        "all of run 1 on disk"
    );

    let ep = Endpoint::start(port, &[], Expect::default());
    let second = analyze(&healthy, "second", &dir, "10s", &["stdout".into(), url]);
    assert_eq!(second.code(), Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("from an earlier run"),
        "{}",
        second.stderr
    );
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    let got = ep.accepted();
    let (from_first, from_second): (Vec<Entry>, Vec<Entry>) = got
        .iter()
        .cloned()
        .partition(|e| e.labels["host"] == "first");
    assert_eq!(sorted(lines(&from_first)), sorted(first.stdout.clone()));
    assert_eq!(sorted(lines(&from_second)), sorted(second.stdout.clone()));
    // The spooled events go first.
    let first_of_second = got
        .iter()
        .position(|e| e.labels["host"] == "second")
        .unwrap();
    assert_eq!(first_of_second, from_first.len());
    assert_stream_order(&first.stdout, &from_first);
    let (files, _) = spooled(&dir);
    assert!(files.is_empty(), "{files:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// (d) A long outage past the spool bound: drops are counted and reported (agent.events_lost
/// on stdout, a message on stderr, exit status 3); the spool keeps to its bound, and what
/// it kept is delivered later. Nothing is unaccounted for.
#[test]
fn spool_bound_drops_are_counted_and_reported() {
    let dir = tempdir("bound");
    let faults = capture(&dir, "faults");
    let healthy = capture(&dir, "healthy");
    let port = free_tcp_port();
    let url = format!(
        "loki+http://127.0.0.1:{port}?batch_size=1KiB&queue_max=2KiB&spool_max=8KiB&min_backoff=20ms&max_backoff=100ms"
    );
    let first = analyze(
        &faults,
        "first",
        &dir,
        "200ms",
        &["stdout".into(), url.clone()],
    );
    assert_eq!(first.code(), Some(3), "{}", first.stderr);
    let name = format!("loki+http://127.0.0.1:{port}");
    let lost_msg = format!("hbwatch: not every event was delivered: {name}: ");
    let reported: u64 = first
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(lost_msg.as_str()))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no loss message: {}", first.stderr));
    let lost = first.lost_events();
    assert_eq!(lost.len(), 1, "{:?}", first.stdout);
    assert_eq!(lost[0]["heartbeat"]["where"], format!("sink:{name}"));
    let lost_n = lost[0]["heartbeat"]["lost"].as_u64().unwrap();
    assert!(
        lost_n > 0 && lost_n <= reported,
        "{lost_n} reported on stdout, {reported} in total"
    );
    let spool_bytes: u64 = spooled(&dir)
        .0
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(
        spool_bytes > 0 && spool_bytes <= 8 << 10,
        "{spool_bytes} bytes spooled"
    );

    // Same output (same name, same spool), default bounds: room for the second run's own
    // events while the spool drains.
    let ep = Endpoint::start(port, &[], Expect::default());
    let second = analyze(
        &healthy,
        "second",
        &dir,
        "10s",
        &["stdout".into(), name.clone()],
    );
    assert_eq!(second.code(), Some(0), "{}", second.stderr);
    assert!(
        second.stderr.contains("from an earlier run"),
        "{}",
        second.stderr
    );
    let delivered_from_first: Vec<String> = ep
        .accepted()
        .into_iter()
        .filter(|e| e.labels["host"] == "first")
        .map(|e| e.line)
        .collect();
    // Every event of run 1 (the agent.events_lost line included) was spooled and
    // delivered now, or counted as lost: nothing else.
    assert_eq!(
        delivered_from_first.len() as u64 + reported,
        first.stdout.len() as u64,
        "{} delivered later + {reported} lost != {} sent",
        delivered_from_first.len(),
        first.stdout.len()
    );
    let uniq: BTreeSet<_> = delivered_from_first.iter().collect();
    assert_eq!(uniq.len(), delivered_from_first.len(), "no duplicates");
    assert!(delivered_from_first
        .iter()
        .all(|l| first.stdout.contains(l)));
    let _ = std::fs::remove_dir_all(dir);
}

/// A 4xx other than 429 is final: that batch is dropped and counted, Loki's reason is
/// logged, the other batches arrive.
#[test]
fn a_rejected_batch_is_dropped_counted_and_explained() {
    let dir = tempdir("reject");
    let pcap = capture(&dir, "faults");
    let ep = Endpoint::start(0, &[400], Expect::default());
    let run = analyze(
        &pcap,
        "probe-1",
        &dir,
        "10s",
        &["stdout".into(), ep.url("?batch_size=4KiB")],
    );
    assert_eq!(run.code(), Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains("Loki rejected a batch")
            && run.stderr.contains("HTTP 400: scripted answer 400"),
        "Loki's answer is in the log: {}",
        run.stderr
    );
    let reqs = ep.requests();
    assert_eq!(reqs[0].status, 400);
    assert_eq!(
        reqs.iter().filter(|r| r.status == 400).count(),
        1,
        "not retried"
    );
    let dropped = reqs[0].entries.len();
    assert!(
        run.stderr.contains(&format!(": {dropped} events lost")),
        "{}",
        run.stderr
    );
    let got = ep.accepted();
    assert_eq!(got.len() + dropped, run.stdout.len());
    let _ = std::fs::remove_dir_all(dir);
}

/// `loki+https` with a private CA (`ca=`) and basic auth from the URL; without the CA
/// the certificate is refused and the events wait in the spool.
#[test]
fn https_with_a_private_ca_and_basic_auth() {
    let dir = tempdir("tls");
    let pcap = capture(&dir, "healthy");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hbwatch test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let ep = Endpoint::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        &[],
        Expect {
            tenant: Some("t1".into()),
            basic_auth: Some("hb@watch:p:w/d".into()),
            ..Expect::default()
        },
        Some(Arc::new(tls)),
    );
    let base = format!(
        "loki+https://hb%40watch:p%3Aw%2Fd@localhost:{}?tenant=t1&min_backoff=20ms&max_backoff=100ms",
        ep.port
    );

    // Not trusting the private CA: nothing delivered, everything kept.
    let untrusted = analyze(
        &pcap,
        "probe-1",
        &dir.join("a"),
        "500ms",
        &["stdout".into(), base.clone()],
    );
    assert_eq!(untrusted.code(), Some(0), "{}", untrusted.stderr);
    assert!(
        untrusted.stderr.to_lowercase().contains("certificate"),
        "{}",
        untrusted.stderr
    );
    assert!(ep.requests().is_empty());
    assert_eq!(spooled(&dir.join("a")).1.len(), untrusted.stdout.len());

    let run = analyze(
        &pcap,
        "probe-1",
        &dir.join("b"),
        "10s",
        &["stdout".into(), format!("{base}&ca={}", ca_file.display())],
    );
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    assert_eq!(sorted(lines(&ep.accepted())), sorted(run.stdout.clone()));
    assert!(ep.requests().iter().all(|r| r
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic "))));
    // The password stays out of the logs.
    assert!(
        !run.stderr.contains("p:w/d") && !untrusted.stderr.contains("p%3Aw"),
        "{}",
        untrusted.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The endpoint's protobuf decoder (protoc with Loki's schema) on a push encoded by hand,
/// byte by byte: what it reads, and that it refuses fields Loki's schema does not have.
#[test]
fn the_endpoint_decodes_with_lokis_schema() {
    let entry: &[u8] = &[
        0x0a, 0x04, 0x08, 0x01, 0x10, 0x05, // timestamp {seconds: 1, nanos: 5}
        0x12, 0x01, b'x', // line "x"
        0x1a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, 0xc3, 0xa9, // structuredMetadata {k: é}
    ];
    let mut stream = vec![0x0a, 0x07];
    stream.extend_from_slice(br#"{a="b"}"#);
    stream.extend_from_slice(&[0x12, entry.len() as u8]);
    stream.extend_from_slice(entry);
    let mut push = vec![0x0a, stream.len() as u8];
    push.extend_from_slice(&stream);
    let snappy = |b: &[u8]| snap::raw::Encoder::new().compress_vec(b).unwrap();
    let got = support::loki::decode_protobuf(&snappy(&push)).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels["a"], "b");
    assert_eq!((got[0].ns, got[0].line.as_str()), (1_000_000_005, "x"));
    assert_eq!(got[0].metadata["k"], "é");
    // Field 9 of PushRequest does not exist.
    let mut extra = push.clone();
    extra.extend_from_slice(&[0x48, 0x01]);
    let e = support::loki::decode_protobuf(&snappy(&extra)).unwrap_err();
    assert!(e.contains("unknown field 9"), "{e}");
    // Not protobuf at all.
    let e = support::loki::decode_protobuf(&snappy(b"\xff\xff")).unwrap_err();
    assert!(e.contains("protoc --decode"), "{e}");
}

// ---- a test PKI ----

type Ca = rcgen::CertifiedIssuer<'static, rcgen::KeyPair>;

fn test_ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `localhost` signed by `ca` (server or client use) and its key.
fn leaf(ca: &Ca, client: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert, key)
}

/// A TLS server configuration with a `localhost` certificate from `ca`, requiring a client
/// certificate from `client_ca` when given.
fn server_tls(ca: &Ca, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (cert, key) = leaf(ca, false);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(client_ca.der().clone()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
    };
    Arc::new(
        builder
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap(),
    )
}

/// Mutual TLS, a bearer token and custom headers, every secret in a file named relative
/// to `$CREDENTIALS_DIRECTORY` (as systemd's `LoadCredential=` gives them): everything
/// arrives and no secret shows in the log. Without a client certificate, or with one the
/// server does not trust, the server refuses the connection: nothing is delivered, the
/// failure is logged, and the events wait in the spool or, with `spool=off`, are counted
/// and reported as lost.
#[test]
fn mutual_tls_bearer_token_and_headers_from_credential_files() {
    let dir = tempdir("mtls");
    let pcap = capture(&dir, "healthy");
    let (ca, client_ca, rogue_ca) = (
        test_ca("hbwatch test CA"),
        test_ca("hbwatch client CA"),
        test_ca("someone else"),
    );
    let creds = dir.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let write = |name: &str, content: &str| std::fs::write(creds.join(name), content).unwrap();
    write("ca.pem", &ca.pem());
    let (cert, key) = leaf(&client_ca, true);
    write("client.pem", &cert.pem());
    write("client.key", &key.serialize_pem());
    let (cert, key) = leaf(&rogue_ca, true);
    write("rogue.pem", &cert.pem());
    write("rogue.key", &key.serialize_pem());
    let token = "hbw-t0ken-8c1f2e";
    let api_key = "hbw-k3y-77aa01";
    write("loki-token", &format!("{token}\n"));
    write("api-key", api_key);

    let ep = Endpoint::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        &[],
        Expect {
            tenant: Some("ops".into()),
            bearer: Some(token.into()),
            headers: vec![
                ("X-Api-Key".into(), api_key.into()),
                ("X-Team".into(), "voice".into()),
            ],
            ..Expect::default()
        },
        Some(server_tls(&ca, Some(&client_ca))),
    );
    let base = format!(
        "loki+https://localhost:{}?ca=ca.pem&bearer_token_file=loki-token\
         &header.X-Scope-OrgID=ops&header.X-Team=voice&header_file.X-Api-Key=api-key\
         &min_backoff=20ms&max_backoff=100ms",
        ep.port
    );
    let run_with = |tag: &str, flush: &str, url: String| {
        let child = analyze_cmd(
            &pcap,
            "probe-1",
            &dir.join(tag),
            flush,
            &["stdout".into(), url],
        )
        .env("CREDENTIALS_DIRECTORY", &creds)
        .spawn()
        .unwrap();
        let run = finish(child, Duration::from_secs(60));
        eprintln!("---- {tag}:\n{}", run.stderr);
        for secret in [token, api_key] {
            assert!(!run.stderr.contains(secret), "{tag}: {}", run.stderr);
        }
        run
    };

    let good = run_with(
        "good",
        "10s",
        format!("{base}&cert=client.pem&key=client.key"),
    );
    assert_eq!(good.code(), Some(0), "{}", good.stderr);
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    assert_eq!(sorted(lines(&ep.accepted())), sorted(good.stdout.clone()));
    let reqs = ep.requests();
    assert!(reqs.iter().all(|r| r.status == 204
        && r.encoding == "protobuf"
        && r.headers["x-team"] == "voice"
        && r.tenant.as_deref() == Some("ops")));
    let accepted = reqs.len();

    // No client certificate: refused at the handshake, the events stay in the spool.
    let anonymous = run_with("anonymous", "500ms", base.clone());
    assert_eq!(anonymous.code(), Some(0), "{}", anonymous.stderr);
    assert!(
        anonymous.stderr.contains("push failed"),
        "the refusal is logged: {}",
        anonymous.stderr
    );
    assert_eq!(ep.requests().len(), accepted, "nothing got through");
    assert_eq!(
        spooled(&dir.join("anonymous")).1.len(),
        anonymous.stdout.len()
    );

    // A certificate from a CA the server does not trust, no spool: lost, and reported.
    let rogue = run_with(
        "rogue",
        "500ms",
        format!("{base}&cert=rogue.pem&key=rogue.key&spool=off"),
    );
    assert_eq!(rogue.code(), Some(3), "{}", rogue.stderr);
    assert!(rogue.stderr.contains("push failed"), "{}", rogue.stderr);
    assert_eq!(ep.requests().len(), accepted, "nothing got through");
    let name = format!("loki+https://localhost:{}?tenant=ops", ep.port);
    let lost_msg = format!("hbwatch: not every event was delivered: {name}: ");
    let lost: usize = rogue
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(lost_msg.as_str()))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no loss message: {}", rogue.stderr));
    assert!(
        lost > 0 && lost <= rogue.stdout.len(),
        "{lost} of {}",
        rogue.stdout.len()
    );
    assert!(spooled(&dir.join("rogue")).0.is_empty());

    // A key that is not the certificate's, a missing token file: refused at start, saying
    // which file and why, never what is in it.
    for (url, want) in [
        (
            format!("{base}&cert=client.pem&key=rogue.key"),
            "rogue.key) is not the key of cert=client.pem",
        ),
        (
            format!("{base}&cert=client.pem&key=client.key").replace("=loki-token", "=nope"),
            "bearer_token_file=nope (",
        ),
    ] {
        let run = run_with("refused", "1s", url);
        assert_ne!(run.code(), Some(0), "{want}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{want}: {}", run.stderr);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `loki+https` without `ca=` trusts the system store: here a test CA installed as the
/// whole store through `SSL_CERT_FILE`, which rustls-native-certs honours. An empty store
/// is an error at start that says what to do.
#[test]
fn https_trusts_the_system_store_by_default() {
    let dir = tempdir("system-store");
    let pcap = capture(&dir, "healthy");
    let ca = test_ca("hbwatch system-store test CA");
    let bundle = dir.join("ca-certificates.crt");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let ep = Endpoint::serve(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        &[],
        Expect::default(),
        Some(server_tls(&ca, None)),
    );
    let url = format!(
        "loki+https://localhost:{}?min_backoff=20ms&max_backoff=100ms",
        ep.port
    );
    let child = analyze_cmd(
        &pcap,
        "probe-1",
        &dir.join("a"),
        "10s",
        &["stdout".into(), url.clone()],
    )
    .env("SSL_CERT_FILE", &bundle)
    .env_remove("SSL_CERT_DIR")
    .spawn()
    .unwrap();
    let run = finish(child, Duration::from_secs(60));
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert!(ep.errors().is_empty(), "{:?}", ep.errors());
    assert_eq!(sorted(lines(&ep.accepted())), sorted(run.stdout.clone()));

    let empty = dir.join("empty.crt");
    std::fs::write(&empty, "").unwrap();
    let child = analyze_cmd(
        &pcap,
        "probe-1",
        &dir.join("b"),
        "1s",
        &["stdout".into(), url],
    )
    .env("SSL_CERT_FILE", &empty)
    .env_remove("SSL_CERT_DIR")
    .spawn()
    .unwrap();
    let run = finish(child, Duration::from_secs(60));
    assert_ne!(run.code(), Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no CA certificate in the system trust store")
            && run.stderr.contains("ca=PATH"),
        "{}",
        run.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Throughput of the sink itself (library, no capture): events pushed per second to the
/// recording endpoint, both encodings. Prints the figures; asserts only delivery.
#[test]
fn throughput_to_the_recording_endpoint() {
    use hbwatch::sink::stdout::Format;
    use hbwatch::sink::Sink as _;
    let n: u64 = std::env::var("LOKI_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempdir("throughput");
    let events = support::late_alerts(n);
    for encoding in ["protobuf", "json"] {
        let ep = Endpoint::start(
            0,
            &[],
            Expect {
                decode_only: true,
                ..Expect::default()
            },
        );
        let spec: hbwatch::sink::SinkSpec =
            ep.url(&format!("?encoding={encoding}")).parse().unwrap();
        let mut ctx = hbwatch::sink::SinkContext::new("bench".into(), Format::Json);
        ctx.spool_dir = dir.join(encoding);
        let mut sink = hbwatch::sink::open(&spec, &ctx).unwrap();
        let t = Instant::now();
        for ev in &events {
            sink.send(ev).unwrap();
        }
        let queued = t.elapsed();
        sink.close(Duration::from_secs(60)).unwrap();
        let total = t.elapsed();
        let st = sink.stats();
        assert_eq!((st.delivered, st.dropped, st.queued), (n, 0, 0), "{st:?}");
        assert!(ep.errors().is_empty(), "{:?}", ep.errors());
        assert_eq!(ep.accepted().len() as u64, n);
        let bytes: usize = events.iter().map(|e| e.to_line().len()).sum();
        eprintln!(
            "{encoding}: {n} events ({:.1} MB of NDJSON) queued in {:.3}s, delivered in {:.3}s: {:.0} events/s, {} pushes",
            bytes as f64 / 1e6,
            queued.as_secs_f64(),
            total.as_secs_f64(),
            n as f64 / total.as_secs_f64(),
            ep.requests().len()
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
