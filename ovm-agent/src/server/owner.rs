//! Ownership, as in Oracle VM: a manager takes an agent with the agent password; from then
//! on only that manager's client certificate is let in. The password is kept as an Argon2
//! hash only; wrong guesses are slowed down.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};
use ovm_core::sync::lock;

use crate::protocol::{Owner, WireError};
use crate::tls::Fingerprint;
use ovm_core::files::write_private;

/// Longest wait imposed after wrong passwords.
const MAX_PENALTY: Duration = Duration::from_secs(30);

/// Who owns the agent, and the password that lets a manager take it.
pub struct Ownership {
    owner_path: PathBuf,
    password_path: PathBuf,
    owner: Mutex<Option<Owner>>,
    throttle: Mutex<Throttle>,
}

#[derive(Default)]
struct Throttle {
    failures: u32,
    until: Option<Instant>,
}

impl Ownership {
    /// The ownership state kept in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let owner_path = dir.join("owner.json");
        let owner = match std::fs::read(&owner_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Ownership {
            owner_path,
            password_path: dir.join("password.argon2"),
            owner: Mutex::new(owner),
            throttle: Mutex::new(Throttle::default()),
        })
    }

    /// Sets the agent password (stored hashed), e.g. at `ovm-agent init`.
    pub fn set_password(&self, password: &str) -> std::io::Result<()> {
        if password.len() < 8 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the agent password must have at least 8 characters",
            ));
        }
        // 16 random bytes (a v4 UUID is drawn from the OS's generator).
        let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .to_string();
        write_private(&self.password_path, hash.as_bytes())
    }

    /// True once a password is set.
    pub fn has_password(&self) -> bool {
        self.password_path.exists()
    }

    /// The owner, if any.
    pub fn owner(&self) -> Option<Owner> {
        lock(&self.owner).clone()
    }

    /// Lets `peer` in if it is the owner; otherwise says why not.
    pub fn check(&self, peer: Option<Fingerprint>) -> Result<(), WireError> {
        let Some(peer) = peer else {
            return Err(refused(
                401,
                "no client certificate: the agent serves only the manager that owns it".into(),
            ));
        };
        match &*lock(&self.owner) {
            Some(o) if o.fingerprint == peer.to_string() => Ok(()),
            Some(o) => Err(refused(
                403,
                format!(
                    "this agent is owned by manager {} ({}); it must release it first",
                    o.name, o.fingerprint
                ),
            )),
            None => Err(refused(
                403,
                "this agent has no owner: take ownership first (POST /v1/ownership)".into(),
            )),
        }
    }

    /// Makes `peer` the owner, given the right password. Taking again by the owner is a
    /// no-op; another manager is refused while one owns the agent.
    pub async fn take(
        &self,
        peer: Option<Fingerprint>,
        manager: &str,
        password: &str,
    ) -> Result<Owner, WireError> {
        let Some(peer) = peer else {
            return Err(refused(
                401,
                "taking ownership needs a client certificate (the manager's identity)".into(),
            ));
        };
        if manager.trim().is_empty() || manager.len() > 128 {
            return Err(refused(
                400,
                "the manager name must have 1 to 128 characters".into(),
            ));
        }
        self.verify_password(password).await?;
        let mut owner = lock(&self.owner);
        match &*owner {
            Some(o) if o.fingerprint != peer.to_string() => Err(refused(
                403,
                format!(
                    "this agent is owned by manager {} ({}); it must release it first",
                    o.name, o.fingerprint
                ),
            )),
            _ => {
                let new = Owner {
                    name: manager.trim().to_string(),
                    fingerprint: peer.to_string(),
                };
                let bytes = serde_json::to_vec_pretty(&new).unwrap_or_default();
                write_private(&self.owner_path, &bytes)
                    .map_err(|e| refused(500, format!("recording the owner: {e}")))?;
                *owner = Some(new.clone());
                Ok(new)
            }
        }
    }

    /// Releases the agent: by its owner only.
    pub fn release(&self, peer: Option<Fingerprint>) -> Result<(), WireError> {
        self.check(peer)?;
        self.reset()
            .map_err(|e| refused(500, format!("releasing ownership: {e}")))
    }

    /// Forgets the owner (the local `ovm-agent reset-ownership`, or a release).
    pub fn reset(&self) -> std::io::Result<()> {
        let mut owner = lock(&self.owner);
        match std::fs::remove_file(&self.owner_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        *owner = None;
        Ok(())
    }

    async fn verify_password(&self, password: &str) -> Result<(), WireError> {
        let wait = {
            let t = lock(&self.throttle);
            t.until.map(|u| u.saturating_duration_since(Instant::now()))
        };
        if let Some(wait) = wait.filter(|w| !w.is_zero()) {
            return Err(refused(
                429,
                format!(
                    "too many wrong passwords: try again in {} s",
                    wait.as_secs().max(1)
                ),
            ));
        }
        let stored = std::fs::read_to_string(&self.password_path).map_err(|_| {
            refused(
                403,
                "this agent has no password set (run `ovm-agent init` on the server)".into(),
            )
        })?;
        let given = password.to_string();
        // Argon2 is slow on purpose: off the async threads.
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(stored.trim())
                .map(|h| {
                    Argon2::default()
                        .verify_password(given.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let mut t = lock(&self.throttle);
        if ok {
            *t = Throttle::default();
            Ok(())
        } else {
            t.failures += 1;
            let penalty =
                Duration::from_millis(250 * 2u64.pow(t.failures.min(10))).min(MAX_PENALTY);
            t.until = Some(Instant::now() + penalty);
            Err(refused(401, "wrong agent password".into()))
        }
    }
}

fn refused(status: u16, message: String) -> WireError {
    WireError::Refused { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Identity;

    #[tokio::test]
    async fn only_the_owner_gets_in_and_wrong_passwords_slow_down() {
        let dir = tempfile::tempdir().unwrap();
        let o = Ownership::open(dir.path()).unwrap();
        let (a, b) = (
            Identity::generate("a").unwrap().fingerprint(),
            Identity::generate("b").unwrap().fingerprint(),
        );
        assert!(
            o.take(Some(a), "m1", "whatever1").await.is_err(),
            "no password set"
        );
        o.set_password("correct horse").unwrap();
        assert!(
            !std::fs::read_to_string(dir.path().join("password.argon2"))
                .unwrap()
                .contains("correct horse")
        );
        assert!(matches!(
            o.check(Some(a)),
            Err(WireError::Refused { status: 403, .. })
        ));
        assert!(matches!(
            o.check(None),
            Err(WireError::Refused { status: 401, .. })
        ));
        let wrong = o.take(Some(a), "m1", "wrong!!!").await.unwrap_err();
        assert!(matches!(wrong, WireError::Refused { status: 401, .. }));
        // Throttled now, even with the right password.
        let slow = o.take(Some(a), "m1", "correct horse").await.unwrap_err();
        assert!(
            matches!(slow, WireError::Refused { status: 429, .. }),
            "{slow:?}"
        );
        lock(&o.throttle).until = None;
        o.take(Some(a), "m1", "correct horse").await.unwrap();
        o.check(Some(a)).unwrap();
        let other = o.take(Some(b), "m2", "correct horse").await.unwrap_err();
        match other {
            WireError::Refused {
                status: 403,
                message,
            } => assert!(message.contains("m1"), "{message}"),
            e => panic!("{e:?}"),
        }
        // It survives a restart of the agent.
        let o = Ownership::open(dir.path()).unwrap();
        o.check(Some(a)).unwrap();
        assert!(o.release(Some(b)).is_err());
        o.release(Some(a)).unwrap();
        o.take(Some(b), "m2", "correct horse").await.unwrap();
        o.check(Some(b)).unwrap();
    }
}
