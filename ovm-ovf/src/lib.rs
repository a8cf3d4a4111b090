//! ovm OVF/OVA: descriptors, archives, manifests, import
