//! OVA reading end to end, and every hostile-package refusal (each one a test).

use std::io::Read;
use std::path::{Path, PathBuf};

use ovm_core::model::VmSpec;
use ovm_ovf::export::{DiskExportFormat, ExportDisk, write_ova};
use ovm_ovf::manifest::{DigestAlgorithm, digest_hex};
use ovm_ovf::mapping::envelope_for_spec;
use ovm_ovf::ova::extract_to_dir;
use ovm_ovf::{CertificatePolicy, Limits, OvfError, OvfVersion};

const CAP: u64 = 3 << 20;

fn raw_image(dir: &Path) -> PathBuf {
    let mut data = vec![0u8; CAP as usize];
    for (i, b) in data.iter_mut().enumerate().skip(4096).take(300_000) {
        *b = (i * 7 % 253) as u8;
    }
    data[CAP as usize - 1] = 9;
    let p = dir.join("src.raw");
    std::fs::write(&p, &data).unwrap();
    p
}

/// A valid OVA of one VM with one disk, as (name, bytes) entries.
fn sample_entries(dir: &Path, format: DiskExportFormat) -> Vec<(String, Vec<u8>)> {
    let raw = raw_image(dir);
    let spec = VmSpec::new("web", 2, 1024);
    let env = envelope_for_spec(
        &spec,
        &[("disk1".into(), CAP)],
        &["VM Network".into()],
        "hello",
    );
    let ova = dir.join("sample.ova");
    let _ = std::fs::remove_file(&ova);
    write_ova(
        &ova,
        &env,
        &[ExportDisk {
            disk_id: "disk1".into(),
            source: raw,
            capacity_bytes: CAP,
        }],
        format,
        OvfVersion::V1,
    )
    .unwrap();
    read_entries(&ova)
}

fn read_entries(ova: &Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(ova).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (name, b)
        })
        .collect()
}

/// Writes entries with raw header names (so hostile names can be produced).
fn pack(path: &Path, entries: &[(String, Vec<u8>, tar::EntryType)]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data, kind) in entries {
        let mut h = tar::Header::new_ustar();
        let n = name.as_bytes();
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(*kind);
        if *kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/passwd").unwrap();
        }
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

fn regular(entries: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>, tar::EntryType)> {
    entries
        .into_iter()
        .map(|(n, d)| (n, d, tar::EntryType::Regular))
        .collect()
}

fn import(
    ova: &Path,
    limits: &Limits,
) -> (
    Result<ovm_ovf::ova::Extraction, OvfError>,
    PathBuf,
    tempfile::TempDir,
) {
    let out = tempfile::tempdir().unwrap();
    let r = extract_to_dir(ova, out.path(), limits, &mut |_, _| {});
    (r, out.path().to_owned(), out)
}

fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn exported_ova_imports_to_identical_sparse_raw() {
    for format in [DiskExportFormat::StreamOptimizedVmdk, DiskExportFormat::Raw] {
        let dir = tempfile::tempdir().unwrap();
        let entries = sample_entries(dir.path(), format);
        assert!(entries[0].0.ends_with(".ovf") && entries[1].0.ends_with(".mf"));
        let ova = dir.path().join("sample.ova");
        let (r, out, _g) = import(&ova, &Limits::default());
        let ex = r.unwrap();
        assert_eq!(ex.disks.len(), 1);
        let got = std::fs::read(&ex.disks[0].path).unwrap();
        assert_eq!(got, std::fs::read(dir.path().join("src.raw")).unwrap());
        assert_eq!(ex.disks[0].path, out.join("disk1.raw"));
        // Sparse: far fewer blocks allocated than the capacity.
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&ex.disks[0].path).unwrap().blocks() * 512;
        assert!(blocks < CAP / 2, "{blocks} bytes allocated");
        // Only the disk is left in the target directory.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
        let summary = ovm_ovf::inspect::summary_json(&ova, &Limits::default()).unwrap();
        assert_eq!(summary["virtual_systems"][0]["cpus"], 2);
        assert_eq!(summary["virtual_systems"][0]["memory_mib"], 1024);
        assert_eq!(
            summary["virtual_systems"][0]["disks"][0]["capacity_bytes"],
            CAP
        );
        assert_eq!(
            summary["virtual_systems"][0]["nics"][0]["network"],
            "VM Network"
        );
        assert_eq!(summary["is_collection"], false);
        assert_eq!(summary["has_manifest"], true);
    }
}

fn refused(
    entries: Vec<(String, Vec<u8>, tar::EntryType)>,
    limits: &Limits,
    check: impl Fn(&OvfError) -> bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let ova = dir.path().join("hostile.ova");
    pack(&ova, &entries);
    let (r, out, _g) = import(&ova, limits);
    let err = r.expect_err("hostile package accepted");
    assert!(check(&err), "unexpected error: {err}");
    assert_empty(&out);
}

fn base() -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let e = sample_entries(dir.path(), DiskExportFormat::StreamOptimizedVmdk);
    (dir, e)
}

#[test]
fn links_devices_and_directories_refused() {
    let (_d, e) = base();
    for kind in [
        tar::EntryType::Symlink,
        tar::EntryType::Char,
        tar::EntryType::Block,
        tar::EntryType::Fifo,
        tar::EntryType::Directory,
    ] {
        let mut entries = regular(e.clone());
        entries[2].2 = kind;
        refused(entries, &Limits::default(), |err| {
            matches!(err, OvfError::EntryRefused { .. })
        });
    }
}

#[test]
fn absolute_parent_duplicate_and_unreferenced_entries_refused() {
    let (_d, e) = base();
    for name in ["/etc/evil", "../evil", "a/../../evil", "unreferenced.bin"] {
        let mut entries = regular(e.clone());
        entries.push((name.into(), b"x".to_vec(), tar::EntryType::Regular));
        refused(
            entries,
            &Limits::default(),
            |err| matches!(err, OvfError::EntryRefused { name: n, .. } if n == name),
        );
    }
    let mut entries = regular(e.clone());
    entries.push(entries[2].clone());
    refused(
        entries,
        &Limits::default(),
        |err| matches!(err, OvfError::EntryRefused { reason, .. } if reason.contains("duplicate")),
    );
}

#[test]
fn descriptor_must_come_first() {
    let (_d, e) = base();
    let mut entries = regular(e);
    entries.swap(0, 2);
    refused(
        entries,
        &Limits::default(),
        |err| matches!(err, OvfError::EntryRefused { reason, .. } if reason.contains("first")),
    );
}

#[test]
fn digest_mismatch_names_the_file() {
    let (_d, e) = base();
    let mut entries = regular(e);
    let last = entries[2].1.len() - 600;
    entries[2].1[last] ^= 0xff;
    let disk_name = entries[2].0.clone();
    refused(
        entries,
        &Limits::default(),
        |err| matches!(err, OvfError::DigestMismatch { file, .. } if *file == disk_name),
    );
}

#[test]
fn files_missing_from_manifest_refused_and_both_syntaxes_accepted() {
    let (_d, e) = base();
    let (ovf, mf, disk) = (e[0].clone(), e[1].clone(), e[2].clone());
    // Manifest without the disk line.
    let only_ovf: String = String::from_utf8(mf.1.clone())
        .unwrap()
        .lines()
        .take(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let entries = regular(vec![
        ovf.clone(),
        (mf.0.clone(), only_ovf.into_bytes()),
        disk.clone(),
    ]);
    refused(
        entries,
        &Limits::default(),
        |err| matches!(err, OvfError::NotInManifest { file } if *file == disk.0),
    );

    // SHA1 with spaces and CRLF: accepted.
    let text = format!(
        "SHA1 ({}) = {}\r\nSHA1 ({}) = {}\r\n",
        ovf.0,
        digest_hex(DigestAlgorithm::Sha1, &ovf.1),
        disk.0,
        digest_hex(DigestAlgorithm::Sha1, &disk.1)
    );
    let dir = tempfile::tempdir().unwrap();
    let ova = dir.path().join("sha1.ova");
    pack(&ova, &regular(vec![ovf, (mf.0, text.into_bytes()), disk]));
    let (r, _out, _g) = import(&ova, &Limits::default());
    r.unwrap();
}

#[test]
fn missing_file_and_size_mismatch_refused() {
    let (_d, e) = base();
    let entries = regular(e[..2].to_vec());
    refused(entries, &Limits::default(), |err| {
        matches!(err, OvfError::MissingFile { .. })
    });

    // Declared size differs from the stored size (manifest dropped so it is the size
    // check that speaks).
    let mut entries = regular(vec![e[0].clone(), e[2].clone()]);
    entries[1].1.extend_from_slice(&[0u8; 512]);
    refused(entries, &Limits::default(), |err| {
        matches!(err, OvfError::InvalidSize { .. })
    });
}

fn rewrite_descriptor(ovf: &str, f: impl Fn(&str) -> String) -> Vec<u8> {
    f(ovf).into_bytes()
}

#[test]
fn chunked_and_gzip_files_import() {
    let (d, e) = base();
    let ovf = String::from_utf8(e[0].1.clone()).unwrap();
    let disk = e[2].clone();
    let src = std::fs::read(d.path().join("src.raw")).unwrap();

    // Chunked: three chunks, manifest per chunk.
    let chunk = 4096u64;
    let chunks: Vec<Vec<u8>> = disk.1.chunks(chunk as usize).map(<[u8]>::to_vec).collect();
    let desc = rewrite_descriptor(&ovf, |s| {
        s.replace("ovf:size=", &format!("ovf:chunkSize=\"{chunk}\" ovf:size="))
    });
    let mut entries = vec![(e[0].0.clone(), desc.clone())];
    let mut mf = format!(
        "SHA256({})= {}\n",
        e[0].0,
        digest_hex(DigestAlgorithm::Sha256, &desc)
    );
    for (i, c) in chunks.iter().enumerate() {
        let name = format!("{}.{i:09}", disk.0);
        mf.push_str(&format!(
            "SHA256({name})= {}\n",
            digest_hex(DigestAlgorithm::Sha256, c)
        ));
    }
    entries.push((e[1].0.clone(), mf.into_bytes()));
    for (i, c) in chunks.iter().enumerate() {
        entries.push((format!("{}.{i:09}", disk.0), c.clone()));
    }
    let dir = tempfile::tempdir().unwrap();
    let ova = dir.path().join("chunked.ova");
    pack(&ova, &regular(entries.clone()));
    let (r, _out, _g) = import(&ova, &Limits::default());
    let ex = r.unwrap();
    assert_eq!(std::fs::read(&ex.disks[0].path).unwrap(), src);

    // Chunks out of order: refused.
    let mut swapped = entries.clone();
    let n = swapped.len();
    swapped.swap(n - 1, n - 2);
    refused(
        regular(swapped),
        &Limits::default(),
        |err| matches!(err, OvfError::EntryRefused { reason, .. } if reason.contains("order")),
    );

    // Gzip-compressed disk.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &disk.1).unwrap();
    let gz = gz.finish().unwrap();
    let desc = rewrite_descriptor(&ovf, |s| {
        let re_size = format!("ovf:size=\"{}\"", disk.1.len());
        s.replace(
            &re_size,
            &format!("ovf:size=\"{}\" ovf:compression=\"gzip\"", gz.len()),
        )
    });
    let mf = format!(
        "SHA256({})= {}\nSHA256({})= {}\n",
        e[0].0,
        digest_hex(DigestAlgorithm::Sha256, &desc),
        disk.0,
        digest_hex(DigestAlgorithm::Sha256, &gz)
    );
    let ova = dir.path().join("gz.ova");
    pack(
        &ova,
        &regular(vec![
            (e[0].0.clone(), desc),
            (e[1].0.clone(), mf.into_bytes()),
            (disk.0.clone(), gz),
        ]),
    );
    let (r, _out, _g) = import(&ova, &Limits::default());
    assert_eq!(std::fs::read(&r.unwrap().disks[0].path).unwrap(), src);
}

#[test]
fn gzip_bomb_is_bounded() {
    let (_d, e) = base();
    let ovf = String::from_utf8(e[0].1.clone()).unwrap();
    // 96 MiB of zeros compress to ~100 KiB; the disk holds 3 MiB and the bound on what
    // a gzip stream may expand to is the capacity + 1/8 + 64 MiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..96 {
        std::io::Write::write_all(&mut gz, &zeros).unwrap();
    }
    let gz = gz.finish().unwrap();
    let desc = ovf
        .replace(
            &format!("ovf:size=\"{}\"", e[2].1.len()),
            &format!("ovf:size=\"{}\" ovf:compression=\"gzip\"", gz.len()),
        )
        .replace(ovm_ovf::export::VMDK_STREAM_URI, ovm_ovf::export::RAW_URI);
    let started = std::time::Instant::now();
    refused(
        regular(vec![
            (e[0].0.clone(), desc.into_bytes()),
            (e[2].0.clone(), gz),
        ]),
        &Limits::default(),
        |err| matches!(err, OvfError::TooLarge { .. } | OvfError::DiskImage { .. }),
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn certificates_are_reported_or_refused_by_policy() {
    let (_d, e) = base();
    let cert =
        b"SHA256(sample.mf)= 00\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            .to_vec();
    let mut entries = regular(e);
    entries.insert(2, ("sample.cert".into(), cert, tar::EntryType::Regular));
    let dir = tempfile::tempdir().unwrap();
    let ova = dir.path().join("signed.ova");
    pack(&ova, &entries);
    let (r, _o, _g) = import(&ova, &Limits::default());
    let ex = r.unwrap();
    assert!(
        ex.warnings
            .iter()
            .any(|w| w.contains("signature is not verified"))
    );
    let strict = Limits {
        certificate: CertificatePolicy::Refuse,
        ..Limits::default()
    };
    refused(entries, &strict, |err| {
        matches!(err, OvfError::Certificate { .. })
    });
}

#[test]
fn oversized_descriptor_and_manifest_refused() {
    let (_d, e) = base();
    let small = Limits {
        max_descriptor_bytes: 100,
        ..Limits::default()
    };
    refused(
        regular(e.clone()),
        &small,
        |err| matches!(err, OvfError::TooLarge { what, .. } if what.contains("descriptor")),
    );
    let small = Limits {
        max_manifest_bytes: 10,
        ..Limits::default()
    };
    refused(
        regular(e),
        &small,
        |err| matches!(err, OvfError::TooLarge { what, .. } if what.contains("manifest")),
    );
}

#[test]
fn ovf_directory_with_files_beside_it() {
    let (_d, e) = base();
    let dir = tempfile::tempdir().unwrap();
    for (n, b) in &e {
        std::fs::write(dir.path().join(n), b).unwrap();
    }
    let ovf = dir.path().join(&e[0].0);
    let out = tempfile::tempdir().unwrap();
    let ex = extract_to_dir(&ovf, out.path(), &Limits::default(), &mut |_, _| {}).unwrap();
    assert_eq!(ex.disks.len(), 1);
    // A symlink escaping the directory is refused.
    std::fs::remove_file(dir.path().join(&e[2].0)).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.path().join(&e[2].0)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let err = extract_to_dir(&ovf, out.path(), &Limits::default(), &mut |_, _| {}).unwrap_err();
    assert!(matches!(err, OvfError::BadHref { .. }), "{err}");
    assert_empty(out.path());
}

#[test]
fn arbitrary_archives_never_panic() {
    use proptest::prelude::*;
    let (_d, e) = base();
    let dir = tempfile::tempdir().unwrap();
    let ova = dir.path().join("valid.ova");
    pack(&ova, &regular(e));
    let bytes = std::fs::read(&ova).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(32));
    runner
        .run(
            &(0usize..bytes.len(), any::<u8>(), any::<bool>()),
            |(pos, b, cut)| {
                let mut m = bytes.clone();
                if cut {
                    m.truncate(pos)
                } else {
                    m[pos] ^= b | 1
                }
                let p = dir.path().join("m.ova");
                std::fs::write(&p, &m).unwrap();
                let out = tempfile::tempdir().unwrap();
                let _ = extract_to_dir(&p, out.path(), &Limits::default(), &mut |_, _| {});
                let _ = ovm_ovf::inspect::summary_json(&p, &Limits::default());
                Ok(())
            },
        )
        .unwrap();
}
