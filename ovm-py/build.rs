//! Lets `cargo test` binaries, which embed Python, find libpython at run time (an rpath to
//! its directory). Extension modules built by maturin do not link libpython and get none.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
