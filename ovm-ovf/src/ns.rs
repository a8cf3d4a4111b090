//! The namespaces ovm reads and writes, and which of them are OVF envelopes: the leaf
//! that both the XML tree (prefixes when writing, names when displaying) and the
//! descriptor reader need, so neither has to import the other.

/// OVF 1.x envelope namespace.
pub const NS_OVF1: &str = "http://schemas.dmtf.org/ovf/envelope/1";
/// OVF 2.x envelope namespace.
pub const NS_OVF2: &str = "http://schemas.dmtf.org/ovf/envelope/2";
/// VMware's pre-standard OVF 0.9 namespace.
pub const NS_OVF_VMW_09: &str = "http://www.vmware.com/schema/ovf/1/envelope";
/// Namespace of early DMTF drafts (0.9 / 1.0 preliminary).
pub const NS_OVF_DMTF_DRAFT: &str = "http://schemas.dmtf.org/ovf/1/envelope";
/// CIM ResourceAllocationSettingData.
pub const NS_RASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData";
/// CIM VirtualSystemSettingData.
pub const NS_VSSD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData";
/// CIM StorageAllocationSettingData (OVF 2).
pub const NS_SASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_StorageAllocationSettingData";
/// CIM EthernetPortAllocationSettingData (OVF 2).
pub const NS_EPASD: &str =
    "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_EthernetPortAllocationSettingData";
/// Prefix shared by every CIM schema namespace (some writers append `.xsd` or mangle the
/// rest, so CIM properties are recognised by this prefix).
pub const NS_CIM_PREFIX: &str = "http://schemas.dmtf.org/wbem/wscim/1/";
/// XML Schema instance.
pub const NS_XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The `xml:` namespace.
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// VMware extensions.
pub const NS_VMW: &str = "http://www.vmware.com/schema/ovf";
/// VirtualBox extensions.
pub const NS_VBOX: &str = "http://www.virtualbox.org/ovf/machine";
/// oVirt extensions.
pub const NS_OVIRT: &str = "http://www.ovirt.org/ovf";
/// Oracle VM extensions.
pub const NS_OVM: &str = "http://schemas.oracle.com/ovm/ovf/1";
/// CIM common types.
pub const NS_CIM: &str = "http://schemas.dmtf.org/wbem/wscim/1/common";

/// Conventional prefixes used when writing.
const WELL_KNOWN_PREFIXES: &[(&str, &str)] = &[
    (NS_OVF1, "ovf"),
    (NS_OVF2, "ovf2"),
    (NS_RASD, "rasd"),
    (NS_VSSD, "vssd"),
    (NS_SASD, "sasd"),
    (NS_EPASD, "epasd"),
    (NS_XSI, "xsi"),
    (NS_VMW, "vmw"),
    (NS_VBOX, "vbox"),
    (NS_OVIRT, "ovirt"),
    (NS_OVM, "ovm"),
    (NS_CIM, "cim"),
];

/// The conventional prefix of a well-known namespace.
pub fn well_known_prefix(ns: &str) -> Option<&'static str> {
    WELL_KNOWN_PREFIXES
        .iter()
        .find(|(n, _)| *n == ns)
        .map(|(_, p)| *p)
}

/// True for every OVF envelope namespace ovm reads (0.9, drafts, 1.x with or without the
/// trailing slash, 2.x).
pub fn is_ovf_namespace(ns: &str) -> bool {
    let ns = ns.strip_suffix('/').unwrap_or(ns);
    matches!(ns, NS_OVF1 | NS_OVF2 | NS_OVF_VMW_09 | NS_OVF_DMTF_DRAFT)
}
