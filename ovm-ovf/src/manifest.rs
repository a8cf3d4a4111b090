//! OVF manifests (`.mf`): one digest per file, `SHA256(name)= hex` or
//! `SHA256 (name) = hex`, LF or CRLF line ends, SHA1 / SHA256 / SHA512.

use std::collections::BTreeMap;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use crate::error::{OvfError, Result};

/// A digest algorithm used by manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlgorithm {
    /// SHA-1 (OVF 1.x).
    Sha1,
    /// SHA-256 (OVF 2.x, and what ovm writes).
    Sha256,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha1 => "SHA1",
            DigestAlgorithm::Sha256 => "SHA256",
            DigestAlgorithm::Sha512 => "SHA512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            DigestAlgorithm::Sha1 => 40,
            DigestAlgorithm::Sha256 => 64,
            DigestAlgorithm::Sha512 => 128,
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "SHA1" => Some(DigestAlgorithm::Sha1),
            "SHA256" => Some(DigestAlgorithm::Sha256),
            "SHA512" => Some(DigestAlgorithm::Sha512),
            _ => None,
        }
    }
}

/// One manifest line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Algorithm.
    pub algorithm: DigestAlgorithm,
    /// Expected digest, lowercase hex.
    pub digest: String,
}

/// A parsed manifest: file name → expected digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Entries by file name.
    pub entries: BTreeMap<String, ManifestEntry>,
}

impl Manifest {
    /// Parses manifest text. Each non-empty line must be `ALG(name)= hex` (spaces around
    /// the parentheses and `=` allowed); duplicates and unknown algorithms are refused.
    pub fn parse(bytes: &[u8]) -> Result<Manifest> {
        let text = std::str::from_utf8(bytes).map_err(|e| OvfError::ManifestSyntax {
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            reason: "not UTF-8".into(),
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut m = Manifest::default();
        for (i, raw) in text.split('\n').enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| OvfError::ManifestSyntax {
                line: line_no,
                reason: reason.to_owned(),
            };
            let open = line
                .find('(')
                .ok_or_else(|| bad("expected ALG(name)= digest"))?;
            let close = line.rfind(')').ok_or_else(|| bad("missing `)`"))?;
            if close < open {
                return Err(bad("`)` before `(`"));
            }
            let alg_name = line[..open].trim();
            let algorithm = DigestAlgorithm::from_name(alg_name)
                .ok_or_else(|| bad(&format!("unknown digest algorithm {alg_name:?}")))?;
            let name = &line[open + 1..close];
            if name.is_empty() {
                return Err(bad("empty file name"));
            }
            let rest = line[close + 1..].trim_start();
            let digest = rest
                .strip_prefix('=')
                .ok_or_else(|| bad("missing `=`"))?
                .trim()
                .to_ascii_lowercase();
            if digest.len() != algorithm.hex_len() || !digest.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad(&format!(
                    "{} digest must be {} hex digits",
                    algorithm.name(),
                    algorithm.hex_len()
                )));
            }
            if m.entries
                .insert(name.to_owned(), ManifestEntry { algorithm, digest })
                .is_some()
            {
                return Err(bad(&format!("{name:?} is listed twice")));
            }
        }
        Ok(m)
    }

    /// The entry for a file.
    pub fn get(&self, name: &str) -> Option<&ManifestEntry> {
        self.entries.get(name)
    }

    /// Checks a computed digest against the entry for `name`.
    pub fn verify(&self, name: &str, algorithm: DigestAlgorithm, actual: &str) -> Result<()> {
        let e = self.get(name).ok_or_else(|| OvfError::NotInManifest {
            file: name.to_owned(),
        })?;
        if e.algorithm != algorithm || !e.digest.eq_ignore_ascii_case(actual) {
            return Err(OvfError::DigestMismatch {
                file: name.to_owned(),
                algorithm: e.algorithm.name().to_owned(),
                expected: e.digest.clone(),
                actual: actual.to_owned(),
            });
        }
        Ok(())
    }

    /// Renders a manifest in the `SHA256(name)= hex` syntax, one line per file.
    pub fn render(entries: &[(String, DigestAlgorithm, String)]) -> String {
        entries
            .iter()
            .map(|(name, alg, hex)| format!("{}({name})= {hex}\n", alg.name()))
            .collect()
    }
}

/// An incremental digest.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-1.
    Sha1(Sha1),
    /// SHA-256.
    Sha256(Sha256),
    /// SHA-512.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(alg: DigestAlgorithm) -> Self {
        match alg {
            DigestAlgorithm::Sha1 => Hasher::Sha1(Sha1::new()),
            DigestAlgorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            DigestAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The digest, lowercase hex.
    pub fn finish_hex(self) -> String {
        match self {
            Hasher::Sha1(h) => hex(&h.finalize()),
            Hasher::Sha256(h) => hex(&h.finalize()),
            Hasher::Sha512(h) => hex(&h.finalize()),
        }
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The digest of a byte slice, lowercase hex.
pub fn digest_hex(alg: DigestAlgorithm, data: &[u8]) -> String {
    let mut h = Hasher::new(alg);
    h.update(data);
    h.finish_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_syntaxes_and_crlf() {
        let text = "SHA1(a.ovf)= 06271f767e0d5671c67e4edeaa2c157cabb66c2b\r\nSHA256 (b c.vmdk) = 4A218C15A1E8AED26CB0A2A533562E85A9F28956A6666181D0C9BB7BA58B5B06\r\n\r\n";
        let m = Manifest::parse(text.as_bytes()).unwrap();
        assert_eq!(m.get("a.ovf").unwrap().algorithm, DigestAlgorithm::Sha1);
        assert_eq!(
            m.get("b c.vmdk").unwrap().digest,
            "4a218c15a1e8aed26cb0a2a533562e85a9f28956a6666181d0c9bb7ba58b5b06"
        );
    }

    #[test]
    fn refusals() {
        for (text, line) in [
            ("MD5(a)= 00", 1),
            ("SHA1(a)= xyz", 1),
            ("\nSHA1 a = 06271f767e0d5671c67e4edeaa2c157cabb66c2b", 2),
            (
                "SHA1(a)= 06271f767e0d5671c67e4edeaa2c157cabb66c2b\nSHA1(a)= 06271f767e0d5671c67e4edeaa2c157cabb66c2b",
                2,
            ),
        ] {
            match Manifest::parse(text.as_bytes()) {
                Err(OvfError::ManifestSyntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn digests() {
        assert_eq!(
            digest_hex(DigestAlgorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest_hex(DigestAlgorithm::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let m = Manifest::parse(b"SHA1(x)= a9993e364706816aba3e25717850c26c9cd0d89d").unwrap();
        assert!(
            m.verify(
                "x",
                DigestAlgorithm::Sha1,
                "a9993e364706816aba3e25717850c26c9cd0d89d"
            )
            .is_ok()
        );
        assert!(matches!(
            m.verify("x", DigestAlgorithm::Sha1, "00"),
            Err(OvfError::DigestMismatch { .. })
        ));
        assert!(matches!(
            m.verify("y", DigestAlgorithm::Sha1, "00"),
            Err(OvfError::NotInManifest { .. })
        ));
    }
}
