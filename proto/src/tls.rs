//! Optional TLS for every connection of a run: the coordinator's gRPC port, the learners' Flight
//! ports and their collective ring.
//!
//! On with one setting: `AIRLIFT_TLS=DIR` (or `--tls DIR` on `coordinator` and `worker`), where
//! DIR holds the job's files, written by `coordinator tls-init DIR`:
//!
//! * `ca.pem`: the job's own certificate authority (made for the job; its key is not kept);
//! * `node.pem`, `node.key`: one certificate and key for every process of the job, signed by
//!   that CA, for the name [`NAME`] (not a host name: a job's processes move between nodes, and
//!   what makes a peer trusted is holding a certificate of the job's CA, as with the run token).
//!
//! Every client checks that the server's certificate chains to `ca.pem` and names [`NAME`]; every
//! server asks for the client's certificate and, unless `AIRLIFT_TLS_CLIENT_AUTH=optional`,
//! refuses a client without one of the job's (mutual TLS). The ring is always mutual. A plaintext
//! client of a TLS server fails its handshake and is closed.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The name every certificate of a job is issued for and every client checks.
pub const NAME: &str = "airlift";

/// The environment variable naming the folder of the job's TLS files.
pub const ENV: &str = "AIRLIFT_TLS";
/// `required` (default) or `optional`: whether servers refuse clients without a certificate.
pub const CLIENT_AUTH_ENV: &str = "AIRLIFT_TLS_CLIENT_AUTH";

/// The file names inside the TLS folder.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "node.pem";
pub const KEY_FILE: &str = "node.key";

/// Errors reading the TLS folder.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {what} (TLS files are made by `coordinator tls-init DIR`)")]
    File { path: PathBuf, what: String },
    #[error("{ENV}: {0}")]
    Setting(String),
}

/// The job's TLS material, read once.
#[derive(Clone)]
pub struct Tls {
    pub dir: PathBuf,
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// Servers refuse clients without a certificate of the job's CA.
    pub require_client_cert: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("dir", &self.dir)
            .field("require_client_cert", &self.require_client_cert)
            .finish()
    }
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, TlsError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|e| TlsError::File { path, what: e.to_string() })
}

impl Tls {
    /// Reads and checks the folder's three files.
    pub fn load(dir: &Path, require_client_cert: bool) -> Result<Self, TlsError> {
        let t = Tls {
            dir: dir.to_path_buf(),
            ca_pem: read(dir, CA_FILE)?,
            cert_pem: read(dir, CERT_FILE)?,
            key_pem: read(dir, KEY_FILE)?,
            require_client_cert,
        };
        // Parse now so that a bad file is named at start, not at the first connection.
        t.certs(&t.ca_pem, CA_FILE)?;
        t.certs(&t.cert_pem, CERT_FILE)?;
        t.key()?;
        Ok(t)
    }

    /// `AIRLIFT_TLS` (and `AIRLIFT_TLS_CLIENT_AUTH`) as set in this process's environment; `None`
    /// when TLS is off.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        let Some(dir) = std::env::var_os(ENV).filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        let require = match std::env::var(CLIENT_AUTH_ENV).as_deref() {
            Err(_) | Ok("") | Ok("required") => true,
            Ok("optional") => false,
            Ok(other) => return Err(TlsError::Setting(format!("{CLIENT_AUTH_ENV} = `{other}`: expected `required` or `optional`"))),
        };
        Self::load(Path::new(&dir), require).map(Some)
    }

    fn certs(&self, pem: &[u8], name: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| TlsError::File {
            path: self.dir.join(name),
            what: format!("not a PEM certificate: {e:?}"),
        })?;
        if certs.is_empty() {
            return Err(TlsError::File {
                path: self.dir.join(name),
                what: "holds no certificate".into(),
            });
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::File {
            path: self.dir.join(KEY_FILE),
            what: format!("not a PEM private key: {e:?}"),
        })
    }

    /// The tonic server settings: this node's certificate, client certificates checked against
    /// the job's CA (required unless `AIRLIFT_TLS_CLIENT_AUTH=optional`).
    pub fn server(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(!self.require_client_cert)
    }

    /// The tonic client settings: the server must hold a certificate of the job's CA for
    /// [`NAME`]; this node's certificate is presented for mutual TLS.
    pub fn client(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(NAME)
    }

    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in self.certs(&self.ca_pem, CA_FILE)? {
            roots.add(c).map_err(|e| TlsError::File {
                path: self.dir.join(CA_FILE),
                what: format!("not a usable CA certificate: {e}"),
            })?;
        }
        Ok(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn rustls_error(&self, e: impl std::fmt::Display) -> TlsError {
        TlsError::File {
            path: self.dir.clone(),
            what: format!("TLS settings refused: {e}"),
        }
    }

    /// rustls settings for the ring's accepting side: a client certificate of the job's CA is
    /// always required there.
    pub fn ring_server(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), Self::provider())
            .build()
            .map_err(|e| self.rustls_error(e))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rustls_error(e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs(&self.cert_pem, CERT_FILE)?, self.key()?)
            .map_err(|e| self.rustls_error(e))?;
        // No TLS 1.3 session tickets: a ring link is read on one side only, so tickets would sit
        // unread in the dialler's socket and its close would reset the link (ECONNRESET on the
        // peer's last read, seen in `make test`).
        cfg.send_tls13_tickets = 0;
        Ok(Arc::new(cfg))
    }

    /// rustls settings for the ring's dialling side.
    pub fn ring_client(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let cfg = rustls::ClientConfig::builder_with_provider(Self::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.rustls_error(e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.certs(&self.cert_pem, CERT_FILE)?, self.key()?)
            .map_err(|e| self.rustls_error(e))?;
        Ok(Arc::new(cfg))
    }

    /// The server name the ring's clients check.
    pub fn server_name() -> ServerName<'static> {
        ServerName::try_from(NAME).expect("a valid DNS name")
    }
}

static CURRENT: OnceLock<Result<Option<Tls>, String>> = OnceLock::new();

/// This process's TLS settings, read from `AIRLIFT_TLS` once (`None`: plaintext). A folder that
/// cannot be read is an error on every use, never a silent fall back to plaintext; processes
/// call this at start so that it is reported there.
pub fn current() -> Result<Option<&'static Tls>, String> {
    match CURRENT.get_or_init(|| Tls::from_env().map_err(|e| e.to_string())) {
        Ok(t) => Ok(t.as_ref()),
        Err(e) => Err(e.clone()),
    }
}

/// `url` with the scheme this process's connections use: `https://` when TLS is on.
pub fn scheme(url: &str) -> String {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
    if matches!(current(), Ok(Some(_))) {
        format!("https://{rest}")
    } else {
        format!("http://{rest}")
    }
}

/// A tonic endpoint for `url` (`http://host:port`; the scheme is switched by [`scheme`]) with
/// this process's TLS client settings when TLS is on, and HTTP/2 pings that give up a server that
/// stopped answering ([`crate::conn::CLIENT_PING_TIMEOUT`]).
pub fn endpoint(url: &str) -> Result<tonic::transport::Endpoint, String> {
    let tls = current()?;
    let e = tonic::transport::Endpoint::from_shared(scheme(url))
        .map_err(|e| format!("{url}: bad URL: {e}"))?
        .http2_keep_alive_interval(crate::conn::CLIENT_PING_EVERY)
        .keep_alive_timeout(crate::conn::CLIENT_PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .connect_timeout(crate::conn::CLIENT_CONNECT_TIMEOUT);
    match tls {
        Some(t) => e.tls_config(t.client()).map_err(|e| format!("TLS settings for {url}: {e}")),
        None => Ok(e),
    }
}

/// A tonic server with this process's TLS settings when TLS is on (and [`crate::conn::server`]'s
/// keepalive).
pub fn server() -> Result<tonic::transport::Server, String> {
    let s = crate::conn::server();
    match current()? {
        Some(t) => s
            .tls_config(t.server())
            .map_err(|e| format!("TLS server settings from {}: {e}", t.dir.display())),
        None => Ok(s),
    }
}

/// Writes a job's TLS files into `dir` (see this module): a CA made for the job, whose
/// key is dropped once it has signed, and one certificate for [`NAME`] usable
/// by servers and clients, with its key. Refuses to overwrite existing files.
pub fn init(dir: &std::path::Path) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    for f in [CA_FILE, CERT_FILE, KEY_FILE] {
        if dir.join(f).exists() {
            return Err(format!("{}: exists; remove the folder's TLS files to make new ones", dir.join(f).display()));
        }
    }
    let e = |what: &'static str| move |err: rcgen::Error| format!("making the {what}: {err}");
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e("CA"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "airlift job CA");
    ca.distinguished_name = name;
    let ca_key = KeyPair::generate().map_err(e("CA key"))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(e("CA certificate"))?;
    let issuer = Issuer::new(ca, ca_key);
    let mut node = CertificateParams::new(vec![NAME.to_string()]).map_err(e("node certificate"))?;
    node.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, NAME);
    node.distinguished_name = name;
    let node_key = KeyPair::generate().map_err(e("node key"))?;
    let node_cert = node.signed_by(&node_key, &issuer).map_err(e("node certificate"))?;
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let write = |f: &str, text: String, mode: u32| -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(f);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        file.write_all(text.as_bytes()).map_err(|err| format!("{}: {err}", path.display()))
    };
    write(CA_FILE, ca_cert.pem(), 0o644)?;
    write(CERT_FILE, node_cert.pem(), 0o644)?;
    write(KEY_FILE, node_key.serialize_pem(), 0o600)?;
    Ok(())
}
