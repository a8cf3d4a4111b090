//! ovm Storage Connect plugins: file server and more
