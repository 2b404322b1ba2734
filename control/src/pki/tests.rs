use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::thread;

use rustls::{ClientConnection, ServerConnection, StreamOwned};

use super::*;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use wgmesh_client::pin::{client_config_pinned, client_config_with_ca};

fn hosts(names: &[&str]) -> Vec<Host> {
    names.iter().map(|n| n.parse().unwrap()).collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn pki_create_then_reload_keeps_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let advertise = hosts(&["127.0.0.1", "control.example"]);
    let first = Pki::load_or_create(dir.path(), &advertise).unwrap();
    let server_pem = fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap();
    let second = Pki::load_or_create(dir.path(), &advertise).unwrap();
    assert_eq!(first.ca_digest(), second.ca_digest());
    assert_eq!(first.ca_der(), second.ca_der());
    assert_eq!(CaDigest::of(first.ca_der()), first.ca_digest());
    // Nothing changed: the server certificate is not re-issued.
    assert_eq!(
        server_pem,
        fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap()
    );
    let ca_pem = fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap();
    let parsed: wgmesh_config::control::CertificatePem = ca_pem.parse().unwrap();
    assert_eq!(parsed.der(), first.ca_der());
}

#[test]
fn pki_files_are_0600() {
    let dir = tempfile::tempdir().unwrap();
    let all_private = || {
        let mut n = 0;
        for entry in fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            // No temporary file is left behind.
            assert!(!name.to_string_lossy().ends_with(".tmp"), "{name:?}");
            assert_eq!(mode(&entry.path()), 0o600, "{name:?}");
            n += 1;
        }
        assert_eq!(
            n, 5,
            "ca.pem, ca.key, server.pem, server.key, server.advertise"
        );
    };
    Pki::load_or_create(dir.path(), &hosts(&["127.0.0.1"])).unwrap();
    assert_eq!(mode(&dir.path().join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.path().join(SERVER_KEY_FILE)), 0o600);
    all_private();
    // Re-issuing keeps the mode.
    Pki::load_or_create(dir.path(), &hosts(&["127.0.0.2"])).unwrap();
    all_private();
}

#[test]
fn pki_missing_ca_key_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let advertise = hosts(&["127.0.0.1"]);
    Pki::load_or_create(dir.path(), &advertise).unwrap();
    let ca_key = dir.path().join(CA_KEY_FILE);
    fs::remove_file(&ca_key).unwrap();
    let err = Pki::load_or_create(dir.path(), &advertise).unwrap_err();
    assert!(
        matches!(&err, PkiError::Missing { path, .. } if *path == ca_key),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&ca_key.display().to_string()),
        "{err}"
    );
    // The CA certificate was not replaced.
    assert!(!ca_key.exists());
}

#[test]
fn pki_corrupt_files_are_refused_with_their_path() {
    let advertise = hosts(&["127.0.0.1"]);
    for file in [CA_CERT_FILE, CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE] {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &advertise).unwrap();
        let path = dir.path().join(file);
        fs::write(&path, "garbage\n").unwrap();
        let err = Pki::load_or_create(dir.path(), &advertise).unwrap_err();
        assert!(
            matches!(&err, PkiError::Corrupt { path: p, .. } if *p == path),
            "{file}: {err:?}"
        );
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        if file != CA_CERT_FILE {
            let ca = fs::read_to_string(dir.path().join(CA_CERT_FILE)).unwrap();
            let ca: wgmesh_config::control::CertificatePem = ca.parse().unwrap();
            assert_eq!(ca.der(), first.ca_der());
        }
    }
    // A missing server certificate is refused too.
    let dir = tempfile::tempdir().unwrap();
    Pki::load_or_create(dir.path(), &advertise).unwrap();
    let path = dir.path().join(SERVER_CERT_FILE);
    fs::remove_file(&path).unwrap();
    let err = Pki::load_or_create(dir.path(), &advertise).unwrap_err();
    assert!(
        matches!(&err, PkiError::Missing { path: p, .. } if *p == path),
        "{err:?}"
    );
}

#[test]
fn pki_ca_key_of_another_ca_is_refused() {
    let advertise = hosts(&["127.0.0.1"]);
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    Pki::load_or_create(a.path(), &advertise).unwrap();
    Pki::load_or_create(b.path(), &advertise).unwrap();
    fs::copy(b.path().join(CA_KEY_FILE), a.path().join(CA_KEY_FILE)).unwrap();
    let err = Pki::load_or_create(a.path(), &advertise).unwrap_err();
    let path = a.path().join(CA_KEY_FILE);
    assert!(
        matches!(&err, PkiError::Corrupt { path: p, .. } if *p == path),
        "{err:?}"
    );
}

/// Serves one TLS connection on 127.0.0.1 and echoes a line; returns the port.
fn serve_once(config: Arc<ServerConfig>) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let conn = ServerConnection::new(config).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 5];
        if tls.read_exact(&mut buf).is_ok() {
            let _ = tls.write_all(&buf);
            let _ = tls.flush();
        }
    });
    (port, handle)
}

/// Connects to `name` at 127.0.0.1:`port` with `config` and exchanges "hello".
fn talk(port: u16, name: &str, config: Arc<ClientConfig>) -> Result<(), io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"hello")?;
    tls.flush()?;
    let mut buf = [0u8; 5];
    tls.read_exact(&mut buf)?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

fn handshake(pki: &Pki, name: &str, config: Arc<ClientConfig>) -> Result<(), io::Error> {
    let (port, server) = serve_once(pki.server_config());
    let result = talk(port, name, config);
    server.join().unwrap();
    result
}

#[test]
fn pki_handshake_pinned_and_with_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &hosts(&["127.0.0.1", "localhost"])).unwrap();

    handshake(&pki, "127.0.0.1", client_config_pinned(pki.ca_digest())).unwrap();
    handshake(&pki, "localhost", client_config_pinned(pki.ca_digest())).unwrap();
    handshake(
        &pki,
        "127.0.0.1",
        client_config_with_ca(pki.ca_der()).unwrap(),
    )
    .unwrap();

    // A wrong digest: refused, saying why.
    let wrong = CaDigest::from_bytes([7; 32]);
    let err = handshake(&pki, "127.0.0.1", client_config_pinned(wrong)).unwrap_err();
    assert!(err.to_string().contains("CA digest"), "{err}");

    // Another cluster's CA: refused by both clients.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::load_or_create(other_dir.path(), &hosts(&["127.0.0.1"])).unwrap();
    handshake(&pki, "127.0.0.1", client_config_pinned(other.ca_digest())).unwrap_err();
    handshake(
        &pki,
        "127.0.0.1",
        client_config_with_ca(other.ca_der()).unwrap(),
    )
    .unwrap_err();

    // The right CA, but a name the certificate is not for.
    handshake(&pki, "other.example", client_config_pinned(pki.ca_digest())).unwrap_err();
}

#[test]
fn pki_changed_advertise_reissues_the_server_cert_from_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let before = Pki::load_or_create(dir.path(), &hosts(&["127.0.0.1"])).unwrap();
    let ca_key = fs::read(dir.path().join(CA_KEY_FILE)).unwrap();
    let server_pem = fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap();
    handshake(
        &before,
        "localhost",
        client_config_pinned(before.ca_digest()),
    )
    .unwrap_err();

    let after = Pki::load_or_create(dir.path(), &hosts(&["127.0.0.1", "localhost"])).unwrap();
    assert_eq!(before.ca_digest(), after.ca_digest());
    assert_eq!(ca_key, fs::read(dir.path().join(CA_KEY_FILE)).unwrap());
    assert_ne!(
        server_pem,
        fs::read(dir.path().join(SERVER_CERT_FILE)).unwrap()
    );
    handshake(
        &after,
        "localhost",
        client_config_pinned(before.ca_digest()),
    )
    .unwrap();
    handshake(
        &after,
        "127.0.0.1",
        client_config_with_ca(before.ca_der()).unwrap(),
    )
    .unwrap();

    // Dropping a name re-issues too.
    let dropped = Pki::load_or_create(dir.path(), &hosts(&["localhost"])).unwrap();
    assert_eq!(before.ca_digest(), dropped.ca_digest());
    handshake(
        &dropped,
        "127.0.0.1",
        client_config_pinned(before.ca_digest()),
    )
    .unwrap_err();
    handshake(
        &dropped,
        "localhost",
        client_config_pinned(before.ca_digest()),
    )
    .unwrap();
}
