//! The virtio-mmio block device driven end to end by the test guest's own driver
//! (guest/blk.c): data written on either side is seen on the other, flush works, a
//! read-only disk refuses writes with IOERR, and malformed requests and descriptor chains
//! get errors or a device reset, never a VMM crash.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{backend, boot, event, guest};
use ovm_backend_kvm::vmm::{BootConfig, DiskConfig, ExitReason, Vmm, VmmConfig};
use ovm_backend_kvm::{RebootPolicy, kvm_usable};
use ovm_core::hypervisor::{DiskAttachment, Hypervisor, VmEventKind};
use ovm_core::model::VolumeFormat;
use ovm_core::storage::VolumeAccess;

const T: Duration = Duration::from_secs(30);
const SECTOR: usize = 512;
/// The guest reads sectors 0..8 and writes 8..16 (guest/blk.c `N_SECTORS`).
const REGION: usize = 8 * SECTOR;

/// What the host puts in sectors 0..8 for the guest to read.
fn host_data(i: usize) -> u8 {
    (i.wrapping_mul(13) ^ (i >> 7) ^ 0x3c) as u8
}

/// What the guest writes at disk offset `o` (guest/blk.c `pattern`).
fn guest_pattern(o: usize) -> u8 {
    ((o * 7) ^ (o >> 9) ^ 0xa5) as u8
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A 64 KiB raw disk whose first 8 sectors hold `host_data`, the rest zeros.
fn disk(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let mut image = vec![0u8; 64 * 1024];
    for (i, b) in image[..REGION].iter_mut().enumerate() {
        *b = host_data(i);
    }
    let path = dir.join(name);
    std::fs::write(&path, &image).expect("write disk");
    (path, image)
}

fn sum_line(image: &[u8]) -> String {
    format!("sum=0x{:016x}", fnv1a(&image[..REGION]))
}

/// Boots the test guest in this process with `disks`, waits for its exit; returns the
/// console and the disks' device state.
fn run_in_process(
    cmdline: &str,
    disks: Vec<DiskConfig>,
) -> (
    Option<ExitReason>,
    String,
    Vec<ovm_backend_kvm::devices::virtio_block::BlockState>,
) {
    let (tx, _events) = mpsc::channel();
    let vmm = Vmm::build(
        VmmConfig {
            vcpus: 1,
            memory_mib: 32,
            boot: BootConfig::Kernel {
                kernel: ovm_backend_kvm::test_guest_path().expect("test guest"),
                initrd: None,
                cmdline: cmdline.into(),
            },
            console_log: None,
            disks,
            prefer_pvh: false,
        },
        tx,
    )
    .expect("build");
    vmm.start().expect("start");
    let exit = vmm.wait_exit(T);
    vmm.join();
    let console = String::from_utf8_lossy(&vmm.console()).into_owned();
    (exit, console, vmm.device_states().disks)
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_reads_host_data_writes_flushes_and_the_host_sees_it() {
    let Some((hv, dir)) = backend(RebootPolicy::Stop) else {
        return;
    };
    let (path, before) = disk(dir.path(), "disk.raw");
    let mut events = hv.subscribe();
    let mut config = guest("blk", "blk", 32);
    config.disks.push(DiskAttachment {
        access: VolumeAccess::Path {
            path: path.clone(),
            format: VolumeFormat::Raw,
        },
        read_only: false,
        device: None,
    });
    boot(&hv, &config).await;
    event(&mut events, config.id, T, |k| {
        matches!(k, VmEventKind::PoweredOff)
    })
    .await;
    let console =
        String::from_utf8_lossy(&hv.console_buffer(config.id).await.expect("console")).into_owned();
    let expected = format!(
        "blk: ok sectors=8 {} written=8 flush=ok verified=8 id=disk.raw",
        sum_line(&before)
    );
    assert!(
        console.contains(&expected),
        "want {expected:?} in:\n{console}"
    );
    assert!(
        console.contains("virtio_mmio.device=4K@0xd0000000:10"),
        "the VMM describes the disk on the command line:\n{console}"
    );

    let after = std::fs::read(&path).expect("read disk");
    assert_eq!(after.len(), before.len());
    assert_eq!(
        &after[..REGION],
        &before[..REGION],
        "sectors 0..8 untouched"
    );
    for (i, &b) in after[REGION..2 * REGION].iter().enumerate() {
        let o = REGION + i;
        assert_eq!(b, guest_pattern(o), "guest's write at disk offset {o}");
    }
    assert!(
        after[2 * REGION..].iter().all(|&b| b == 0),
        "nothing written past sector 16"
    );
}

#[test]
fn read_only_disk_refuses_guest_writes_with_ioerr() {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = disk(dir.path(), "ro.raw");
    let (exit, console, disks) = run_in_process(
        "blk=ro",
        vec![DiskConfig {
            path: path.clone(),
            read_only: true,
        }],
    );
    assert_eq!(exit, Some(ExitReason::PowerOff), "{console}");
    let expected = format!("blk: ro ok sectors=8 {} write=ioerr", sum_line(&before));
    assert!(
        console.contains(&expected),
        "want {expected:?} in:\n{console}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "disk unchanged");
    assert!(
        disks[0].read_only && disks[0].io_errors >= 1,
        "{:?}",
        disks[0]
    );

    // The read-write workload on the same read-only disk reports the refusal as a failure.
    let (exit, console, _) = run_in_process(
        "blk=rw",
        vec![DiskConfig {
            path,
            read_only: true,
        }],
    );
    assert_eq!(exit, Some(ExitReason::PowerOff), "{console}");
    assert!(
        console.contains("blk: FAIL write of sectors 8..15 (0x0000000000000001)"),
        "{console}"
    );
}

#[test]
fn malformed_requests_and_chains_get_errors_not_a_vmm_crash() {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = disk(dir.path(), "garbage.raw");
    let (exit, console, disks) = run_in_process(
        "blk=garbage",
        vec![DiskConfig {
            path: path.clone(),
            read_only: false,
        }],
    );
    assert_eq!(exit, Some(ExitReason::PowerOff), "{console}");
    assert!(
        console.contains("blk: garbage ok cases=17 ioerr=7 unsupp=1"),
        "{console}"
    );
    assert!(console.contains(&sum_line(&before)), "{console}");
    // Nine hand-made chains need a reset, plus whatever the random ones did.
    assert!(disks[0].malformed_requests >= 9, "{:?}", disks[0]);
    assert!(disks[0].io_errors >= 7, "{:?}", disks[0]);
    let after = std::fs::read(&path).unwrap();
    assert_eq!(
        &after[..2 * REGION],
        &before[..2 * REGION],
        "random chains only write past sector 16"
    );
}

#[test]
fn blk_without_a_disk_reports_a_clear_failure() {
    if let Err(reason) = kvm_usable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let (exit, console, _) = run_in_process("blk", Vec::new());
    assert_eq!(exit, Some(ExitReason::PowerOff), "{console}");
    assert!(
        console.contains("blk: FAIL no virtio_mmio.device=<size>@<base>:<irq> on the command line"),
        "{console}"
    );
}
