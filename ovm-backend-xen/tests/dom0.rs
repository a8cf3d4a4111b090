//! The Xen backend against real Xen, run INSIDE dom0 of the test bed.
//!
//! `tests/testbed.rs` builds this program (`cargo test --no-run`), and
//! `scripts/xen-testbed.sh run --payload` puts it in the dom0 initramfs of Xen booted
//! under QEMU; dom0's init runs it. Each check prints one line on the serial console,
//! `OVM-XEN-CHECK ok NAME (N ms)` or `OVM-XEN-CHECK FAILED NAME: WHY`, and the run ends
//! with `OVM-XEN-SUMMARY passed=N failed=M`; testbed.rs reads them. Raw `xl` output is
//! printed base64-encoded between `OVM-XEN-FIXTURE-BEGIN NAME` / `OVM-XEN-FIXTURE-END`
//! lines, so recorded fixtures (tests/fixtures/) are byte-exact.
//!
//! One PV guest (Debian's cloud kernel and a busybox initramfs that says hello and ticks
//! every 2 s) boots once and serves every check that needs a live guest: under TCG its
//! boot is the slow part.
//!
//! Outside dom0 (a plain `cargo test`) it prints why it does not run and exits 0.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ovm_backend_xen::runner::args;
use ovm_backend_xen::{ProcessXl, XenHypervisor, XenOptions, XlRunner};
use ovm_core::conformance::hypervisor::{SuiteConfig, run as conformance};
use ovm_core::model::{BootSource, DomainType, VmSpec, VmState};
use ovm_core::{Error, Hypervisor, VmConfig, VmId};

const GUEST_NAME: &str = "ovm-xen-it";
/// How long the guest may take to print its hello: about a minute under TCG on an idle
/// machine, several times that when the host's CPUs are busy with other work.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

type CheckResult = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// The one test this program is, to the test runners.
const TEST_NAME: &str = "dom0_checks";

fn main() {
    // Speak enough of libtest's protocol for cargo-nextest, which lists a test binary's
    // tests (`--list --format terse [--ignored]`) and then runs each by name.
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--list") {
        if !argv.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return;
    }
    let filters: Vec<&String> = argv.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        return;
    }
    if std::env::var_os("OVM_XEN_DOM0").is_none() || !Path::new("/proc/xen/capabilities").exists() {
        println!(
            "dom0 checks: skipped: not inside a Xen dom0 (tests/testbed.rs boots Xen under QEMU and runs them there)"
        );
        return;
    }
    // The backend's warnings (e.g. an `xl` that died and was run again) go to the console.
    tracing_subscriber::fmt()
        .with_env_filter("ovm_backend_xen=info")
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!("OVM-XEN-CHECK FAILED runtime: {e}");
            std::process::exit(1);
        }
    };
    let failed = rt.block_on(run_all());
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

struct Env {
    kernel: PathBuf,
    initrd: PathBuf,
    console_dir: PathBuf,
}

impl Env {
    fn from_env() -> Self {
        let path = |k: &str, default: &str| {
            PathBuf::from(std::env::var_os(k).unwrap_or_else(|| default.into()))
        };
        Env {
            kernel: path("OVM_XEN_GUEST_KERNEL", "/ovm/guest/vmlinuz"),
            initrd: path("OVM_XEN_GUEST_INITRD", "/ovm/guest/initrd.img"),
            console_dir: path("OVM_XEN_CONSOLE_LOG_DIR", "/var/log/xen"),
        }
    }

    fn boot(&self, extra: &str) -> BootSource {
        BootSource::Kernel {
            kernel: self.kernel.clone(),
            initrd: Some(self.initrd.clone()),
            cmdline: format!("console=hvc0 quiet panic=-1 {extra}")
                .trim_end()
                .to_string(),
        }
    }

    fn guest_spec(&self, name: &str) -> VmSpec {
        let mut s = VmSpec::new(name, 1, 128);
        s.domain_type = DomainType::Pv;
        s.boot = self.boot("");
        s
    }
}

struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    /// Runs one check in its own task (a panic, as the conformance suite reports a broken
    /// rule, fails the check rather than the run) with a time limit.
    async fn check<Fut>(&mut self, name: &str, limit: Duration, fut: Fut) -> bool
    where
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        println!("OVM-XEN-CHECK-START {name}");
        let t0 = Instant::now();
        let outcome = match tokio::time::timeout(limit, tokio::spawn(fut)).await {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(match join.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
                Err(e) => e.to_string(),
            }),
            Err(_) => Err(format!("did not finish within {limit:?}")),
        };
        let ms = t0.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                self.passed += 1;
                println!("OVM-XEN-CHECK ok {name} ({ms} ms)");
                true
            }
            Err(why) => {
                self.failed += 1;
                // One line per check: the host-side parser reads lines.
                let why = why.replace('\n', " | ");
                println!("OVM-XEN-CHECK FAILED {name}: {why} ({ms} ms)");
                false
            }
        }
    }

    fn skip_dependent(&mut self, name: &str, because: &str) {
        self.failed += 1;
        println!("OVM-XEN-CHECK FAILED {name}: not run: {because}");
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Prints `xl ARGS` output as a fixture block (base64 lines of 76 characters).
async fn record(xl: &ProcessXl, name: &str, a: &[&str]) {
    match xl.run(&args(a), Duration::from_secs(60)).await {
        Ok(out) => {
            println!("OVM-XEN-FIXTURE-BEGIN {name}");
            let enc = base64(out.as_bytes());
            for line in enc.as_bytes().chunks(76) {
                println!("{}", String::from_utf8_lossy(line));
            }
            println!("OVM-XEN-FIXTURE-END");
        }
        Err(e) => println!("OVM-XEN-NOTE cannot record {name}: {e}"),
    }
}

fn errstr(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn wait_console(
    hv: &XenHypervisor,
    vm: VmId,
    needle: &str,
    limit: Duration,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        let buf = hv.console_buffer(vm).await.map_err(errstr)?;
        if String::from_utf8_lossy(&buf).contains(needle) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            let tail = String::from_utf8_lossy(&buf);
            let tail: String = tail
                .chars()
                .rev()
                .take(300)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "{needle:?} not on the console after {limit:?}; console ends {tail:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Number of the last `OVM-GUEST: tick N` line on the console, if any.
async fn last_tick(hv: &XenHypervisor, vm: VmId) -> Result<Option<u64>, String> {
    let buf = hv.console_buffer(vm).await.map_err(errstr)?;
    Ok(String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("OVM-GUEST: tick "))
        .filter_map(|n| n.trim().parse().ok())
        .next_back())
}

/// Waits until the guest prints a tick newer than `after` (the guest is running).
async fn wait_new_tick(
    hv: &XenHypervisor,
    vm: VmId,
    after: Option<u64>,
    limit: Duration,
) -> CheckResult {
    let t0 = Instant::now();
    loop {
        let now = last_tick(hv, vm).await?;
        if now.is_some() && now > after {
            return Ok(());
        }
        ensure!(
            t0.elapsed() < limit,
            "no tick after {after:?} within {limit:?} (last {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_state(hv: &XenHypervisor, vm: VmId, want: VmState, limit: Duration) -> CheckResult {
    let t0 = Instant::now();
    loop {
        let s = hv.state(vm).await.map_err(errstr)?;
        if s == want {
            return Ok(());
        }
        ensure!(
            t0.elapsed() < limit,
            "state stays {s}, expected {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn remove_all_vms(hv: &XenHypervisor) {
    match hv.list().await {
        Ok(vms) => {
            for (id, state) in vms {
                println!("OVM-XEN-NOTE removing leftover vm {id} ({state})");
                if let Err(e) = hv.kill(id).await {
                    println!("OVM-XEN-NOTE cannot kill {id}: {e}");
                }
                if let Err(e) = hv.undefine(id).await {
                    println!("OVM-XEN-NOTE cannot undefine {id}: {e}");
                }
            }
        }
        Err(e) => println!("OVM-XEN-NOTE cannot list leftover vms: {e}"),
    }
}

async fn run_all() -> u32 {
    let t_start = Instant::now();
    let env = Arc::new(Env::from_env());
    let xl = ProcessXl::new();
    let mut opts = XenOptions::new("/tmp/ovm-xen-state");
    opts.console_log_dir = env.console_dir.clone();
    // Under TCG on a busy host one `xl create` can take a minute.
    opts.command_timeout = Duration::from_secs(600);
    // Each `xl list` costs dom0 real time under TCG: watch, but not often.
    opts.watch_interval = Some(Duration::from_secs(20));
    let mut report = Report {
        passed: 0,
        failed: 0,
    };
    let hv = match XenHypervisor::connect(Arc::new(xl.clone()), opts).await {
        Ok(hv) => hv,
        Err(e) => {
            println!("OVM-XEN-CHECK FAILED connect: {e}");
            println!("OVM-XEN-SUMMARY passed=0 failed=1");
            return 1;
        }
    };
    record(&xl, "xl-info.txt", &["info"]).await;
    record(&xl, "xl-list-v-dom0.txt", &["list", "-v"]).await;
    record(&xl, "xl-list-l-dom0.json", &["list", "-l"]).await;

    let h = hv.clone();
    report
        .check("host_info", Duration::from_secs(60), async move {
            let info = h.host_info().await.map_err(errstr)?;
            println!("OVM-XEN-NOTE host_info {info:?}");
            println!("OVM-XEN-NOTE capabilities {:?}", h.capabilities());
            ensure!(info.cpus >= 1, "no CPUs: {info:?}");
            ensure!(
                info.memory_mib >= 1024 && info.free_memory_mib > 128,
                "memory: {info:?}"
            );
            ensure!(info.version.starts_with("4."), "version {:?}", info.version);
            ensure!(
                info.hostname == "ovm-xen-testbed",
                "hostname {:?}",
                info.hostname
            );
            let caps = h.capabilities();
            ensure!(
                caps.domain_types.contains(&DomainType::Pv),
                "no PV: {caps:?}"
            );
            ensure!(caps.pause && caps.snapshot && caps.console, "{caps:?}");
            Ok(())
        })
        .await;

    let (h, e) = (hv.clone(), env.clone());
    report
        .check(
            "hvm_is_unsupported_without_vmx",
            Duration::from_secs(60),
            async move {
                let caps = h.capabilities();
                if caps.domain_types.contains(&DomainType::Hvm) {
                    println!("OVM-XEN-NOTE this Xen offers HVM: nothing to refuse");
                    return Ok(());
                }
                let mut spec = e.guest_spec("ovm-xen-hvm");
                spec.domain_type = DomainType::Hvm;
                match h.define(&VmConfig::new(VmId::new(), spec)).await {
                    Err(Error::Unsupported { op, .. }) => {
                        println!("OVM-XEN-NOTE HVM refused: {op}");
                        Ok(())
                    }
                    other => Err(format!("expected Unsupported, got {other:?}")),
                }
            },
        )
        .await;

    let (h, e) = (hv.clone(), env.clone());
    report
        .check(
            "bad_config_refused_with_xl_message",
            Duration::from_secs(120),
            async move {
                let mut spec = e.guest_spec("ovm-xen-bad");
                spec.boot = BootSource::Kernel {
                    kernel: "/nonexistent/vmlinuz".into(),
                    initrd: None,
                    cmdline: String::new(),
                };
                let id = VmId::new();
                h.define(&VmConfig::new(id, spec)).await.map_err(errstr)?;
                let r = h.start(id).await;
                let state = h.state(id).await.map_err(errstr)?;
                h.undefine(id).await.map_err(errstr)?;
                match r {
                    Err(Error::Backend {
                        backend, message, ..
                    }) => {
                        println!("OVM-XEN-NOTE xl said: {}", message.replace('\n', " | "));
                        ensure!(backend == "xen", "backend {backend}");
                        ensure!(
                            message.contains("/nonexistent/vmlinuz") && message.contains("libxl"),
                            "message lacks xl's words: {message}"
                        );
                        ensure!(state == VmState::Stopped, "left {state}");
                        Ok(())
                    }
                    other => Err(format!("expected a Backend error, got {other:?}")),
                }
            },
        )
        .await;

    let (h, e, x) = (hv.clone(), env.clone(), xl.clone());
    report
        .check(
            "config_escaping_matches_xl_parser",
            Duration::from_secs(120),
            async move {
                // `xl -N create` parses the file exactly as `xl create` does and prints what it
                // understood, without creating anything.
                let name = r#"it's "quoted" #1; kernel="x""#;
                let cmdline = r#"console=hvc0 a="b c" d\e 'f'"#;
                let mut spec = e.guest_spec(name);
                spec.boot = BootSource::Kernel {
                    kernel: e.kernel.clone(),
                    initrd: None,
                    cmdline: cmdline.into(),
                };
                let id = VmId::new();
                h.define(&VmConfig::new(id, spec)).await.map_err(errstr)?;
                let cfg = h.config_path(id);
                let out = x
                    .run(
                        &["-N".into(), "create".into(), cfg.into_os_string()],
                        Duration::from_secs(60),
                    )
                    .await;
                h.undefine(id).await.map_err(errstr)?;
                let out = out.map_err(errstr)?;
                let json: serde_json::Value = serde_json::from_str(&out)
                    .map_err(|e| format!("xl -N create printed no JSON ({e}): {out}"))?;
                let got_name = json["c_info"]["name"].as_str().unwrap_or_default();
                let got_cmdline = json["b_info"]["cmdline"].as_str().unwrap_or_default();
                let got_kernel = json["b_info"]["kernel"].as_str().unwrap_or_default();
                ensure!(
                    got_name == name,
                    "xl read name {got_name:?}, wrote {name:?}"
                );
                ensure!(got_cmdline == cmdline, "xl read cmdline {got_cmdline:?}");
                ensure!(
                    Path::new(got_kernel) == e.kernel,
                    "xl read kernel {got_kernel:?}"
                );
                ensure!(
                    json["c_info"]["uuid"].as_str() == Some(id.to_string().as_str()),
                    "uuid {:?}",
                    json["c_info"]["uuid"]
                );
                Ok(())
            },
        )
        .await;

    let (h, e) = (hv.clone(), env.clone());
    report
        .check("conformance_suite", Duration::from_secs(600), async move {
            let cfg = SuiteConfig {
                boot: e.boot(""),
                domain_type: Some(DomainType::Pv),
                // The cloud kernel and its initramfs do not fit a 64 MiB PV domain.
                memory_mib: 128,
                op_timeout: Duration::from_secs(180),
                stop_timeout: Duration::from_secs(3),
            };
            conformance(&h, &cfg).await;
            Ok(())
        })
        .await;

    // A failed suite may leave its VMs behind; they would compete for the one CPU.
    remove_all_vms(&hv).await;

    // One guest for everything that needs a running one.
    let guest = VmId::new();
    let (h, e) = (hv.clone(), env.clone());
    let booted = report
        .check(
            "pv_guest_boots_and_prints_to_console",
            BOOT_TIMEOUT + Duration::from_secs(60),
            async move {
                h.define(&VmConfig::new(guest, e.guest_spec(GUEST_NAME)))
                    .await
                    .map_err(errstr)?;
                h.start(guest).await.map_err(errstr)?;
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Running,
                    "not running after start"
                );
                let took = wait_console(&h, guest, "OVM-GUEST: hello", BOOT_TIMEOUT).await?;
                println!(
                    "OVM-XEN-NOTE guest said hello {:.1} s after xl create",
                    took.as_secs_f64()
                );
                Ok(())
            },
        )
        .await;

    if booted {
        record(&xl, "xl-list-v-guest.txt", &["list", "-v"]).await;
        record(&xl, "xl-list-l-guest.json", &["list", "-l"]).await;
        record(&xl, "xl-uptime-guest.txt", &["uptime", GUEST_NAME]).await;

        let h = hv.clone();
        report
            .check(
                "stats_of_a_running_guest",
                Duration::from_secs(60),
                async move {
                    let s = h.stats(guest).await.map_err(errstr)?;
                    println!("OVM-XEN-NOTE stats {s:?}");
                    ensure!(s.memory_mib == 128, "memory {} MiB", s.memory_mib);
                    ensure!(s.cpu_time_ns > 0, "no CPU time");
                    ensure!(s.uptime_ms > 0, "no uptime");
                    let listed = h.list().await.map_err(errstr)?;
                    ensure!(
                        listed.contains(&(guest, VmState::Running)),
                        "list: {listed:?}"
                    );
                    Ok(())
                },
            )
            .await;

        let (h, x) = (hv.clone(), xl.clone());
        report
            .check("pause_and_unpause", Duration::from_secs(120), async move {
                h.pause(guest).await.map_err(errstr)?;
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Paused,
                    "not paused"
                );
                record(&x, "xl-list-v-paused.txt", &["list", "-v"]).await;
                // Let xenconsoled write out whatever the guest printed before the pause.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let before = last_tick(&h, guest).await?;
                tokio::time::sleep(Duration::from_secs(5)).await;
                let during = last_tick(&h, guest).await?;
                ensure!(
                    before == during,
                    "ticked while paused: {before:?} -> {during:?}"
                );
                h.resume(guest).await.map_err(errstr)?;
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Running,
                    "not running after unpause"
                );
                wait_new_tick(&h, guest, during, Duration::from_secs(60)).await
            })
            .await;

        let h = hv.clone();
        report
            .check("memory_and_vcpus", Duration::from_secs(120), async move {
                h.set_memory(guest, 100).await.map_err(errstr)?;
                let t0 = Instant::now();
                loop {
                    let m = h.stats(guest).await.map_err(errstr)?.memory_mib;
                    if m == 100 {
                        break;
                    }
                    ensure!(
                        t0.elapsed() < Duration::from_secs(60),
                        "memory stays {m} MiB"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                ensure!(
                    matches!(
                        h.set_memory(guest, 4096).await,
                        Err(Error::InvalidSpec { .. })
                    ),
                    "memory above max_memory_mib accepted"
                );
                h.set_vcpus(guest, 1).await.map_err(errstr)?;
                ensure!(
                    matches!(h.set_vcpus(guest, 2).await, Err(Error::InvalidSpec { .. })),
                    "vcpus above the maximum accepted"
                );
                h.set_memory(guest, 128).await.map_err(errstr)?;
                Ok(())
            })
            .await;

        let (h, e) = (hv.clone(), env.clone());
        report
            .check("live_migration", Duration::from_secs(300), async move {
                let config = VmConfig::new(guest, e.guest_spec(GUEST_NAME));
                if !h.capabilities().live_migration {
                    // Debian's Xen has no shadow paging, which PV migration needs to track
                    // dirty memory; under TCG there is no HAP either.
                    return match h.migrate_prepare(&config).await {
                        Err(Error::Unsupported { op, .. }) => {
                            println!("OVM-XEN-NOTE migration refused: {op}");
                            Ok(())
                        }
                        other => Err(format!("expected Unsupported, got {other:?}")),
                    };
                }
                let target = h.migrate_prepare(&config).await.map_err(errstr)?;
                h.migrate_send(guest, &target).await.map_err(errstr)?;
                wait_state(&h, guest, VmState::Running, Duration::from_secs(60)).await
            })
            .await;

        let (h, e) = (hv.clone(), env.clone());
        report
            .check("save_and_restore", Duration::from_secs(300), async move {
                let image = Path::new("/tmp/ovm-xen-it.save");
                let t0 = Instant::now();
                h.save(guest, image).await.map_err(errstr)?;
                println!(
                    "OVM-XEN-NOTE xl save took {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Stopped,
                    "running after save"
                );
                let size = std::fs::metadata(image).map_err(errstr)?.len();
                ensure!(size > 64 << 20, "save image only {size} bytes");
                let t0 = Instant::now();
                h.restore(&VmConfig::new(guest, e.guest_spec(GUEST_NAME)), image)
                    .await
                    .map_err(errstr)?;
                println!(
                    "OVM-XEN-NOTE xl restore took {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                let _ = std::fs::remove_file(image);
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Running,
                    "not running after restore"
                );
                // The restored guest goes on where it was: new ticks, no new boot.
                wait_new_tick(&h, guest, None, Duration::from_secs(90)).await?;
                let buf = h.console_buffer(guest).await.map_err(errstr)?;
                ensure!(
                    !String::from_utf8_lossy(&buf).contains("OVM-GUEST: hello"),
                    "the guest booted again instead of resuming"
                );
                Ok(())
            })
            .await;

        let h = hv.clone();
        report
            .check("graceful_shutdown", Duration::from_secs(180), async move {
                let t0 = Instant::now();
                h.stop(guest, Duration::from_secs(120)).await.map_err(errstr)?;
                println!("OVM-XEN-NOTE shutdown took {:.1} s", t0.elapsed().as_secs_f64());
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Stopped,
                    "still there after stop"
                );
                let buf = String::from_utf8_lossy(&h.console_buffer(guest).await.map_err(errstr)?)
                    .into_owned();
                ensure!(
                    buf.contains("reboot: "),
                    "the guest did not power itself off (destroyed at the timeout?); console ends {:?}",
                    buf.chars().rev().take(200).collect::<String>()
                );
                Ok(())
            })
            .await;

        let h = hv.clone();
        report
            .check("destroy", Duration::from_secs(120), async move {
                h.start(guest).await.map_err(errstr)?;
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Running,
                    "not running"
                );
                h.kill(guest).await.map_err(errstr)?;
                ensure!(
                    h.state(guest).await.map_err(errstr)? == VmState::Stopped,
                    "still there after destroy"
                );
                h.undefine(guest).await.map_err(errstr)?;
                Ok(())
            })
            .await;
    } else {
        for name in [
            "stats_of_a_running_guest",
            "pause_and_unpause",
            "memory_and_vcpus",
            "live_migration",
            "save_and_restore",
            "graceful_shutdown",
            "destroy",
        ] {
            report.skip_dependent(name, "the PV guest did not boot");
        }
        let _ = hv.kill(guest).await;
    }

    println!(
        "OVM-XEN-SUMMARY passed={} failed={} seconds={:.1}",
        report.passed,
        report.failed,
        t_start.elapsed().as_secs_f64()
    );
    report.failed
}
