//! The store of record: the contract's `Store` trait (re-exported) and its embedded
//! SQLite implementation.

mod sqlite;

pub use ovm_core::store::*;
pub use sqlite::SqliteStore;
