//! In-memory Storage Connect plugin.
