//! `VmConfig` → an xl domain configuration file (xl.cfg(5)).
//!
//! Every user-controlled value (name, paths, command line) is written as a double-quoted
//! xl string with `\` and `"` escaped; control characters (newlines above all) are refused,
//! so no value can end its line and start another. Values that live inside xl's
//! comma-separated device specs (vdev, bridge, vif name, MAC) are checked against strict
//! alphabets, and the one free-form part of a disk spec, its path, goes last as
//! `target=`, which xl reads to the end of the string.

use std::fmt::Write as _;
use std::path::Path;

use ovm_core::hypervisor::{DiskAttachment, NicAttachment};
use ovm_core::model::{BootSource, DomainType, VolumeFormat};
use ovm_core::{Error, Result, VmConfig, VolumeAccess};
use serde::{Deserialize, Serialize};

use crate::error::BACKEND;

/// What Xen does with a domain when its guest powers off, reboots or crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LifecycleAction {
    /// Destroy the domain.
    Destroy,
    /// Destroy it and create it again with the same configuration.
    Restart,
    /// Rename the old domain and create a new one.
    RenameRestart,
    /// Keep the dead domain (its state shows `s` or `c`) until destroyed: lets ovm see
    /// a crash instead of a vanished domain.
    Preserve,
    /// Dump core, then destroy.
    CoredumpDestroy,
    /// Dump core, then restart.
    CoredumpRestart,
}

impl LifecycleAction {
    /// The xl.cfg spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Destroy => "destroy",
            LifecycleAction::Restart => "restart",
            LifecycleAction::RenameRestart => "rename-restart",
            LifecycleAction::Preserve => "preserve",
            LifecycleAction::CoredumpDestroy => "coredump-destroy",
            LifecycleAction::CoredumpRestart => "coredump-restart",
        }
    }
}

/// `on_poweroff`, `on_reboot`, `on_crash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleActions {
    /// When the guest powers off.
    pub on_poweroff: LifecycleAction,
    /// When the guest reboots.
    pub on_reboot: LifecycleAction,
    /// When the guest crashes.
    pub on_crash: LifecycleAction,
}

impl Default for LifecycleActions {
    /// Power-off ends the domain, reboot restarts it, a crash is kept so that ovm reports
    /// `Crashed` (HA acts on it) rather than a silent stop.
    fn default() -> Self {
        LifecycleActions {
            on_poweroff: LifecycleAction::Destroy,
            on_reboot: LifecycleAction::Restart,
            on_crash: LifecycleAction::Preserve,
        }
    }
}

/// Host-wide choices that shape every generated configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigOptions {
    /// Lifecycle actions.
    pub lifecycle: LifecycleActions,
    /// Bootloader run in dom0 for PV guests that boot from disk.
    pub pv_bootloader: String,
    /// Firmware for PVH guests that boot from disk.
    pub pvh_firmware: String,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        ConfigOptions {
            lifecycle: LifecycleActions::default(),
            pv_bootloader: "pygrub".into(),
            pvh_firmware: "pvgrub64".into(),
        }
    }
}

/// Longest domain name accepted: leaves room for xenconsoled's `guest-NAME.log` and xl's
/// `NAME--migratedaway` within a 255-byte file or domain name.
pub const MAX_DOMAIN_NAME: usize = 200;

/// Checks that `name` can be a Xen domain name that `xl` reads back as the same domain.
pub fn validate_domain_name(name: &str) -> Result<()> {
    const FIELD: &str = "vm.name";
    ovm_core::model::validate_name(FIELD, name)?;
    let reason = if name.len() > MAX_DOMAIN_NAME {
        format!("is longer than {MAX_DOMAIN_NAME} bytes")
    } else if name.bytes().all(|b| b.is_ascii_digit()) {
        "is all digits, which xl reads as a domain id".into()
    } else if name.starts_with('-') {
        "starts with '-', which xl reads as an option".into()
    } else if name.trim() != name {
        "has leading or trailing whitespace".into()
    } else if name == "Domain-0" {
        "is the name of dom0".into()
    } else if name.ends_with("--incoming") || name.ends_with("--migratedaway") {
        "ends like the temporary names xl uses during migration".into()
    } else {
        return Ok(());
    };
    Err(Error::invalid(FIELD, format!("{name:?} {reason}")))
}

/// `value` as a double-quoted xl string; refuses control characters.
pub fn quote(field: &str, value: &str) -> Result<String> {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                return Err(Error::invalid(
                    field,
                    format!(
                        "{value:?} contains the control character U+{:04X}",
                        c as u32
                    ),
                ));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

fn path_str<'a>(field: &str, path: &'a Path) -> Result<&'a str> {
    let s = path
        .to_str()
        .ok_or_else(|| Error::invalid(field, format!("{path:?} is not UTF-8")))?;
    if !path.is_absolute() {
        return Err(Error::invalid(
            field,
            format!(
                "{s:?} is not an absolute path (xl would resolve it against its own working directory)"
            ),
        ));
    }
    Ok(s)
}

/// The xl `type` of a domain type: PVHVM is an HVM domain whose guest uses PV drivers.
pub fn xl_type(domain_type: DomainType) -> &'static str {
    match domain_type {
        DomainType::Pv => "pv",
        DomainType::Hvm | DomainType::PvHvm => "hvm",
        DomainType::Pvh => "pvh",
    }
}

/// The default guest device of the `index`-th disk: xvda, xvdb, ..., xvdz, xvdaa, ...
pub fn default_vdev(index: usize) -> String {
    let mut letters = Vec::new();
    let mut n = index;
    loop {
        letters.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    letters.reverse();
    format!("xvd{}", String::from_utf8_lossy(&letters))
}

/// Checks a guest device name as xl's disk spec knows them: `xvdX`, `hdX`, `sdX`
/// (lowercase letters, then an optional partition number) or `dN` / `dNpM`.
pub fn validate_vdev(field: &str, vdev: &str) -> Result<()> {
    let letters_then_digits = |rest: &str| {
        let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
        !letters.is_empty() && letters.chars().all(|c| c.is_ascii_lowercase())
    };
    let numbered = |rest: &str| {
        let (disk, part) = match rest.split_once('p') {
            Some((d, p)) => (d, Some(p)),
            None => (rest, None),
        };
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
        digits(disk) && part.is_none_or(digits)
    };
    let ok = vdev.len() <= 16
        && if let Some(rest) = vdev.strip_prefix("xvd") {
            letters_then_digits(rest)
        } else if let Some(rest) = vdev.strip_prefix("hd").or_else(|| vdev.strip_prefix("sd")) {
            letters_then_digits(rest)
        } else if let Some(rest) = vdev.strip_prefix('d') {
            numbered(rest)
        } else {
            false
        };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{vdev:?} is not a Xen virtual device name like xvda, hda, sda or d0p1"),
        ))
    }
}

/// Checks a Linux interface name (bridge, vif): 1..=15 bytes of `[A-Za-z0-9_.-]`.
pub fn validate_ifname(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("{name:?} is not an interface name of 1 to 15 characters from [A-Za-z0-9_.-]"),
        ))
    }
}

fn validate_mac(field: &str, mac: &str) -> Result<String> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(mac.to_ascii_lowercase())
    } else {
        Err(Error::invalid(
            field,
            format!("{mac:?} is not a MAC address like 00:16:3e:12:34:56"),
        ))
    }
}

fn disk_spec(
    index: usize,
    disk: &DiskAttachment,
    spec_device: Option<&str>,
    domain_type: DomainType,
) -> Result<String> {
    let field = format!("vm.disks[{index}]");
    let (path, format) = match &disk.access {
        VolumeAccess::Path { path, format } => (path, *format),
        VolumeAccess::Nbd { .. } => {
            return Err(Error::unsupported(
                format!("NBD volumes ({field}): attach the export as a block device in dom0 first"),
                BACKEND,
            ));
        }
        VolumeAccess::Simulated { .. } => {
            return Err(Error::unsupported(
                format!("simulated volumes ({field})"),
                BACKEND,
            ));
        }
    };
    let (xl_format, cdrom) = match format {
        VolumeFormat::Raw => ("raw", false),
        VolumeFormat::Qcow2 => ("qcow2", false),
        VolumeFormat::Iso => ("raw", true),
        VolumeFormat::Vmdk => {
            return Err(Error::unsupported(
                format!("VMDK disks ({field}): xl reads raw and qcow2; convert the volume first"),
                BACKEND,
            ));
        }
    };
    let vdev = disk
        .device
        .clone()
        .or_else(|| spec_device.map(str::to_string))
        .unwrap_or_else(|| default_vdev(index));
    validate_vdev(&format!("{field}.device"), &vdev)?;
    let target = path_str(&format!("{field}.path"), path)?;
    let read_only = disk.read_only || cdrom;
    let mut spec = format!(
        "format={xl_format}, vdev={vdev}, access={}",
        if read_only { "ro" } else { "rw" }
    );
    if cdrom && matches!(domain_type, DomainType::Hvm | DomainType::PvHvm) {
        spec.push_str(", devtype=cdrom");
    }
    // `target=` must be last: xl takes the rest of the spec, commas included, as the path.
    let _ = write!(spec, ", target={target}");
    quote(&format!("{field}.path"), &spec)
}

fn vif_spec(index: usize, nic: &NicAttachment, domain_type: DomainType) -> Result<String> {
    let field = format!("vm.nics[{index}]");
    let mac = validate_mac(&format!("{field}.mac"), &nic.mac)?;
    validate_ifname(&format!("{field}.bridge"), &nic.bridge)?;
    let mut spec = format!("mac={mac}, bridge={}", nic.bridge);
    if let Some(tap) = &nic.tap {
        validate_ifname(&format!("{field}.tap"), tap)?;
        let _ = write!(spec, ", vifname={tap}");
    }
    if domain_type == DomainType::Hvm {
        // Plain HVM guests have no PV drivers: give them an emulated NIC they know.
        spec.push_str(", type=ioemu, model=e1000");
    }
    quote(&field, &spec)
}

/// Renders the xl domain configuration of `config`.
///
/// Fails with `InvalidSpec` naming the field for values that cannot be written safely and
/// `Unsupported` for what Xen cannot do here (the bundled test guest, NBD or VMDK disks).
/// Whether the host can run the domain type is the backend's check, not this function's.
pub fn render(config: &VmConfig, opts: &ConfigOptions) -> Result<String> {
    let spec = &config.spec;
    spec.validate()?;
    validate_domain_name(&spec.name)?;
    let dt = spec.domain_type;
    // The header holds no user text: only the VM id.
    let mut out = format!(
        "# ovm VM {}: generated by ovm-backend-xen, rewritten on every define\n",
        config.id
    );
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{key} = {value}");
    };
    line("name", quote("vm.name", &spec.name)?);
    line("uuid", quote("vm.id", &config.id.to_string())?);
    line("type", quote("vm.domain_type", xl_type(dt))?);
    line("vcpus", spec.vcpus.to_string());
    line("maxvcpus", spec.vcpus.to_string());
    line("memory", spec.memory_mib.to_string());
    line("maxmem", spec.max_memory_mib.to_string());

    match &spec.boot {
        BootSource::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            line(
                "kernel",
                quote("vm.boot.kernel", path_str("vm.boot.kernel", kernel)?)?,
            );
            if let Some(initrd) = initrd {
                line(
                    "ramdisk",
                    quote("vm.boot.initrd", path_str("vm.boot.initrd", initrd)?)?,
                );
            }
            if !cmdline.is_empty() {
                line("cmdline", quote("vm.boot.cmdline", cmdline)?);
            }
        }
        BootSource::Disk => {
            if config.disks.is_empty() {
                return Err(Error::invalid(
                    "vm.boot",
                    "boots from disk but has no disks",
                ));
            }
            match dt {
                DomainType::Pv => line(
                    "bootloader",
                    quote("xen.pv_bootloader", &opts.pv_bootloader)?,
                ),
                DomainType::Pvh => line("firmware", quote("xen.pvh_firmware", &opts.pvh_firmware)?),
                DomainType::Hvm | DomainType::PvHvm => line("boot", quote("vm.boot", "c")?),
            }
        }
        BootSource::TestGuest { .. } => {
            return Err(Error::unsupported(
                "the bundled test guest (boot a kernel or a disk instead)",
                BACKEND,
            ));
        }
    }
    match dt {
        // The Xen platform PCI device is what PV drivers in an HVM guest attach to.
        DomainType::Hvm => line("xen_platform_pci", "0".into()),
        DomainType::PvHvm => line("xen_platform_pci", "1".into()),
        DomainType::Pv | DomainType::Pvh => {}
    }

    if !config.disks.is_empty() {
        let mut items = Vec::with_capacity(config.disks.len());
        for (i, d) in config.disks.iter().enumerate() {
            let spec_device = spec.disks.get(i).and_then(|s| s.device.as_deref());
            items.push(disk_spec(i, d, spec_device, dt)?);
        }
        line("disk", format!("[ {} ]", items.join(", ")));
    }
    if !config.nics.is_empty() {
        let mut items = Vec::with_capacity(config.nics.len());
        for (i, n) in config.nics.iter().enumerate() {
            items.push(vif_spec(i, n, dt)?);
        }
        line("vif", format!("[ {} ]", items.join(", ")));
    }
    let l = opts.lifecycle;
    line("on_poweroff", quote("on_poweroff", l.on_poweroff.as_str())?);
    line("on_reboot", quote("on_reboot", l.on_reboot.as_str())?);
    line("on_crash", quote("on_crash", l.on_crash.as_str())?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use ovm_core::model::{DiskSpec, VmSpec};
    use ovm_core::{VmId, VolumeId};

    use super::*;
    use crate::xlcfg::{self, CfgValue};

    fn id() -> VmId {
        VmId::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888)
    }

    fn kernel_spec(name: &str, dt: DomainType) -> VmSpec {
        let mut s = VmSpec::new(name, 2, 256);
        s.max_memory_mib = 512;
        s.domain_type = dt;
        s.boot = BootSource::Kernel {
            kernel: "/boot/vmlinuz-guest".into(),
            initrd: Some("/boot/initrd-guest".into()),
            cmdline: "console=hvc0 root=/dev/xvda1".into(),
        };
        s
    }

    fn render_default(config: &VmConfig) -> Result<String> {
        render(config, &ConfigOptions::default())
    }

    fn settings(config: &VmConfig) -> xlcfg::Settings {
        let text = render_default(config).unwrap();
        xlcfg::parse(&text).unwrap_or_else(|e| panic!("generated config unreadable: {e}\n{text}"))
    }

    fn s<'a>(set: &'a xlcfg::Settings, key: &str) -> &'a str {
        set.get(key)
            .and_then(CfgValue::as_str)
            .unwrap_or_else(|| panic!("{key} missing or not a string in {set:?}"))
    }

    fn n(set: &xlcfg::Settings, key: &str) -> i64 {
        set.get(key)
            .and_then(CfgValue::as_number)
            .unwrap_or_else(|| panic!("{key} missing or not a number in {set:?}"))
    }

    fn list(set: &xlcfg::Settings, key: &str) -> Vec<String> {
        match set.get(key) {
            Some(CfgValue::List(items)) => items
                .iter()
                .map(|v| v.as_str().expect("string item").to_string())
                .collect(),
            other => panic!("{key} is not a list: {other:?}"),
        }
    }

    fn disk(path: &str, format: VolumeFormat, read_only: bool) -> DiskAttachment {
        DiskAttachment {
            access: VolumeAccess::Path {
                path: path.into(),
                format,
            },
            read_only,
            device: None,
        }
    }

    fn nic(mac: &str, bridge: &str) -> NicAttachment {
        NicAttachment {
            mac: mac.into(),
            bridge: bridge.into(),
            tap: None,
        }
    }

    #[test]
    fn pv_kernel_boot() {
        let set = settings(&VmConfig::new(id(), kernel_spec("web-01", DomainType::Pv)));
        assert_eq!(s(&set, "name"), "web-01");
        assert_eq!(s(&set, "uuid"), id().to_string());
        assert_eq!(s(&set, "type"), "pv");
        assert_eq!(n(&set, "vcpus"), 2);
        assert_eq!(n(&set, "maxvcpus"), 2);
        assert_eq!(n(&set, "memory"), 256);
        assert_eq!(n(&set, "maxmem"), 512);
        assert_eq!(s(&set, "kernel"), "/boot/vmlinuz-guest");
        assert_eq!(s(&set, "ramdisk"), "/boot/initrd-guest");
        assert_eq!(s(&set, "cmdline"), "console=hvc0 root=/dev/xvda1");
        assert_eq!(s(&set, "on_poweroff"), "destroy");
        assert_eq!(s(&set, "on_reboot"), "restart");
        assert_eq!(s(&set, "on_crash"), "preserve");
        assert!(!set.contains_key("xen_platform_pci"));
        assert!(!set.contains_key("disk") && !set.contains_key("vif"));
    }

    #[test]
    fn every_domain_type_maps_to_its_xl_type() {
        for (dt, xl, pci) in [
            (DomainType::Pv, "pv", None),
            (DomainType::Pvh, "pvh", None),
            (DomainType::Hvm, "hvm", Some(0)),
            (DomainType::PvHvm, "hvm", Some(1)),
        ] {
            let set = settings(&VmConfig::new(id(), kernel_spec("g", dt)));
            assert_eq!(s(&set, "type"), xl, "{dt:?}");
            assert_eq!(
                set.get("xen_platform_pci").and_then(CfgValue::as_number),
                pci,
                "{dt:?}"
            );
        }
    }

    #[test]
    fn disk_boot_uses_the_bootloader_of_each_type() {
        for (dt, key, value) in [
            (DomainType::Pv, "bootloader", "pygrub"),
            (DomainType::Pvh, "firmware", "pvgrub64"),
            (DomainType::Hvm, "boot", "c"),
            (DomainType::PvHvm, "boot", "c"),
        ] {
            let mut spec = kernel_spec("g", dt);
            spec.boot = BootSource::Disk;
            let mut config = VmConfig::new(id(), spec.clone());
            let err = render_default(&config).unwrap_err();
            assert!(matches!(err, Error::InvalidSpec { ref field, .. } if field == "vm.boot"));
            config
                .disks
                .push(disk("/srv/vm/g.img", VolumeFormat::Raw, false));
            let set = settings(&config);
            assert_eq!(s(&set, key), value, "{dt:?}");
            assert!(!set.contains_key("kernel"));
        }
    }

    #[test]
    fn disks_carry_vdev_format_access_and_the_path_last() {
        let mut spec = kernel_spec("g", DomainType::PvHvm);
        spec.disks = vec![
            DiskSpec {
                volume: VolumeId::new(),
                read_only: false,
                device: None,
            },
            DiskSpec {
                volume: VolumeId::new(),
                read_only: true,
                device: Some("xvdq".into()),
            },
        ];
        let mut config = VmConfig::new(id(), spec);
        config.disks = vec![
            disk("/srv/repo/a, with comma.img", VolumeFormat::Raw, false),
            disk("/srv/repo/b.qcow2", VolumeFormat::Qcow2, true),
            disk("/srv/iso/install.iso", VolumeFormat::Iso, false),
        ];
        let set = settings(&config);
        assert_eq!(
            list(&set, "disk"),
            vec![
                "format=raw, vdev=xvda, access=rw, target=/srv/repo/a, with comma.img",
                "format=qcow2, vdev=xvdq, access=ro, target=/srv/repo/b.qcow2",
                "format=raw, vdev=xvdc, access=ro, devtype=cdrom, target=/srv/iso/install.iso",
            ]
        );
    }

    #[test]
    fn vifs_carry_mac_bridge_and_model() {
        let mut config = VmConfig::new(id(), kernel_spec("g", DomainType::Hvm));
        config.nics = vec![nic("00:16:3E:AA:bb:01", "xenbr0"), {
            let mut n = nic("00:16:3e:aa:bb:02", "br-vm.100");
            n.tap = Some("vif-g-1".into());
            n
        }];
        let set = settings(&config);
        assert_eq!(
            list(&set, "vif"),
            vec![
                "mac=00:16:3e:aa:bb:01, bridge=xenbr0, type=ioemu, model=e1000",
                "mac=00:16:3e:aa:bb:02, bridge=br-vm.100, vifname=vif-g-1, type=ioemu, model=e1000",
            ]
        );
        config.spec.domain_type = DomainType::Pv;
        assert_eq!(
            list(&settings(&config), "vif")[0],
            "mac=00:16:3e:aa:bb:01, bridge=xenbr0"
        );
    }

    #[test]
    fn lifecycle_actions_are_configurable() {
        let opts = ConfigOptions {
            lifecycle: LifecycleActions {
                on_poweroff: LifecycleAction::Preserve,
                on_reboot: LifecycleAction::RenameRestart,
                on_crash: LifecycleAction::CoredumpDestroy,
            },
            ..ConfigOptions::default()
        };
        let text = render(
            &VmConfig::new(id(), kernel_spec("g", DomainType::Pv)),
            &opts,
        )
        .unwrap();
        let set = xlcfg::parse(&text).unwrap();
        assert_eq!(s(&set, "on_poweroff"), "preserve");
        assert_eq!(s(&set, "on_reboot"), "rename-restart");
        assert_eq!(s(&set, "on_crash"), "coredump-destroy");
    }

    #[test]
    fn quotes_and_backslashes_stay_inside_their_string() {
        // Each of these would end the string and add a setting if written verbatim.
        // Names cannot hold '/' or '\\' (ovm-core refuses them); paths and the command
        // line can.
        let hostile = [
            r#"x" kernel="evil"#,
            r#"x" ; on_crash = "preserve"#,
            r#"a'b"c"#,
            "#not a comment",
            "name with  spaces",
            "ünïcødé",
        ];
        let hostile_text = [r#"x\" ; kernel = "/evil"#, r#"tail\"#, r#"a\\b"#];
        for (i, name) in hostile.iter().enumerate() {
            let text = hostile_text[i % hostile_text.len()];
            let mut spec = kernel_spec(name, DomainType::Pv);
            spec.boot = BootSource::Kernel {
                kernel: PathBuf::from(format!("/k/{name}{text}")),
                initrd: None,
                cmdline: format!("console=hvc0 {name}{text}"),
            };
            let set = settings(&VmConfig::new(id(), spec));
            assert_eq!(s(&set, "name"), *name);
            assert_eq!(s(&set, "kernel"), format!("/k/{name}{text}"));
            assert_eq!(s(&set, "cmdline"), format!("console=hvc0 {name}{text}"));
            let keys: Vec<&str> = set.keys().map(String::as_str).collect();
            assert_eq!(
                keys,
                [
                    "cmdline",
                    "kernel",
                    "maxmem",
                    "maxvcpus",
                    "memory",
                    "name",
                    "on_crash",
                    "on_poweroff",
                    "on_reboot",
                    "type",
                    "uuid",
                    "vcpus"
                ],
                "{name:?} changed the set of settings"
            );
        }
    }

    #[test]
    fn hostile_names_are_refused_naming_the_field() {
        let refused = [
            "a\nkernel = \"/evil\"",
            "a\rb",
            "tab\there",
            "nul\0",
            "",
            "123",
            "-h",
            " padded",
            "padded ",
            "Domain-0",
            "web--incoming",
            "web--migratedaway",
            "a/b",
        ];
        for name in refused {
            let config = VmConfig::new(id(), kernel_spec(name, DomainType::Pv));
            match render_default(&config) {
                Err(Error::InvalidSpec { field, .. }) => assert_eq!(field, "vm.name", "{name:?}"),
                other => panic!("{name:?}: expected InvalidSpec, got {other:?}"),
            }
        }
        let long = "n".repeat(MAX_DOMAIN_NAME + 1);
        assert!(validate_domain_name(&long).is_err());
        assert!(validate_domain_name(&"n".repeat(MAX_DOMAIN_NAME)).is_ok());
    }

    #[test]
    fn control_characters_in_paths_and_cmdline_are_refused() {
        let field_of = |boot: BootSource| {
            let mut spec = kernel_spec("g", DomainType::Pv);
            spec.boot = boot;
            match render_default(&VmConfig::new(id(), spec)) {
                Err(Error::InvalidSpec { field, .. }) => field,
                other => panic!("expected InvalidSpec, got {other:?}"),
            }
        };
        assert_eq!(
            field_of(BootSource::Kernel {
                kernel: "/k\n".into(),
                initrd: None,
                cmdline: String::new()
            }),
            "vm.boot.kernel"
        );
        assert_eq!(
            field_of(BootSource::Kernel {
                kernel: "relative/vmlinuz".into(),
                initrd: None,
                cmdline: String::new()
            }),
            "vm.boot.kernel"
        );
        assert_eq!(
            field_of(BootSource::Kernel {
                kernel: "/k".into(),
                initrd: Some("/i\"\n".into()),
                cmdline: String::new()
            }),
            "vm.boot.initrd"
        );
        assert_eq!(
            field_of(BootSource::Kernel {
                kernel: "/k".into(),
                initrd: None,
                cmdline: "quiet\nkernel = \"/evil\"".into()
            }),
            "vm.boot.cmdline"
        );
    }

    #[test]
    fn device_spec_values_are_checked() {
        let field_of = |config: &VmConfig| match render_default(config) {
            Err(Error::InvalidSpec { field, .. }) => field,
            other => panic!("expected InvalidSpec, got {other:?}"),
        };
        let base = VmConfig::new(id(), kernel_spec("g", DomainType::Pv));

        let mut c = base.clone();
        c.disks.push(disk("/ok.img", VolumeFormat::Raw, false));
        c.disks[0].device = Some("xvda, target=/etc/shadow".into());
        assert_eq!(field_of(&c), "vm.disks[0].device");

        let mut c = base.clone();
        c.disks.push(disk("/bad\n.img", VolumeFormat::Raw, false));
        assert_eq!(field_of(&c), "vm.disks[0].path");

        let mut c = base.clone();
        c.disks.push(disk("relative.img", VolumeFormat::Raw, false));
        assert_eq!(field_of(&c), "vm.disks[0].path");

        let mut c = base.clone();
        c.nics.push(nic("00:16:3e:00:00:01", "br0,script=/tmp/x"));
        assert_eq!(field_of(&c), "vm.nics[0].bridge");

        let mut c = base.clone();
        c.nics
            .push(nic("00:16:3e:00:00:01", "a-very-long-bridge-name"));
        assert_eq!(field_of(&c), "vm.nics[0].bridge");

        let mut c = base.clone();
        c.nics.push(nic("00:16:3e:00:00:01,ip=1", "br0"));
        assert_eq!(field_of(&c), "vm.nics[0].mac");

        let mut c = base.clone();
        let mut bad_tap = nic("00:16:3e:00:00:01", "br0");
        bad_tap.tap = Some("tap 0".into());
        c.nics.push(bad_tap);
        assert_eq!(field_of(&c), "vm.nics[0].tap");
    }

    #[test]
    fn what_xen_cannot_attach_is_unsupported() {
        let unsupported = |config: &VmConfig| matches!(render_default(config), Err(Error::Unsupported { ref backend, .. }) if backend == "xen");
        let mut spec = kernel_spec("g", DomainType::Pv);
        spec.boot = BootSource::TestGuest {
            cmdline: "idle".into(),
        };
        assert!(unsupported(&VmConfig::new(id(), spec)));
        let base = VmConfig::new(id(), kernel_spec("g", DomainType::Pv));
        for access in [
            VolumeAccess::Nbd {
                url: "nbd://h/x".into(),
            },
            VolumeAccess::Simulated {
                volume: VolumeId::new(),
            },
            VolumeAccess::Path {
                path: "/x.vmdk".into(),
                format: VolumeFormat::Vmdk,
            },
        ] {
            let mut c = base.clone();
            c.disks.push(DiskAttachment {
                access,
                read_only: false,
                device: None,
            });
            assert!(unsupported(&c), "{:?}", c.disks[0].access);
        }
    }

    #[test]
    fn invalid_specs_fail_before_anything_is_written() {
        let mut spec = kernel_spec("g", DomainType::Pv);
        spec.vcpus = 0;
        assert!(matches!(
            render_default(&VmConfig::new(id(), spec)),
            Err(Error::InvalidSpec { ref field, .. }) if field == "vm.vcpus"
        ));
    }

    #[test]
    fn default_vdevs_count_like_xen() {
        assert_eq!(default_vdev(0), "xvda");
        assert_eq!(default_vdev(25), "xvdz");
        assert_eq!(default_vdev(26), "xvdaa");
        assert_eq!(default_vdev(27), "xvdab");
        assert_eq!(default_vdev(26 + 26 * 26), "xvdaaa");
        for ok in ["xvda", "xvdaa1", "hdc", "sdb2", "d0", "d1p3"] {
            assert!(validate_vdev("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "xvd", "xvdA", "vda", "d", "dp1", "d1p", "xvda,x", "hd1"] {
            assert!(validate_vdev("f", bad).is_err(), "{bad}");
        }
    }
}
