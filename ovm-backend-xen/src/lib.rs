//! ovm Xen backend: drives the xl toolstack from dom0
