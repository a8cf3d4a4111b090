//! Hardware mapping: deployment configurations, allocation-unit spellings, domain types.

use ovm_core::model::DomainType;
use ovm_ovf::mapping::{domain_type_for, map_system};
use ovm_ovf::{Limits, parse};

fn doc(mem_items: &str, system_type: &str) -> String {
    format!(
        r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References/>
  <DeploymentOptionSection><Info>sizes</Info>
    <Configuration ovf:id="small"><Label>Small</Label><Description>s</Description></Configuration>
    <Configuration ovf:id="large" ovf:default="true"><Label>Large</Label><Description>l</Description></Configuration>
  </DeploymentOptionSection>
  <VirtualSystem ovf:id="vm"><Info>x</Info>
    <VirtualHardwareSection><Info>h</Info>
      <System><vssd:VirtualSystemType>{system_type}</vssd:VirtualSystemType></System>
      <Item ovf:configuration="small"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item ovf:configuration="large"><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>8</rasd:VirtualQuantity></Item>
      {mem_items}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>"#
    )
}

#[test]
fn deployment_configurations_select_item_variants() {
    let mem = r#"<Item ovf:configuration="small"><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>512</rasd:VirtualQuantity><rasd:AllocationUnits>MB</rasd:AllocationUnits></Item>
      <Item ovf:configuration="large"><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>16</rasd:VirtualQuantity><rasd:AllocationUnits>byte * 2^30</rasd:AllocationUnits></Item>"#;
    let p = parse(doc(mem, "vmx-13").as_bytes(), &Limits::default()).unwrap();
    let env = &p.envelope;
    let vs = env.content.systems()[0];
    let default = map_system(env, vs, None, &Limits::default()).unwrap();
    assert_eq!((default.spec.vcpus, default.spec.memory_mib), (8, 16 << 10));
    let small = map_system(env, vs, Some("small"), &Limits::default()).unwrap();
    assert_eq!((small.spec.vcpus, small.spec.memory_mib), (1, 512));
    assert_eq!(default.spec.domain_type, DomainType::Hvm);
}

#[test]
fn allocation_unit_spellings_and_missing_units() {
    for (units, qty, mib) in [
        (
            "<rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>",
            300,
            300,
        ),
        (
            "<rasd:AllocationUnits>byte*2^30</rasd:AllocationUnits>",
            2,
            2048,
        ),
        (
            "<rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>",
            64,
            64,
        ),
        ("<rasd:AllocationUnits>MB</rasd:AllocationUnits>", 128, 128),
        ("", 256, 256),
    ] {
        let mem = format!(
            "<Item><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>{qty}</rasd:VirtualQuantity>{units}</Item>"
        );
        let p = parse(doc(&mem, "vmx-07").as_bytes(), &Limits::default()).unwrap();
        let env = &p.envelope;
        let m = map_system(env, env.content.systems()[0], None, &Limits::default()).unwrap();
        assert_eq!(m.spec.memory_mib, mib, "{units}");
    }
}

#[test]
fn oracle_vm_system_types_name_the_domain_type() {
    assert_eq!(
        domain_type_for(Some("DMTF:Oracle:X86:OracleVM_Xen:PVM_Linux")),
        DomainType::Pv
    );
    assert_eq!(
        domain_type_for(Some("DMTF:Oracle:X86:OracleVM_Xen:HVM_Linux")),
        DomainType::Hvm
    );
    assert_eq!(
        domain_type_for(Some("DMTF:Oracle:X86:OracleVM_Xen:PVHVM_Windows")),
        DomainType::PvHvm
    );
    assert_eq!(domain_type_for(Some("vmx-07")), DomainType::Hvm);
    assert_eq!(domain_type_for(Some("virtualbox-2.2")), DomainType::Hvm);
}
