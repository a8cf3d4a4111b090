//! Conformance suites: every backend runs these against itself, so all are held to one
//! contract. They panic with a message naming the broken rule, like assertions in a test.

pub mod hypervisor;
pub mod storage;
