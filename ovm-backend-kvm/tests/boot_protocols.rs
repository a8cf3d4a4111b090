//! Each boot protocol run for real through the VMM library:
//! - Linux 64-bit: a synthetic bzImage whose 64-bit entry checks the boot params the VMM
//!   wrote (boot flag via RSI), prints the first byte of the command line it finds through
//!   `cmd_line_ptr`, and powers off. Stock kernels do not boot on this machine's KVM (see
//!   docs/kvm.md); this exercises the same path end to end.
//! - PVH 32-bit entry and ovm's 64-bit entry: the test guest, both ways.

use std::sync::mpsc;
use std::time::Duration;

use ovm_backend_kvm::arch::x86_64::regs::EntryMode;
use ovm_backend_kvm::vmm::{BootConfig, ExitReason, Vmm, VmmConfig};

/// 64-bit code entered at load address + 0x200 with RSI = boot params.
const ENTRY_64: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov $0x3f8, %dx
    0x66, 0x8b, 0x86, 0xfe, 0x01, 0x00, 0x00, // mov 0x1fe(%rsi), %ax   (boot_flag)
    0x66, 0x3d, 0x55, 0xaa, // cmp $0xaa55, %ax
    0x75, 0x14, // jne fail
    0x8b, 0x9e, 0x28, 0x02, 0x00, 0x00, // mov 0x228(%rsi), %ebx   (cmd_line_ptr)
    0x8a, 0x03, // mov (%rbx), %al
    0xee, // out %al, (%dx)
    0xb0, 0x0a, // mov $'\n', %al
    0xee, // out %al, (%dx)
    0x66, 0xba, 0xf4, 0x00, // mov $0xf4, %dx
    0x31, 0xc0, // xor %eax, %eax
    0xef, // out %eax, (%dx)        (power off)
    0xf4, // hlt
    0x0f, 0x0b, // fail: ud2             (→ triple fault)
];

fn synthetic_bzimage() -> Vec<u8> {
    let mut image = vec![0u8; 1024];
    image[0x1f1] = 1; // setup_sects: the setup code is 2 sectors
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020cu16.to_le_bytes());
    image[0x211] = 1; // loadflags: LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    image[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes()); // initrd_addr_max
    let mut kernel = vec![0x90u8; 0x200]; // 32-bit entry: unused by 64-bit boot
    kernel.extend_from_slice(ENTRY_64);
    image.extend_from_slice(&kernel);
    image
}

#[test]
fn bzimage_is_entered_in_long_mode_with_boot_params_and_cmdline() {
    if let Err(reason) = ovm_backend_kvm::kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    std::fs::write(&kernel, synthetic_bzimage()).unwrap();
    let initrd = dir.path().join("initrd");
    std::fs::write(&initrd, vec![0xa5u8; 3000]).unwrap();
    let (tx, _events) = mpsc::channel();
    let vmm = Vmm::build(
        VmmConfig {
            vcpus: 2,
            memory_mib: 64,
            boot: BootConfig::Kernel {
                kernel,
                initrd: Some(initrd),
                cmdline: "Zconsole=ttyS0 panic=-1".into(),
            },
            console_log: None,
            disks: Vec::new(),
            prefer_pvh: false,
        },
        tx,
    )
    .expect("build");
    assert!(
        matches!(
            vmm.entry(),
            EntryMode::Linux64 {
                entry: 0x10_0200,
                cr3: 0x9000
            }
        ),
        "{:?}",
        vmm.entry()
    );
    vmm.start().expect("start");
    let exit = vmm.wait_exit(Duration::from_secs(20));
    assert_eq!(
        exit,
        Some(ExitReason::PowerOff),
        "console: {:?}",
        vmm.console()
    );
    assert_eq!(vmm.console(), b"Z\n");
    vmm.join();
}

fn boot_test_guest(prefer_pvh: bool) -> (EntryMode, Vec<u8>) {
    let (tx, _events) = mpsc::channel();
    let vmm = Vmm::build(
        VmmConfig {
            vcpus: 1,
            memory_mib: 32,
            boot: BootConfig::Kernel {
                kernel: ovm_backend_kvm::test_guest_path().unwrap(),
                initrd: None,
                cmdline: "poweroff".into(),
            },
            console_log: None,
            disks: Vec::new(),
            prefer_pvh,
        },
        tx,
    )
    .expect("build");
    vmm.start().expect("start");
    assert_eq!(
        vmm.wait_exit(Duration::from_secs(20)),
        Some(ExitReason::PowerOff)
    );
    vmm.join();
    (vmm.entry(), vmm.console())
}

#[test]
fn test_guest_boots_through_pvh_and_through_the_64_bit_note() {
    if let Err(reason) = ovm_backend_kvm::kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let (entry, console) = boot_test_guest(true);
    assert!(matches!(entry, EntryMode::Pvh { .. }), "{entry:?}");
    let console = String::from_utf8_lossy(&console).into_owned();
    assert!(
        console.contains("cmdline: poweroff") && console.contains("ovm-guest: poweroff"),
        "{console}"
    );

    let (entry, console) = boot_test_guest(false);
    assert!(
        matches!(entry, EntryMode::Direct64 { cr3: 0x9000, .. }),
        "{entry:?}"
    );
    let console = String::from_utf8_lossy(&console).into_owned();
    assert!(
        console.contains("memory 32 MiB") && console.contains("ovm-guest: poweroff"),
        "{console}"
    );
}

#[test]
fn a_file_that_is_no_kernel_is_refused() {
    if let Err(reason) = ovm_backend_kvm::kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("notakernel");
    std::fs::write(&kernel, b"#!/bin/sh\necho hi\n").unwrap();
    let (tx, _events) = mpsc::channel();
    let config = VmmConfig {
        vcpus: 1,
        memory_mib: 16,
        boot: BootConfig::Kernel {
            kernel,
            initrd: None,
            cmdline: String::new(),
        },
        console_log: None,
        disks: Vec::new(),
        prefer_pvh: false,
    };
    let err = Vmm::build(config, tx).err().expect("refused").to_string();
    assert!(err.contains("notakernel"), "{err}");
}
