//! TLS for the agent and its client: self-made identities, certificates trusted by their
//! SHA-256 fingerprint (pinned at `server add`, as one pins an SSH host key), and client
//! certificates that name the manager owning an agent.
//!
//! There is no certificate authority: each side makes its own key and self-signed
//! certificate on first use. The client accepts exactly the agent certificate whose
//! fingerprint it was given; the agent accepts any client certificate in the handshake and
//! then lets only its owner's fingerprint past the ownership check (see `server::owner`).
//! Signatures are still verified, so a peer must hold the key of the certificate it shows.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

use ovm_core::files::write_private;

/// What can go wrong with keys and certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing an identity file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// An identity file that is not a PEM certificate or key.
    #[error("{path}: not a PEM {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// Making a key or certificate.
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Building a TLS configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A fingerprint that is not 32 hexadecimal bytes.
    #[error("{0:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
    Fingerprint(String),
}

/// The SHA-256 of a certificate (DER): how ovm names and pins TLS peers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert: &CertificateDer<'_>) -> Self {
        Fingerprint(Sha256::digest(cert.as_ref()).into())
    }
}

impl fmt::Display for Fingerprint {
    /// `sha256:AB:CD:…`, the form `openssl x509 -fingerprint -sha256` prints after its `=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = TlsError;

    /// Accepts `sha256:AB:CD…`, `AB:CD…` or `abcd…`, in any case.
    fn from_str(s: &str) -> Result<Self, TlsError> {
        let t = s.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .unwrap_or(t);
        let hex: String = t.chars().filter(|c| *c != ':').collect();
        let bad = || TlsError::Fingerprint(s.to_string());
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A key and its self-signed certificate.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new key (ECDSA P-256) and a certificate for `name`.
    pub fn generate(name: &str) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key)?;
        Ok(Identity {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        })
    }

    /// The identity kept in `dir` as `NAME.crt` and `NAME.key` (PEM), made there on first
    /// use. The key file is readable by its owner only.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, TlsError> {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        if cert_path.exists() && key_path.exists() {
            return Self::load(&cert_path, &key_path);
        }
        let id = Self::generate(name)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        write_private(&key_path, id.key_pem().as_bytes()).map_err(io(&key_path))?;
        write_private(&cert_path, id.cert_pem().as_bytes()).map_err(io(&cert_path))?;
        Ok(id)
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert =
            CertificateDer::from_pem_slice(&read(cert_path)?).map_err(|_| TlsError::Pem {
                path: cert_path.to_path_buf(),
                what: "certificate",
            })?;
        let key = PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|_| TlsError::Pem {
            path: key_path.to_path_buf(),
            what: "private key",
        })?;
        Ok(Identity { cert, key })
    }

    /// Its certificate's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.cert)
    }

    fn cert_pem(&self) -> String {
        pem("CERTIFICATE", self.cert.as_ref())
    }

    fn key_pem(&self) -> String {
        pem("PRIVATE KEY", self.key.secret_der())
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn provider() -> Arc<CryptoProvider> {
    // ring, deprecated only for lacking post-quantum key exchange: aws-lc-rs has it but
    // builds a C library with cmake, which a clean build here cannot afford.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The agent's TLS: its identity; client certificates requested, not required (the
/// ownership check decides what a caller may do).
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's TLS: trusts exactly the agent certificate with fingerprint `pinned`, and
/// presents `client` (the manager's identity) when given.
pub fn client_config(
    pinned: Fingerprint,
    client: Option<&Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        pinned,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(id) => builder.with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The handshake signature checks every verifier here makes the same way: with the
/// provider's algorithms (`self.algorithms`), so a peer must hold its certificate's key.
macro_rules! signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algorithms.supported_schemes()
        }
    };
}

/// Connects to `addr` only to read the certificate it presents (trust on first use: the
/// user is shown the fingerprint and confirms it out of band before it is pinned).
pub async fn probe_fingerprint(addr: &str) -> Result<Fingerprint, TlsError> {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let provider = provider();
    let verifier = Arc::new(Recorder {
        seen: seen.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let io = |source| TlsError::Io {
        path: PathBuf::from(addr),
        source,
    };
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
    .map_err(io)?;
    let name = ServerName::try_from("ovm-agent").map_err(|e| io(std::io::Error::other(e)))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    // The handshake is refused on purpose once the certificate is read.
    let _ = connector.connect(name, tcp).await;
    let fp = *ovm_core::sync::lock(&seen);
    fp.ok_or_else(|| io(std::io::Error::other("the peer presented no certificate")))
}

/// Records the certificate a server presents, then refuses it.
#[derive(Debug)]
struct Recorder {
    seen: Arc<std::sync::Mutex<Option<Fingerprint>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *ovm_core::sync::lock(&self.seen) = Some(Fingerprint::of(end_entity));
        Err(rustls::Error::General("probe only".into()))
    }

    signature_checks!();
}

/// The client certificate a connection presented, by fingerprint.
pub fn peer_fingerprint(conn: &rustls::ServerConnection) -> Option<Fingerprint> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .map(Fingerprint::of)
}

/// Accepts the agent certificate with the pinned fingerprint and no other.
#[derive(Debug)]
struct PinnedServer {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pinned {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the agent presents certificate {seen}, not the pinned {}",
                self.pinned
            )))
        }
    }

    signature_checks!();
}

/// Accepts any client certificate whose key signs the handshake; who it is, is decided by
/// fingerprint after the handshake.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_in_every_usual_form() {
        let id = Identity::generate("t").unwrap();
        let fp = id.fingerprint();
        let s = fp.to_string();
        assert!(s.starts_with("sha256:") && s.len() == 7 + 95, "{s}");
        assert_eq!(s.parse::<Fingerprint>().unwrap(), fp);
        let bare = s
            .trim_start_matches("sha256:")
            .replace(':', "")
            .to_lowercase();
        assert_eq!(bare.parse::<Fingerprint>().unwrap(), fp);
        for bad in [
            "",
            "sha256:",
            "zz",
            &"ab".repeat(31),
            &"ab".repeat(33),
            "é".repeat(32).as_str(),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_identity_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path(), "agent").unwrap();
        let b = Identity::load_or_create(dir.path(), "agent").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
        std::fs::write(dir.path().join("agent.crt"), "junk").unwrap();
        let err = Identity::load_or_create(dir.path(), "agent").unwrap_err();
        assert!(err.to_string().contains("not a PEM certificate"), "{err}");
    }
}
