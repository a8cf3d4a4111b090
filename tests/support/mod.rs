//! Running the `ovm` program on a temporary store, as a user would: shared by the
//! command-line tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The `ovm` command on `db`, not yet run.
pub fn command(db: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ovm"));
    c.arg("--db").arg(db).args(args).env_remove("OVM_DB");
    c
}

/// Runs `ovm` on `db` and waits.
pub fn ovm(db: &Path, args: &[&str]) -> Output {
    command(db, args).output().expect("run ovm")
}

/// Starts `ovm` on `db` in the background (output captured).
pub fn spawn(db: &Path, args: &[&str]) -> Child {
    command(db, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ovm")
}

/// Runs `ovm`, which must succeed; returns its standard output.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let out = ovm(db, args);
    assert!(
        out.status.success(),
        "ovm {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ovm --json`, which must succeed; returns what it printed.
pub fn json(db: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).expect("valid JSON")
}

/// Runs `ovm`, which must fail as a user error (exit 2); returns its error message.
pub fn user_error(db: &Path, args: &[&str]) -> String {
    let out = ovm(db, args);
    assert_eq!(
        out.status.code(),
        Some(2),
        "ovm {args:?} should fail as a user error: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("error: "), "stderr: {err}");
    err
}

/// Runs the same command line in `n` processes at once; returns their outputs in order.
pub fn in_parallel(db: &Path, n: usize, args: impl Fn(usize) -> Vec<String>) -> Vec<Output> {
    let children: Vec<Child> = (0..n)
        .map(|i| {
            let a = args(i);
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            spawn(db, &refs)
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait for ovm"))
        .collect()
}

/// Pids of the VMM processes of a test's store.
pub fn vmms_under(dir: &Path) -> Vec<i32> {
    ovm_backend_kvm::procfs::processes_mentioning(dir)
}

/// Kills the VMMs under its directory when dropped, so a failing test leaks none.
pub struct KillVmmsOnDrop(pub std::path::PathBuf);

impl Drop for KillVmmsOnDrop {
    fn drop(&mut self) {
        for pid in vmms_under(&self.0) {
            signal(pid, "KILL");
        }
    }
}

/// Sends a signal (`KILL`, `STOP`, `CONT`) to a process.
pub fn signal(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// A sim pool `p` of `servers` servers `h1`... of the given size.
pub fn sim_pool(db: &Path, servers: usize, address: &str) {
    ok(db, &["pool", "create", "p"]);
    for i in 1..=servers {
        ok(
            db,
            &["server", "add", "p", &format!("h{i}"), "--address", address],
        );
    }
}

/// Makes, through the library, a template `name` of `vcpus` and `memory_mib` whose disk is
/// the existing volume `volume` of repository `r`, after `fill` has written that volume's
/// file (given its path). (No command makes a template from a volume.)
pub fn record_template(
    dir: &Path,
    db: &Path,
    volume: &str,
    name: &str,
    (vcpus, memory_mib): (u32, u64),
    fill: impl FnOnce(&Path),
) {
    use ovm::job::JobSpec;
    use ovm::manager::ImportRecord;
    use ovm::model::{DiskSpec, Template, VmSpec};
    use ovm::storage::VolumeAccess;

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mgr = ovm::Manager::open(db, ovm::backends::local_options(dir, "test").unwrap())
            .await
            .unwrap();
        let (repo, plugin) = mgr.storage_for("r").unwrap();
        let base = mgr.find_volume("r", volume).await.unwrap();
        let VolumeAccess::Path { path, .. } = plugin.volume_access(repo.id, base.id).await.unwrap()
        else {
            panic!("fs volumes are paths")
        };
        fill(&path);
        let mut spec = VmSpec::new("tmpl", vcpus, memory_mib);
        spec.disks.push(DiskSpec {
            volume: base.id,
            read_only: false,
            device: None,
        });
        let rec = ImportRecord {
            pool: repo.pool.unwrap(),
            templates: vec![Template {
                id: ovm::TemplateId::new(),
                name: name.into(),
                repo: repo.id,
                spec,
                volumes: vec![base.id],
                description: String::new(),
            }],
            assembly: None,
            networks: vec![],
        };
        let m = mgr.clone();
        let spec = JobSpec::new(
            "test.template",
            "make a template",
            None,
            "test",
            &["record"],
        );
        mgr.run_job(spec, move |ctx| async move {
            ctx.step("record", m.record_import(&ctx, "record", rec))
                .await
        })
        .await
        .unwrap()
        .join()
        .await
        .unwrap();
        mgr.close().await.unwrap();
    });
}
