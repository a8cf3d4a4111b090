//! CIM properties (the `rasd:`, `vssd:`, `sasd:`, `epasd:` children of items and
//! systems): which names ovm knows, so an unknown one is reported, or refused when
//! required.

use crate::error::{OvfError, Result};
use crate::model::CimProperty;
use crate::ns::NS_CIM_PREFIX;
use crate::xml::XmlElement;

use super::attrs::{opt_bool, text};
use super::reader::Cx;

/// The known property names of the CIM classes OVF uses, in lower case (writers
/// disagree on case).
const CIM_PROPERTIES: &[&str] = &[
    // CIM_ResourceAllocationSettingData
    "address",
    "addressonparent",
    "allocationunits",
    "automaticallocation",
    "automaticdeallocation",
    "caption",
    "changeabletype",
    "configurationname",
    "connection",
    "consumervisibility",
    "description",
    "elementname",
    "generation",
    "hostresource",
    "instanceid",
    "limit",
    "mappingbehavior",
    "otherresourcetype",
    "parent",
    "poolid",
    "reservation",
    "resourcesubtype",
    "resourcetype",
    "virtualquantity",
    "virtualquantityunits",
    "weight",
    "busnumber",
    // CIM_StorageAllocationSettingData
    "access",
    "hostextentname",
    "hostextentnameformat",
    "hostextentnamenamespace",
    "hostextentstartingaddress",
    "hostresourceblocksize",
    "otherhostextentnameformat",
    "otherhostextentnamenamespace",
    "virtualresourceblocksize",
    // CIM_EthernetPortAllocationSettingData
    "allowedpriorities",
    "allowedtoreceivemacaddresses",
    "allowedtoreceivevlans",
    "allowedtotransmitmacaddresses",
    "allowedtotransmitvlans",
    "defaultportvid",
    "defaultpriority",
    "desiredvlanendpointmode",
    "groupid",
    "managerid",
    "networkportprofileid",
    "networkportprofileidtype",
    "otherendpointmode",
    "othernetworkportprofileidtypeinfo",
    "portcorrelationid",
    "portvid",
    "promiscuous",
    "receivebandwidthlimit",
    "receivebandwidthreservation",
    "sourcemacfilteringenabled",
    // CIM_VirtualSystemSettingData
    "virtualsystemidentifier",
    "virtualsystemtype",
    "automaticrecoveryaction",
    "automaticshutdownaction",
    "automaticstartupaction",
    "automaticstartupactiondelay",
    "automaticstartupactionsequencenumber",
    "configurationdataroot",
    "configurationfile",
    "configurationid",
    "creationtime",
    "logdataroot",
    "notes",
    "recoveryfile",
    "snapshotdataroot",
    "suspenddataroot",
    "swapfiledataroot",
];

/// True for an element in any CIM schema namespace.
pub(super) fn is_cim(el: &XmlElement) -> bool {
    el.name
        .ns
        .as_deref()
        .is_some_and(|ns| ns.starts_with(NS_CIM_PREFIX))
}

impl Cx {
    pub(super) fn cim_property(&mut self, el: &XmlElement, ctx: &str) -> Result<CimProperty> {
        let name = el.name.local.clone();
        if !CIM_PROPERTIES.contains(&name.to_ascii_lowercase().as_str()) {
            let display = el.name.to_string();
            if opt_bool(el, "required", &display)? == Some(true) {
                return Err(OvfError::UnknownRequired {
                    element: display,
                    context: ctx.to_owned(),
                });
            }
            self.warn(format!(
                "{display} in {ctx} is not a CIM property ovm knows; kept"
            ));
        }
        Ok(CimProperty {
            ns: el.name.ns.clone().unwrap_or_default(),
            name,
            value: text(el),
            attrs: el.attrs.clone(),
        })
    }
}
