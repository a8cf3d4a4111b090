//! Job engine tests: completion, rollback on failure and abort, recovery, and a proptest
//! over random failure and abort points.

use std::collections::BTreeSet;
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::id::PoolId;
use crate::model::ServerPool;
use crate::store::{Object, SqliteStore};

/// An executor for store undos plus `Custom { handler: "release" }`, which frees a
/// "resource" from a shared set (standing in for backend state).
struct TestUndo {
    store: Arc<dyn Store>,
    resources: Arc<StdMutex<BTreeSet<String>>>,
    fail_release: bool,
}

#[async_trait]
impl UndoExecutor for TestUndo {
    async fn undo(&self, undo: &Undo) -> Result<()> {
        if undo_in_store(&*self.store, undo).await? {
            return Ok(());
        }
        match undo {
            Undo::Custom { handler, payload } if handler == "release" => {
                if self.fail_release {
                    return Err(Error::backend("test", "release refused"));
                }
                let name = payload.as_str().unwrap_or_default().to_string();
                self.resources.lock().unwrap().remove(&name);
                Ok(())
            }
            other => Err(Error::unsupported(format!("{other:?}"), "test")),
        }
    }
}

struct World {
    store: Arc<dyn Store>,
    engine: Arc<JobEngine>,
    resources: Arc<StdMutex<BTreeSet<String>>>,
}

async fn world_with(store: Arc<dyn Store>, fail_release: bool) -> World {
    let resources = Arc::new(StdMutex::new(BTreeSet::new()));
    let undo = Arc::new(TestUndo {
        store: store.clone(),
        resources: resources.clone(),
        fail_release,
    });
    let owner = OwnerLease::register(store.clone(), DEFAULT_LEASE_TTL, "test")
        .await
        .unwrap();
    World {
        engine: JobEngine::new(store.clone(), undo, owner),
        store,
        resources,
    }
}

async fn world() -> World {
    world_with(Arc::new(SqliteStore::in_memory().unwrap()), false).await
}

fn pool(name: &str) -> ServerPool {
    ServerPool {
        id: PoolId::new(),
        name: name.into(),
        servers: vec![],
        repositories: vec![],
        ha_enabled: false,
        policies: Default::default(),
        max_servers: 32,
    }
}

/// What a step of a generated job does.
#[derive(Debug, Clone, Copy)]
enum Act {
    CreateObject,
    Acquire,
    Fail,
    Abort,
    Sleep,
}

fn spec(n: usize) -> JobSpec {
    let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    JobSpec::new("test.run", "test job", None, "test", &refs)
}

/// Runs one job whose steps do `acts`; returns the handle.
async fn run(w: &World, acts: Vec<Act>, tag: usize) -> JobHandle<usize> {
    let resources = w.resources.clone();
    w.engine
        .spawn(spec(acts.len()), move |ctx: JobCtx| async move {
            for (i, act) in acts.into_iter().enumerate() {
                let name = format!("s{i}");
                let c = ctx.clone();
                let res = resources.clone();
                let step_name = name.clone();
                ctx.step(&step_name, async move {
                    match act {
                        Act::CreateObject => {
                            let p = pool(&format!("p{tag}-{i}"));
                            let undo = Undo::DeleteObject {
                                kind: ServerPool::KIND.into(),
                                id: p.key(),
                            };
                            c.commit(
                                &name,
                                vec![WriteOp::put(&p, Expect::Absent)?],
                                vec![undo],
                                vec![],
                            )
                            .await?;
                            Ok(())
                        }
                        Act::Acquire => {
                            let r = format!("r{tag}-{i}");
                            c.record_undo(
                                &name,
                                Undo::Custom {
                                    handler: "release".into(),
                                    payload: r.clone().into(),
                                },
                            )
                            .await?;
                            res.lock().unwrap().insert(r);
                            Ok(())
                        }
                        Act::Fail => Err(Error::backend("test", format!("step {i} fails"))),
                        Act::Abort => {
                            c.check_abort()?;
                            Err(Error::Aborted {
                                what: "requested".into(),
                            })
                        }
                        Act::Sleep => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            Ok(())
                        }
                    }
                })
                .await?;
            }
            Ok(tag)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn completes_and_records_history() {
    let w = world().await;
    let h = run(&w, vec![Act::CreateObject, Act::Acquire], 7).await;
    assert_eq!(h.wait(Duration::from_secs(5)).await.unwrap(), 7);
    let job = w
        .store
        .get_obj::<Job>(&h.id().to_string())
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.progress.percent, 100.0);
    assert!(job.steps.iter().all(|s| s.state == StepState::Done));
    assert_eq!(w.store.list("pool").await.unwrap().len(), 1);
    let ev = w.store.events(&Default::default()).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].outcome, Outcome::Success);
}

#[tokio::test]
async fn failure_rolls_back_everything() {
    let w = world().await;
    let h = run(
        &w,
        vec![
            Act::CreateObject,
            Act::Acquire,
            Act::CreateObject,
            Act::Fail,
        ],
        1,
    )
    .await;
    let err = h.wait(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    let job = h.job();
    assert_eq!(job.state, JobState::RolledBack);
    assert!(job.error.unwrap().contains("step 3 fails"));
    assert!(w.store.list("pool").await.unwrap().is_empty());
    assert!(w.resources.lock().unwrap().is_empty());
}

#[tokio::test]
async fn failed_names_what_could_not_be_undone() {
    let w = world_with(Arc::new(SqliteStore::in_memory().unwrap()), true).await;
    let h = run(&w, vec![Act::Acquire, Act::Fail], 2).await;
    assert!(h.wait(Duration::from_secs(5)).await.is_err());
    let job = h.job();
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.rollback_errors.len(), 1);
    assert!(
        job.rollback_errors[0].contains("release refused"),
        "{:?}",
        job.rollback_errors
    );
}

/// The step states of a job as its stored record has them.
async fn stored_steps(w: &World, id: JobId) -> Vec<StepState> {
    let stored: Job = w
        .store
        .get_obj(&id.to_string())
        .await
        .unwrap()
        .unwrap()
        .value;
    stored.steps.iter().map(|s| s.state).collect()
}

#[tokio::test]
async fn abort_interrupts_a_step_and_wait_times_out_before() {
    let w = world().await;
    let h = w
        .engine
        .spawn(spec(2), |ctx: JobCtx| async move {
            let p = pool("slow");
            let undo = Undo::DeleteObject {
                kind: "pool".into(),
                id: p.key(),
            };
            ctx.step(
                "s0",
                ctx.commit(
                    "s0",
                    vec![WriteOp::put(&p, Expect::Absent)?],
                    vec![undo],
                    vec![],
                ),
            )
            .await?;
            ctx.step("s1", async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            })
            .await
        })
        .await
        .unwrap();
    let err = h.wait(Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    // The running step's progress reaches the store while it runs (after the lag), not
    // only with the job's next write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored_steps(&w, h.id()).await,
        [StepState::Done, StepState::Running]
    );
    h.abort();
    let err = h.wait(Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    assert_eq!(h.state(), JobState::RolledBack);
    assert!(w.store.list("pool").await.unwrap().is_empty());
    // The interrupted step is recorded as failed, not left running.
    assert_eq!(
        stored_steps(&w, h.id()).await,
        [StepState::Undone, StepState::Failed]
    );
    // Aborting what has ended is refused, whether or not it is still known as live.
    let err = w.engine.abort(h.id()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err}");
}

/// An abort asked through another engine (another process) on the same store is flagged
/// in the job's record; the engine running the job notices it and rolls back, and the
/// steps after it never run.
#[tokio::test]
async fn an_abort_from_another_process_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ovm.db");
    let here = world_with(Arc::new(SqliteStore::open(&path).unwrap()), false).await;
    let there = world_with(Arc::new(SqliteStore::open(&path).unwrap()), false).await;
    let h = here
        .engine
        .spawn(spec(3), |ctx: JobCtx| async move {
            let first = pool("first");
            let undo = Undo::DeleteObject {
                kind: "pool".into(),
                id: first.key(),
            };
            let write = WriteOp::put(&first, Expect::Absent)?;
            ctx.step("s0", ctx.commit("s0", vec![write], vec![undo], vec![]))
                .await?;
            ctx.step("s1", async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                Ok(())
            })
            .await?;
            let late = WriteOp::put(&pool("late"), Expect::Absent)?;
            ctx.step("s2", ctx.commit("s2", vec![late], vec![], vec![]))
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!there.engine.is_live(h.id()));
    there.engine.abort(h.id()).await.unwrap();
    let err = h.wait(Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err}");
    assert_eq!(h.state(), JobState::RolledBack);
    assert!(here.store.list("pool").await.unwrap().is_empty());
}

/// A store whose commits take longer than the progress lag.
struct SlowStore(SqliteStore);

#[async_trait]
impl Store for SlowStore {
    fn backend(&self) -> &str {
        "slow"
    }
    async fn get(&self, kind: &str, id: &str) -> Result<Option<crate::store::Record>> {
        self.0.get(kind, id).await
    }
    async fn list(&self, kind: &str) -> Result<Vec<crate::store::Record>> {
        self.0.list(kind).await
    }
    async fn commit(&self, writes: &[WriteOp], events: &[Event]) -> Result<Vec<u64>> {
        tokio::time::sleep(Duration::from_millis(250)).await;
        self.0.commit(writes, events).await
    }
    async fn events(&self, q: &crate::model::EventQuery) -> Result<Vec<Event>> {
        self.0.events(q).await
    }
    async fn changes(
        &self,
        kinds: &[&str],
        since: u64,
        limit: usize,
    ) -> Result<Vec<crate::store::FeedEntry>> {
        self.0.changes(kinds, since, limit).await
    }
    async fn head(&self) -> Result<u64> {
        self.0.head().await
    }
    async fn damaged(&self) -> Result<Vec<crate::store::Damaged>> {
        self.0.damaged().await
    }
    async fn quarantine(&self, kind: &str, id: &str, reason: &str) -> Result<bool> {
        self.0.quarantine(kind, id, reason).await
    }
}

/// A step whose own write is still in flight when the progress lag runs out must not wait
/// on itself: the job completes.
#[tokio::test]
async fn a_slow_write_inside_a_step_does_not_block_its_progress_write() {
    let w = world_with(
        Arc::new(SlowStore(SqliteStore::in_memory().unwrap())),
        false,
    )
    .await;
    let h = w
        .engine
        .spawn(spec(1), |ctx: JobCtx| async move {
            let p = pool("slowly");
            let write = WriteOp::put(&p, Expect::Absent)?;
            ctx.step("s0", ctx.commit("s0", vec![write], vec![], vec![]))
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    h.wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(h.state(), JobState::Completed);
}

#[tokio::test]
async fn recovery_rolls_back_jobs_of_a_dead_process() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
    // A job as a crashed process left it: running, one object created with its undo.
    let p = pool("orphan");
    let mut job = Job {
        id: JobId::new(),
        kind: "test".into(),
        description: "orphan".into(),
        target: None,
        initiator: "test".into(),
        state: JobState::Running,
        steps: vec![JobStep {
            name: "s0".into(),
            state: StepState::Done,
        }],
        undo_log: vec![],
        progress: Default::default(),
        abort_requested: false,
        created_at: Timestamp::now(),
        started_at: None,
        finished_at: None,
        error: None,
        rollback_errors: vec![],
        result: None,
        owner: None,
    };
    job.undo_log.push(crate::model::UndoRecord {
        step: "s0".into(),
        undo: Undo::DeleteObject {
            kind: "pool".into(),
            id: p.key(),
        },
    });
    store
        .commit(
            &[
                WriteOp::put(&job, Expect::Absent).unwrap(),
                WriteOp::put(&p, Expect::Absent).unwrap(),
            ],
            &[],
        )
        .await
        .unwrap();
    let w = world_with(store, false).await;
    assert_eq!(w.engine.recover().await.unwrap(), vec![job.id]);
    let after = w
        .store
        .get_obj::<Job>(&job.id.to_string())
        .await
        .unwrap()
        .unwrap()
        .value;
    assert_eq!(after.state, JobState::RolledBack);
    assert!(after.error.unwrap().contains("interrupted"));
    assert!(w.store.list("pool").await.unwrap().is_empty());
    // Idempotent: nothing left to recover.
    assert!(w.engine.recover().await.unwrap().is_empty());
}

#[tokio::test]
async fn progress_stream_ends_when_job_finishes() {
    use futures::StreamExt;
    let w = world().await;
    let h = run(&w, vec![Act::Sleep, Act::Sleep, Act::Sleep], 3).await;
    let seen: Vec<Progress> = h.progress_stream().collect().await;
    assert!(!seen.is_empty());
    assert_eq!(seen.last().unwrap().percent, 100.0);
    assert!(seen.windows(2).all(|p| p[0].percent <= p[1].percent));
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => Just(Act::CreateObject),
        4 => Just(Act::Acquire),
        1 => Just(Act::Fail),
        1 => Just(Act::Abort),
        1 => Just(Act::Sleep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever fails or aborts where: every job ends completed with all its effects, or
    /// rolled back with none, and the store holds exactly the completed jobs' objects.
    #[test]
    fn every_job_completes_or_is_fully_compensated(jobs in prop::collection::vec(prop::collection::vec(act(), 1..8), 1..6)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let w = world().await;
            let mut handles = Vec::new();
            for (tag, acts) in jobs.iter().enumerate() {
                handles.push((run(&w, acts.clone(), tag).await, acts.clone(), tag));
            }
            let mut expected_pools = BTreeSet::new();
            let mut expected_res = BTreeSet::new();
            for (h, acts, tag) in handles {
                let r = h.wait(Duration::from_secs(10)).await;
                let ok = acts.iter().all(|a| !matches!(a, Act::Fail | Act::Abort));
                prop_assert_eq!(r.is_ok(), ok);
                let job = h.job();
                if ok {
                    prop_assert_eq!(job.state, JobState::Completed);
                    for (i, a) in acts.iter().enumerate() {
                        match a {
                            Act::CreateObject => { expected_pools.insert(format!("p{tag}-{i}")); }
                            Act::Acquire => { expected_res.insert(format!("r{tag}-{i}")); }
                            _ => {}
                        }
                    }
                } else {
                    prop_assert_eq!(job.state, JobState::RolledBack);
                }
            }
            let pools: BTreeSet<String> = w.store.list_obj::<ServerPool>().await.unwrap()
                .into_iter().map(|v| v.value.name).collect();
            prop_assert_eq!(pools, expected_pools);
            prop_assert_eq!(w.resources.lock().unwrap().clone(), expected_res);
            let unfinished = w.store.list_obj::<Job>().await.unwrap().into_iter()
                .filter(|j| !j.value.state.is_finished()).count();
            prop_assert_eq!(unfinished, 0);
            Ok(())
        })?;
    }
}
