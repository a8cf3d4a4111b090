//! Typed identifiers: a `VmId` can never be passed where a `ServerId` is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Error;

macro_rules! typed_id {
    ($(#[$doc:meta] $name:ident = $kind:literal;)*) => {$(
        #[$doc]
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The kind of object this id names, as used in errors and the store.
            pub const KIND: &'static str = $kind;

            /// A new random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// A deterministic id derived from a number (tests and simulations).
            pub fn from_u128(n: u128) -> Self {
                Self(Uuid::from_u128(n))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", $kind, self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|e| Error::invalid(concat!($kind, " id"), format!("{s:?}: {e}")))
            }
        }
    )*};
}

typed_id! {
    /// Identifies a server pool.
    PoolId = "pool";
    /// Identifies a server (a hypervisor host).
    ServerId = "server";
    /// Identifies a virtual machine.
    VmId = "vm";
    /// Identifies a storage repository.
    RepoId = "repository";
    /// Identifies a volume (a virtual disk) in a repository.
    VolumeId = "volume";
    /// Identifies a network.
    NetworkId = "network";
    /// Identifies a template.
    TemplateId = "template";
    /// Identifies an assembly (a multi-VM package).
    AssemblyId = "assembly";
    /// Identifies a job.
    JobId = "job";
    /// Identifies a running manager (a process that opened the store).
    InstanceId = "manager";
}

/// A point in time, in milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(d.as_millis() as u64)
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> u64 {
        self.0
    }

    /// This time plus a duration.
    pub fn plus(self, d: std::time::Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.0);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
