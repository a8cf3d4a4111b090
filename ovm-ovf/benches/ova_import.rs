//! `ova_import`: a generated OVA (2 GiB disk, streamOptimized VMDK, SHA-256 manifest)
//! imported to sparse raw by ovm, beside the peer pipeline `tar x` + `sha256sum` +
//! `qemu-img convert -f vmdk -O raw`, in the same run. Prints one JSON object per
//! figure.
//!
//! Run: `cargo bench -p ovm-ovf --bench ova_import` (env: OVA_BENCH_GIB=2, OVA_BENCH_RUNS=3).
//! The disk holds 7/8 pseudo-random 64 KiB grains and 1/8 zero grains, so the OVA is
//! about 1.75 GiB per 2 GiB of disk.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ovm_core::model::VmSpec;
use ovm_ovf::Limits;

const GRAIN: usize = 64 << 10;

/// Generates the disk content without storing it.
struct Pattern {
    len: u64,
    pos: u64,
    state: u64,
}

impl Read for Pattern {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = (self.len - self.pos) as usize;
        let n = buf.len().min(left);
        for (i, b) in buf[..n].chunks_mut(8).enumerate() {
            let at = self.pos + (i * 8) as u64;
            let grain = at / GRAIN as u64;
            if grain % 8 == 5 {
                b.fill(0);
                continue;
            }
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            b.copy_from_slice(&bytes[..b.len()]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn generate(dir: &Path, capacity: u64) -> PathBuf {
    let ova = dir.join("bench.ova");
    let raw_fifo = dir.join("pattern.raw");
    // write_ova reads a raw source file; stream the pattern into a sparse-free file once.
    {
        let mut f = std::fs::File::create(&raw_fifo).expect("create source");
        let mut p = Pattern {
            len: capacity,
            pos: 0,
            state: 0x9e37_79b9_7f4a_7c15,
        };
        io::copy(&mut p, &mut f).expect("write source");
    }
    let spec = VmSpec::new("bench", 2, 2048);
    let env = ovm_ovf::mapping::envelope_for_spec(
        &spec,
        &[("disk1".into(), capacity)],
        &["VM Network".into()],
        "",
    );
    ovm_ovf::export::write_ova(
        &ova,
        &env,
        &[ovm_ovf::export::ExportDisk {
            disk_id: "disk1".into(),
            source: raw_fifo.clone(),
            capacity_bytes: capacity,
        }],
        ovm_ovf::export::DiskExportFormat::StreamOptimizedVmdk,
        ovm_ovf::OvfVersion::V1,
    )
    .expect("write OVA");
    let _ = std::fs::remove_file(&raw_fifo);
    ova
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // Child mode: import and report peak RSS.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child-import") {
        let ova = PathBuf::from(&args[2]);
        let out = PathBuf::from(&args[3]);
        ovm_ovf::ova::extract_to_dir(&ova, &out, &Limits::default(), &mut |_, _| {})
            .expect("import");
        println!("{}", peak_rss_kib());
        return;
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: stay quick there.
    if !args.iter().any(|a| a == "--bench") {
        println!("ova_import: run with `cargo bench -p ovm-ovf --bench ova_import`");
        return;
    }
    if Command::new("qemu-img").arg("--version").output().is_err() {
        println!("skipped: qemu-img not installed (scripts/deps/ovm-ovf.sh)");
        return;
    }
    let gib: u64 = std::env::var("OVA_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let runs: usize = std::env::var("OVA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let capacity = gib << 30;
    let base = std::env::var_os("OVA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!("ovm-ova-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let t = Instant::now();
    let ova = generate(&dir, capacity);
    let ova_bytes = std::fs::metadata(&ova).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "generated {} ({ova_bytes} bytes) in {:.1}s",
        ova.display(),
        t.elapsed().as_secs_f64()
    );
    let exe = std::env::current_exe().expect("exe");
    let (mut ovm_s, mut peer_s, mut rss) = (Vec::new(), Vec::new(), 0u64);
    for i in 0..runs {
        let out = dir.join(format!("ovm-{i}"));
        std::fs::create_dir_all(&out).expect("out");
        let t = Instant::now();
        let o = Command::new(&exe)
            .arg("--child-import")
            .arg(&ova)
            .arg(&out)
            .output()
            .expect("child");
        ovm_s.push(t.elapsed().as_secs_f64());
        assert!(
            o.status.success(),
            "ovm import failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        rss = rss.max(
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
        );

        let peer = dir.join(format!("peer-{i}"));
        std::fs::create_dir_all(&peer).expect("peer");
        let t = Instant::now();
        run(Command::new("tar").arg("xf").arg(&ova).arg("-C").arg(&peer));
        run(Command::new("sh").arg("-c").arg(format!(
            "cd '{}' && sha256sum *.ovf *.vmdk > sums",
            peer.display()
        )));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(peer.join("bench-disk1.vmdk"))
            .arg(peer.join("disk1.raw")));
        peer_s.push(t.elapsed().as_secs_f64());
        if i == 0 {
            let same = Command::new("cmp")
                .arg(out.join("disk1.raw"))
                .arg(peer.join("disk1.raw"))
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(same, "ovm and qemu-img produced different raw images");
        }
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(&peer);
    }
    let (o, p) = (median(&mut ovm_s), median(&mut peer_s));
    println!(
        "{{\"bench\":\"ova_import\",\"metric\":\"median_s\",\"value\":{o:.3},\"unit\":\"s\",\"peer\":\"tar x + sha256sum + qemu-img convert\",\"peer_value\":{p:.3},\"ratio\":{:.3},\"disk_gib\":{gib},\"ova_bytes\":{ova_bytes},\"runs\":{runs}}}",
        o / p
    );
    println!(
        "{{\"bench\":\"ova_import\",\"metric\":\"throughput\",\"value\":{:.1},\"unit\":\"MiB/s of OVA\",\"peer\":\"tar x + sha256sum + qemu-img convert\",\"peer_value\":{:.1}}}",
        ova_bytes as f64 / (1 << 20) as f64 / o,
        ova_bytes as f64 / (1 << 20) as f64 / p
    );
    println!(
        "{{\"bench\":\"ova_import\",\"metric\":\"peak_rss\",\"value\":{:.1},\"unit\":\"MiB\",\"target\":64}}",
        rss as f64 / 1024.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
