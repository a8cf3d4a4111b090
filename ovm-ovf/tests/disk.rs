//! Disk image conversion checked against qemu-img (skipped with a reason when qemu-img
//! is missing; scripts/deps/ovm-ovf.sh installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use ovm_ovf::OvfError;
use ovm_ovf::disk::{ImageFormat, SparseWriter, convert, vmdk};

fn have_qemu_img() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipped: qemu-img not installed (scripts/deps/ovm-ovf.sh installs qemu-utils)");
    }
    ok
}

/// A raw image with data, zero runs and a partial last grain.
fn sample_raw(dir: &Path, size: usize) -> PathBuf {
    let mut data = vec![0u8; size];
    let mut x: u32 = 12345;
    for (i, chunk) in data.chunks_mut(4096).enumerate() {
        if i % 7 == 3 || i % 11 == 0 {
            continue; // holes
        }
        for b in chunk.iter_mut() {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = if i % 3 == 0 {
                (x >> 16) as u8
            } else {
                (i % 251) as u8
            };
        }
    }
    let path = dir.join("sample.raw");
    std::fs::write(&path, &data).unwrap();
    path
}

fn qemu(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn convert_file(
    src: &Path,
    declared: Option<ImageFormat>,
    capacity: u64,
    dir: &Path,
) -> Result<PathBuf, OvfError> {
    let out_path = dir.join(format!(
        "{}.out",
        src.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&out_path);
    let w = SparseWriter::create(&out_path, capacity).unwrap();
    let mut f = std::fs::File::open(src).unwrap();
    convert("test", declared, &mut f, w, dir)?;
    Ok(out_path)
}

const SIZE: usize = (8 << 20) + 4096;

#[test]
fn vmdk_stream_optimized_from_qemu_reads_natively() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path(), SIZE);
    let vmdk = dir.path().join("s.vmdk");
    qemu(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        raw.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    ]);
    let out = convert_file(&vmdk, Some(ImageFormat::Vmdk), SIZE as u64, dir.path()).unwrap();
    assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&raw).unwrap());
}

#[test]
fn vmdk_monolithic_sparse_from_qemu_reads_natively() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path(), SIZE);
    let vmdk = dir.path().join("m.vmdk");
    qemu(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        raw.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    ]);
    let out = convert_file(&vmdk, None, SIZE as u64 + 65536, dir.path()).unwrap();
    let got = std::fs::read(out).unwrap();
    let want = std::fs::read(&raw).unwrap();
    assert_eq!(&got[..SIZE], &want[..]);
    assert!(got[SIZE..].iter().all(|b| *b == 0));
    // No spool file is left behind.
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".ovm-spool")
    }));
}

#[test]
fn our_stream_optimized_writer_is_read_by_qemu_and_by_us() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path(), SIZE);
    let vmdk = dir.path().join("ours.vmdk");
    let mut input = std::fs::File::open(&raw).unwrap();
    let mut out = std::fs::File::create(&vmdk).unwrap();
    let written =
        vmdk::write_stream_optimized(&mut input, SIZE as u64, "ours.vmdk", &mut out).unwrap();
    drop(out);
    assert_eq!(written.size, std::fs::metadata(&vmdk).unwrap().len());
    let back = dir.path().join("back.raw");
    qemu(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "raw",
        vmdk.to_str().unwrap(),
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&raw).unwrap());
    let ours = convert_file(&vmdk, Some(ImageFormat::Vmdk), SIZE as u64, dir.path()).unwrap();
    assert_eq!(std::fs::read(ours).unwrap(), std::fs::read(&raw).unwrap());
}

#[test]
fn qcow2_through_qemu_img_and_backing_files_refused() {
    if !have_qemu_img() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path(), SIZE);
    let q = dir.path().join("d.qcow2");
    qemu(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    let out = convert_file(&q, Some(ImageFormat::Qcow2), SIZE as u64, dir.path()).unwrap();
    assert_eq!(std::fs::read(out).unwrap(), std::fs::read(&raw).unwrap());

    let overlay = dir.path().join("overlay.qcow2");
    qemu(&[
        "create",
        "-f",
        "qcow2",
        "-F",
        "qcow2",
        "-b",
        q.to_str().unwrap(),
        overlay.to_str().unwrap(),
    ]);
    let err =
        convert_file(&overlay, Some(ImageFormat::Qcow2), SIZE as u64, dir.path()).unwrap_err();
    assert!(matches!(err, OvfError::ExternalReference { .. }), "{err}");
}

#[test]
fn vmdk_descriptors_and_mismatched_formats_refused() {
    let dir = tempfile::tempdir().unwrap();
    let desc = dir.path().join("d.vmdk");
    std::fs::write(&desc, "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/shadow\" 0\n").unwrap();
    let err = convert_file(&desc, Some(ImageFormat::Vmdk), 1 << 20, dir.path()).unwrap_err();
    assert!(matches!(err, OvfError::ExternalReference { .. }), "{err}");

    let garbage = dir.path().join("g.vmdk");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    let err = convert_file(&garbage, Some(ImageFormat::Vmdk), 1 << 20, dir.path()).unwrap_err();
    assert!(matches!(err, OvfError::DiskImage { .. }), "{err}");

    // A declared raw image is copied whatever it contains.
    let out = convert_file(&garbage, Some(ImageFormat::Raw), 1 << 20, dir.path()).unwrap();
    assert_eq!(&std::fs::read(out).unwrap()[..4096], &vec![7u8; 4096][..]);
    // ...but never beyond the capacity.
    let err = convert_file(&garbage, Some(ImageFormat::Raw), 1024, dir.path()).unwrap_err();
    assert!(matches!(err, OvfError::DiskImage { .. }), "{err}");
}

#[test]
fn hostile_stream_vmdk_grain_beyond_capacity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let raw = sample_raw(dir.path(), 1 << 20);
    let vmdk = dir.path().join("h.vmdk");
    let mut input = std::fs::File::open(&raw).unwrap();
    let mut out = std::fs::File::create(&vmdk).unwrap();
    vmdk::write_stream_optimized(&mut input, 1 << 20, "h.vmdk", &mut out).unwrap();
    drop(out);
    // Rewrite the first grain marker's LBA to point far beyond the capacity.
    let mut bytes = std::fs::read(&vmdk).unwrap();
    let first = 128 * 512;
    bytes[first..first + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&vmdk, &bytes).unwrap();
    let err = convert_file(&vmdk, Some(ImageFormat::Vmdk), 1 << 20, dir.path()).unwrap_err();
    assert!(
        matches!(err, OvfError::DiskImage { ref reason, .. } if reason.contains("beyond")),
        "{err}"
    );
    // Truncated streams are refused too.
    std::fs::write(&vmdk, &bytes[..first + 100]).unwrap();
    assert!(convert_file(&vmdk, Some(ImageFormat::Vmdk), 1 << 20, dir.path()).is_err());
}
