//! Loading, refusing and reloading the TLS files.
//!
//! `testdata/rsa.crt` + `rsa-pkcs1.key` and `ec.crt` + `ec-sec1.key` are self-signed
//! test-only pairs made with OpenSSL (`openssl req -x509 -newkey rsa:2048 ...` then
//! `openssl rsa -traditional`; `openssl ecparam -genkey -name prime256v1 -noout`), because
//! rcgen writes PKCS#8 keys only.

use super::*;
use tokio::io::AsyncWriteExt;

const RSA_CERT: &str = include_str!("../../testdata/rsa.crt");
const RSA_PKCS1_KEY: &str = include_str!("../../testdata/rsa-pkcs1.key");
const EC_CERT: &str = include_str!("../../testdata/ec.crt");
const EC_SEC1_KEY: &str = include_str!("../../testdata/ec-sec1.key");

/// A self-signed certificate for localhost and its PKCS#8 key, in PEM.
fn generated() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

struct Files {
    _dir: tempfile::TempDir,
    files: TlsFiles,
}

impl Files {
    fn new(cert: &str, key: &str) -> Files {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
            peer_ca: None,
        };
        let written = Files { _dir: dir, files };
        written.write(cert, key);
        written
    }

    fn write(&self, cert: &str, key: &str) {
        std::fs::write(&self.files.cert, cert).expect("write cert");
        std::fs::write(&self.files.key, key).expect("write key");
    }
}

fn first_certificate(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a certificate")
}

fn presented(reloader: &Reloader) -> CertificateDer<'static> {
    reloader.certificate.current().cert[0].clone()
}

#[tokio::test]
async fn loads_pkcs8_pkcs1_and_sec1_keys() {
    let (pkcs8_cert, pkcs8_key) = generated();
    assert!(pkcs8_key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(RSA_PKCS1_KEY.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(EC_SEC1_KEY.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    for (cert, key) in [
        (pkcs8_cert.as_str(), pkcs8_key.as_str()),
        (RSA_CERT, RSA_PKCS1_KEY),
        (EC_CERT, EC_SEC1_KEY),
    ] {
        let written = Files::new(cert, key);
        let tls = Tls::load(&written.files).await.expect("load");
        assert_eq!(presented(&tls.reloader), first_certificate(cert));
        assert_eq!(
            tls.kinesis.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(tls.grpc.alpn_protocols, [b"h2".to_vec()]);
    }
}

#[tokio::test]
async fn loads_a_chain_and_a_client_ca() {
    let (cert, key) = generated();
    let (other_cert, _) = generated();
    let written = Files::new(&format!("{cert}{other_cert}"), &key);
    let ca_path = written.files.cert.with_file_name("ca.pem");
    std::fs::write(&ca_path, &other_cert).expect("write ca");
    let files = TlsFiles {
        client_ca: Some(ca_path),
        peer_ca: None,
        ..written.files.clone()
    };
    let tls = Tls::load(&files).await.expect("load");
    assert_eq!(tls.reloader.certificate.current().cert.len(), 2);
}

#[tokio::test]
async fn unusable_files_are_refused_with_the_file_named() {
    let (cert, key) = generated();
    let (other_cert, _) = generated();

    let written = Files::new(&cert, &key);
    let missing = TlsFiles {
        cert: written.files.cert.with_file_name("missing.pem"),
        ..written.files.clone()
    };
    let error = Tls::load(&missing).await.expect_err("missing file");
    assert!(matches!(&error, TlsError::Read { path, .. } if *path == missing.cert));
    assert_eq!(
        error.to_string(),
        format!("read {}", missing.cert.display())
    );

    written.write(&key, &key);
    let error = Tls::load(&written.files).await.expect_err("no certificate");
    assert!(matches!(&error, TlsError::NoCertificate { path } if *path == written.files.cert));
    assert_eq!(
        error.to_string(),
        format!("no certificate in {}", written.files.cert.display())
    );

    written.write(&cert, &cert);
    let error = Tls::load(&written.files).await.expect_err("no key");
    assert!(matches!(&error, TlsError::NoKey { path } if *path == written.files.key));

    written.write(&other_cert, &key);
    let error = Tls::load(&written.files).await.expect_err("mismatched key");
    assert!(
        matches!(
            &error,
            TlsError::KeyPair {
                source: rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch),
                ..
            }
        ),
        "{error:?}"
    );

    written.write(
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        &key,
    );
    let error = Tls::load(&written.files).await.expect_err("bad pem");
    assert!(matches!(&error, TlsError::Pem { path, .. } if *path == written.files.cert));

    written.write(&cert, &key);
    let ca_path = written.files.cert.with_file_name("ca.pem");
    std::fs::write(&ca_path, "").expect("write ca");
    let files = TlsFiles {
        client_ca: Some(ca_path.clone()),
        peer_ca: None,
        ..written.files.clone()
    };
    let error = Tls::load(&files).await.expect_err("empty client ca");
    assert!(matches!(&error, TlsError::NoCertificate { path } if *path == ca_path));
}

#[tokio::test]
async fn reload_swaps_in_changed_files_and_keeps_the_certificate_when_they_are_broken() {
    let (first_cert, first_key) = generated();
    let (second_cert, second_key) = generated();
    let (third_cert, third_key) = generated();
    let written = Files::new(&first_cert, &first_key);
    let mut reloader = Tls::load(&written.files)
        .await
        .expect("load")
        .into_reloader();

    assert!(!reloader.check().await, "unchanged files change nothing");
    assert_eq!(presented(&reloader), first_certificate(&first_cert));

    written.write(&second_cert, &second_key);
    assert!(reloader.check().await);
    assert_eq!(presented(&reloader), first_certificate(&second_cert));

    written.write("not a certificate", &second_key);
    assert!(!reloader.check().await);
    assert_eq!(presented(&reloader), first_certificate(&second_cert));

    // A rotation seen half-way (new certificate, old key) waits for the key.
    written.write(&third_cert, &second_key);
    assert!(!reloader.check().await);
    assert_eq!(presented(&reloader), first_certificate(&second_cert));
    written.write(&third_cert, &third_key);
    assert!(reloader.check().await);
    assert_eq!(presented(&reloader), first_certificate(&third_cert));

    std::fs::remove_file(&written.files.key).expect("remove key");
    assert!(!reloader.check().await);
    assert_eq!(presented(&reloader), first_certificate(&third_cert));
}

#[tokio::test]
async fn reloader_stops_when_told() {
    let (cert, key) = generated();
    let written = Files::new(&cert, &key);
    let reloader = Tls::load(&written.files)
        .await
        .expect("load")
        .into_reloader();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(reloader.run(stop_rx));
    stop_tx.send(true).expect("send stop");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the reloader stops")
        .expect("the reloader does not panic");
}

#[tokio::test]
async fn a_plain_http_client_fails_the_handshake_without_an_error() {
    let (cert, key) = generated();
    let written = Files::new(&cert, &key);
    let tls = Tls::load(&written.files).await.expect("load");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .expect("write");
        stream
    });
    let (stream, peer) = listener.accept().await.expect("accept");
    let accepted = handshake(&tls.kinesis_acceptor(), stream, peer, "kinesis").await;
    assert!(accepted.is_none());
    drop(client.await.expect("client"));
}
