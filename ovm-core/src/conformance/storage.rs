//! The `StoragePlugin` conformance suite.
