//! Python bindings for ovm.
