//! How callers name objects: by typed id (handles, code that already resolved) or by a key
//! a user typed (a name, an id, a unique id prefix). A key is resolved once, where the call
//! enters the manager; everything inside works with typed ids.

use std::fmt;

use crate::id::{NetworkId, PoolId, RepoId, ServerId, VmId};

/// An object named by a caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ref<I> {
    /// Already resolved.
    Id(I),
    /// As a user names it: name, id or unique id prefix.
    Key(String),
}

/// A VM by id or key.
pub type VmRef = Ref<VmId>;
/// A server by id or key.
pub type ServerRef = Ref<ServerId>;
/// A pool by id or key.
pub type PoolRef = Ref<PoolId>;
/// A repository by id or key.
pub type RepoRef = Ref<RepoId>;
/// A network by id or key.
pub type NetworkRef = Ref<NetworkId>;

impl<I: fmt::Display> fmt::Display for Ref<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Id(id) => id.fmt(f),
            Ref::Key(key) => f.write_str(key),
        }
    }
}

macro_rules! refs_from {
    ($($id:ty),*) => {$(
        impl From<$id> for Ref<$id> {
            fn from(id: $id) -> Self {
                Ref::Id(id)
            }
        }
        impl From<&$id> for Ref<$id> {
            fn from(id: &$id) -> Self {
                Ref::Id(*id)
            }
        }
        impl From<&str> for Ref<$id> {
            fn from(key: &str) -> Self {
                Ref::Key(key.to_string())
            }
        }
        impl From<String> for Ref<$id> {
            fn from(key: String) -> Self {
                Ref::Key(key)
            }
        }
        impl From<&String> for Ref<$id> {
            fn from(key: &String) -> Self {
                Ref::Key(key.clone())
            }
        }
    )*};
}

refs_from!(VmId, ServerId, PoolId, RepoId, NetworkId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_typed_and_keys_stay_as_typed() {
        let id = VmId::new();
        assert_eq!(VmRef::from(id), Ref::Id(id));
        assert_eq!(VmRef::from("web"), Ref::Key("web".into()));
        assert_eq!(VmRef::from(id).to_string(), id.to_string());
        assert_eq!(ServerRef::from(String::from("s1")).to_string(), "s1");
    }
}
