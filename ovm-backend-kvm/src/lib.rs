//! ovm KVM backend: a VMM on /dev/kvm with its own test guest
