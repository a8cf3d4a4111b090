//! The descriptor model: what an OVF envelope says, independent of the dialect it was
//! written in. Elements ovm does not model are kept (as [`XmlElement`]) so that a
//! descriptor survives a read/write round trip.

use crate::xml::{XmlAttr, XmlElement};

/// The OVF version of an envelope (from its namespace, not its `ovf:version` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OvfVersion {
    /// VMware's pre-standard 0.9 or an early DMTF draft.
    V0_9,
    /// OVF 1.x (DSP0243 1.0 / 1.1).
    V1,
    /// OVF 2.x (DSP0243 2.0 / 2.1).
    V2,
}

impl OvfVersion {
    /// `0.9`, `1.x` or `2.x`.
    pub fn as_str(self) -> &'static str {
        match self {
            OvfVersion::V0_9 => "0.9",
            OvfVersion::V1 => "1.x",
            OvfVersion::V2 => "2.x",
        }
    }
}

/// Attributes and elements ovm does not model, kept for round trips.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extensions {
    /// Extra attributes (e.g. `vmw:buildId`, `vmw:osType`).
    pub attrs: Vec<XmlAttr>,
    /// Extra child elements (e.g. `vmw:Config`, `vbox:Machine`, `ovm:ScalingSection`).
    pub elements: Vec<XmlElement>,
}

impl Extensions {
    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty() && self.elements.is_empty()
    }
}

/// An OVF descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The OVF version read.
    pub version: OvfVersion,
    /// `xml:lang` of the envelope.
    pub lang: Option<String>,
    /// Files of the package.
    pub references: Vec<FileReference>,
    /// Virtual disks.
    pub disk_section: Option<DiskSection>,
    /// Logical networks.
    pub network_section: Option<NetworkSection>,
    /// Deployment configurations.
    pub deployment_options: Option<DeploymentOptionSection>,
    /// The virtual system or collection.
    pub content: Content,
    /// Unmodelled attributes and sections of the envelope.
    pub extra: Extensions,
}

/// A file of the package (`References/File`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReference {
    /// `ovf:id`.
    pub id: String,
    /// `ovf:href`: a relative path inside the package.
    pub href: String,
    /// `ovf:size` in bytes (of the stored, possibly compressed, file).
    pub size: Option<u64>,
    /// `ovf:compression` (`gzip`, `identity`).
    pub compression: Option<String>,
    /// `ovf:chunkSize`: the file is stored as `href.000000000`, `href.000000001`, ...
    pub chunk_size: Option<u64>,
    /// Other attributes.
    pub extra_attrs: Vec<XmlAttr>,
}

impl FileReference {
    /// True when stored gzip-compressed.
    pub fn is_gzip(&self) -> bool {
        self.compression.as_deref().map(str::trim) == Some("gzip")
    }
}

/// `DiskSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// The disks.
    pub disks: Vec<VirtualDisk>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// A disk's capacity as written: a number (in `capacity_units`) or a property reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capacity {
    /// A number of allocation units.
    Value(u64),
    /// `${key}`: the value of a ProductSection property.
    Property(String),
}

/// A virtual disk (`DiskSection/Disk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualDisk {
    /// `ovf:diskId`.
    pub disk_id: String,
    /// `ovf:fileRef`; absent for a blank disk.
    pub file_ref: Option<String>,
    /// `ovf:capacity`.
    pub capacity: Capacity,
    /// `ovf:capacityAllocationUnits` as written (default: bytes).
    pub capacity_units: Option<String>,
    /// `ovf:populatedSize`.
    pub populated_size: Option<u64>,
    /// `ovf:format` URI.
    pub format: Option<String>,
    /// `ovf:parentRef`: a delta disk on top of another.
    pub parent_ref: Option<String>,
    /// Other attributes (e.g. `vbox:uuid`).
    pub extra_attrs: Vec<XmlAttr>,
}

/// `NetworkSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// The networks.
    pub networks: Vec<NetworkDef>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// A logical network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkDef {
    /// `ovf:name`.
    pub name: String,
    /// `Description`.
    pub description: Option<String>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// `DeploymentOptionSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentOptionSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// The configurations.
    pub configurations: Vec<DeploymentConfiguration>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// One deployment configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentConfiguration {
    /// `ovf:id`, matched by items' `ovf:configuration`.
    pub id: String,
    /// `ovf:default`.
    pub default: bool,
    /// `Label`.
    pub label: String,
    /// `Description`.
    pub description: String,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// The content of an envelope or a collection member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// One virtual machine.
    System(Box<VirtualSystem>),
    /// Several, with startup order.
    Collection(Box<VirtualSystemCollection>),
}

impl Content {
    /// `ovf:id`.
    pub fn id(&self) -> &str {
        match self {
            Content::System(s) => &s.id,
            Content::Collection(c) => &c.id,
        }
    }

    /// Every VirtualSystem, depth first.
    pub fn systems(&self) -> Vec<&VirtualSystem> {
        let mut out = Vec::new();
        fn walk<'a>(c: &'a Content, out: &mut Vec<&'a VirtualSystem>) {
            match c {
                Content::System(s) => out.push(s),
                Content::Collection(col) => {
                    for m in &col.members {
                        walk(m, out);
                    }
                }
            }
        }
        walk(self, &mut out);
        out
    }
}

/// `VirtualSystem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualSystem {
    /// `ovf:id`.
    pub id: String,
    /// `Info`.
    pub info: String,
    /// `Name`.
    pub name: Option<String>,
    /// `OperatingSystemSection`.
    pub operating_system: Option<OperatingSystemSection>,
    /// `VirtualHardwareSection`s (several when several hardware families are offered).
    pub hardware: Vec<VirtualHardwareSection>,
    /// `ProductSection`s.
    pub products: Vec<ProductSection>,
    /// `EulaSection`s.
    pub eulas: Vec<EulaSection>,
    /// `AnnotationSection`.
    pub annotation: Option<AnnotationSection>,
    /// `InstallSection`.
    pub install: Option<InstallSection>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// `VirtualSystemCollection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualSystemCollection {
    /// `ovf:id`.
    pub id: String,
    /// `Info`.
    pub info: String,
    /// `Name`.
    pub name: Option<String>,
    /// `StartupSection`.
    pub startup: Option<StartupSection>,
    /// `ProductSection`s.
    pub products: Vec<ProductSection>,
    /// `EulaSection`s.
    pub eulas: Vec<EulaSection>,
    /// `AnnotationSection`.
    pub annotation: Option<AnnotationSection>,
    /// `ResourceAllocationSection`.
    pub resource_allocation: Option<ResourceAllocationSection>,
    /// Members: systems and nested collections.
    pub members: Vec<Content>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// `OperatingSystemSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatingSystemSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// `ovf:id`: the CIM operating system type number (oVirt writes other text here).
    pub id: Option<String>,
    /// `ovf:version`.
    pub version: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// Unmodelled content (e.g. `vmw:osType`).
    pub extra: Extensions,
}

/// `VirtualHardwareSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualHardwareSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// `ovf:id`.
    pub id: Option<String>,
    /// `ovf:transport` (`iso`, `com.vmware.guestInfo`).
    pub transport: Option<String>,
    /// `System`: the virtual system settings (`vssd:` properties).
    pub system: Option<SystemSettings>,
    /// Items.
    pub items: Vec<Item>,
    /// Unmodelled content (e.g. `vmw:Config`).
    pub extra: Extensions,
}

impl VirtualHardwareSection {
    /// `vssd:VirtualSystemType`, e.g. `vmx-07` or `DMTF:Oracle:X86:OracleVM_Xen:HVM_Linux`.
    pub fn virtual_system_type(&self) -> Option<&str> {
        self.system
            .as_ref()?
            .properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case("VirtualSystemType"))
            .map(|p| p.value.as_str())
    }
}

/// `VirtualHardwareSection/System`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemSettings {
    /// `vssd:` properties in document order.
    pub properties: Vec<CimProperty>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// Which element an item was written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// `Item` (RASD).
    Item,
    /// `StorageItem` (OVF 2, SASD).
    StorageItem,
    /// `EthernetPortItem` (OVF 2, EPASD).
    EthernetPortItem,
}

impl ItemKind {
    /// The element's local name.
    pub fn element_name(self) -> &'static str {
        match self {
            ItemKind::Item => "Item",
            ItemKind::StorageItem => "StorageItem",
            ItemKind::EthernetPortItem => "EthernetPortItem",
        }
    }
}

/// A CIM property (`rasd:ResourceType`, `vssd:VirtualSystemType`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CimProperty {
    /// Its namespace as written.
    pub ns: String,
    /// Its local name as written (`InstanceID`, or `InstanceId` in 0.9).
    pub name: String,
    /// Its text, trimmed.
    pub value: String,
    /// Its attributes (`ovf:msgid`, `xsi:nil`, ...).
    pub attrs: Vec<XmlAttr>,
}

/// A hardware item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Element kind.
    pub kind: ItemKind,
    /// `ovf:required` (default true).
    pub required: bool,
    /// `ovf:configuration`: space-separated deployment configurations it applies to.
    pub configuration: Option<String>,
    /// `ovf:bound` (`min`, `max`, `normal`).
    pub bound: Option<String>,
    /// CIM properties in document order.
    pub properties: Vec<CimProperty>,
    /// Unmodelled content (e.g. `vmw:Config`).
    pub extra: Extensions,
}

/// CIM resource types ovm knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// 1: other.
    Other,
    /// 3: processor.
    Processor,
    /// 4: memory.
    Memory,
    /// 5: IDE controller.
    IdeController,
    /// 6: parallel SCSI HBA.
    ScsiController,
    /// 7: Fibre Channel HBA.
    FcController,
    /// 10: Ethernet adapter.
    Ethernet,
    /// 14: floppy drive.
    Floppy,
    /// 15: CD drive.
    CdDrive,
    /// 16: DVD drive.
    DvdDrive,
    /// 17: disk drive.
    Disk,
    /// 20: other storage device (SATA/AHCI controllers are written so).
    OtherStorage,
    /// 21: serial port.
    SerialPort,
    /// 22: parallel port.
    ParallelPort,
    /// 23: USB controller.
    UsbController,
    /// 24: graphics controller.
    Graphics,
    /// 35: sound card.
    SoundCard,
    /// Any other number.
    Unknown(u32),
}

impl ResourceKind {
    /// From the CIM number.
    pub fn from_number(n: u32) -> Self {
        match n {
            1 => ResourceKind::Other,
            3 => ResourceKind::Processor,
            4 => ResourceKind::Memory,
            5 => ResourceKind::IdeController,
            6 => ResourceKind::ScsiController,
            7 => ResourceKind::FcController,
            10 => ResourceKind::Ethernet,
            14 => ResourceKind::Floppy,
            15 => ResourceKind::CdDrive,
            16 => ResourceKind::DvdDrive,
            17 => ResourceKind::Disk,
            20 => ResourceKind::OtherStorage,
            21 => ResourceKind::SerialPort,
            22 => ResourceKind::ParallelPort,
            23 => ResourceKind::UsbController,
            24 => ResourceKind::Graphics,
            35 => ResourceKind::SoundCard,
            n => ResourceKind::Unknown(n),
        }
    }
}

impl Item {
    /// The first property of that name (case-insensitive: 0.9 writes `InstanceId`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
    }

    /// Every value of a multi-valued property (`HostResource`, `Connection`).
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.properties
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| p.value.as_str())
            .collect()
    }

    /// `ResourceType`, if present and numeric.
    pub fn resource_kind(&self) -> Option<ResourceKind> {
        self.get("ResourceType")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .map(ResourceKind::from_number)
    }

    /// `InstanceID`.
    pub fn instance_id(&self) -> Option<&str> {
        self.get("InstanceID")
    }

    /// `ElementName`, else `Caption`, else the instance id.
    pub fn label(&self) -> String {
        self.get("ElementName")
            .or_else(|| self.get("Caption"))
            .or_else(|| self.instance_id())
            .unwrap_or("?")
            .to_owned()
    }

    /// True when the item applies to deployment configuration `config` (items without
    /// `ovf:configuration` apply to all).
    pub fn applies_to(&self, config: Option<&str>) -> bool {
        match (&self.configuration, config) {
            (None, _) => true,
            (Some(list), Some(c)) => list.split_whitespace().any(|x| x == c),
            (Some(_), None) => false,
        }
    }
}

/// `ProductSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// `ovf:class`: prefix of property keys in the environment.
    pub class: Option<String>,
    /// `ovf:instance`.
    pub instance: Option<String>,
    /// `Product`.
    pub product: Option<String>,
    /// `Vendor`.
    pub vendor: Option<String>,
    /// `Version`.
    pub version: Option<String>,
    /// `FullVersion`.
    pub full_version: Option<String>,
    /// `ProductUrl`.
    pub product_url: Option<String>,
    /// `VendorUrl`.
    pub vendor_url: Option<String>,
    /// `AppUrl`.
    pub app_url: Option<String>,
    /// Categories and properties, in order.
    pub entries: Vec<ProductEntry>,
    /// Unmodelled content (e.g. `Icon`).
    pub extra: Extensions,
}

impl ProductSection {
    /// The properties.
    pub fn properties(&self) -> impl Iterator<Item = &Property> {
        self.entries.iter().filter_map(|e| match e {
            ProductEntry::Property(p) => Some(p),
            ProductEntry::Category(_) => None,
        })
    }
}

/// An entry of a ProductSection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductEntry {
    /// `Category`: a heading for the properties after it.
    Category(String),
    /// `Property`.
    Property(Property),
}

/// A ProductSection property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// `ovf:key`.
    pub key: String,
    /// `ovf:type` (`string`, `int`, `boolean`, ...).
    pub type_: String,
    /// `ovf:qualifiers`.
    pub qualifiers: Option<String>,
    /// `ovf:userConfigurable`.
    pub user_configurable: Option<bool>,
    /// `ovf:value`: the default.
    pub default: Option<String>,
    /// `ovf:password`.
    pub password: Option<bool>,
    /// `Label`.
    pub label: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `Value` elements (per configuration).
    pub values: Vec<PropertyValue>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// A `Property/Value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyValue {
    /// `ovf:value`.
    pub value: String,
    /// `ovf:configuration`.
    pub configuration: Option<String>,
}

/// `EulaSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EulaSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// `License`.
    pub license: String,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// `AnnotationSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnotationSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// `Annotation`.
    pub annotation: String,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// `InstallSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// `ovf:initialBootStopDelay`, seconds.
    pub initial_boot_stop_delay: Option<u32>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// `StartupSection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// Entries.
    pub items: Vec<StartupItem>,
    /// Unmodelled content.
    pub extra: Extensions,
}

/// A `StartupSection/Item`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupItem {
    /// `ovf:id` of the member.
    pub id: String,
    /// `ovf:order`: lower starts first; equal orders start together.
    pub order: Option<u32>,
    /// `ovf:startDelay`, seconds.
    pub start_delay: Option<u32>,
    /// `ovf:waitingForGuest`.
    pub waiting_for_guest: Option<bool>,
    /// `ovf:stopDelay`, seconds.
    pub stop_delay: Option<u32>,
    /// `ovf:startAction` (`powerOn`, `none`).
    pub start_action: Option<String>,
    /// `ovf:stopAction` (`powerOff`, `guestShutdown`, `none`).
    pub stop_action: Option<String>,
    /// Other attributes.
    pub extra_attrs: Vec<XmlAttr>,
}

/// `ResourceAllocationSection` (of a collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceAllocationSection {
    /// `ovf:required`.
    pub required: bool,
    /// `Info`.
    pub info: String,
    /// Items.
    pub items: Vec<Item>,
    /// Unmodelled content.
    pub extra: Extensions,
}

impl Envelope {
    /// The file reference with that id.
    pub fn file(&self, id: &str) -> Option<&FileReference> {
        self.references.iter().find(|f| f.id == id)
    }

    /// The disk with that id.
    pub fn disk(&self, id: &str) -> Option<&VirtualDisk> {
        self.disk_section
            .as_ref()?
            .disks
            .iter()
            .find(|d| d.disk_id == id)
    }

    /// Every ProductSection property, across systems and collections.
    pub fn all_properties(&self) -> Vec<&Property> {
        let mut out = Vec::new();
        fn walk<'a>(c: &'a Content, out: &mut Vec<&'a Property>) {
            match c {
                Content::System(s) => {
                    for p in &s.products {
                        out.extend(p.properties());
                    }
                }
                Content::Collection(col) => {
                    for p in &col.products {
                        out.extend(p.properties());
                    }
                    for m in &col.members {
                        walk(m, out);
                    }
                }
            }
        }
        walk(&self.content, &mut out);
        out
    }

    /// The default deployment configuration: the one marked default, else the first.
    pub fn default_configuration(&self) -> Option<&str> {
        let opts = self.deployment_options.as_ref()?;
        opts.configurations
            .iter()
            .find(|c| c.default)
            .or_else(|| opts.configurations.first())
            .map(|c| c.id.as_str())
    }
}
