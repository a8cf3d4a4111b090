use serde::{Deserialize, Serialize};

use crate::id::{InstanceId, JobId, RepoId, ServerId, Timestamp, VmId, VolumeId};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Created, not yet running.
    Pending,
    /// Running its steps.
    Running,
    /// A step failed or an abort was asked: undoing what was done.
    RollingBack,
    /// All steps done.
    Completed,
    /// Everything that was done has been undone.
    RolledBack,
    /// Failed and could not undo everything; `Job::rollback_errors` says what is left.
    Failed,
}

impl JobState {
    /// True once the job will not change any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::RolledBack | JobState::Failed
        )
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::RollingBack => "rolling_back",
            JobState::Completed => "completed",
            JobState::RolledBack => "rolled_back",
            JobState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not started.
    Pending,
    /// Running.
    Running,
    /// Done.
    Done,
    /// Failed.
    Failed,
    /// Done, then undone by a rollback.
    Undone,
}

/// One named step of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStep {
    /// Its name (`place`, `define`, `start`, ...).
    pub name: String,
    /// Its state.
    pub state: StepState,
}

/// How far a job has come.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Percent complete, 0–100.
    pub percent: f64,
    /// Steps done.
    pub steps_done: u32,
    /// Steps in all.
    pub steps_total: u32,
}

/// A compensation: how to undo what a step did, as data, so that a manager restarted after
/// a crash can still carry it out. Every undo is idempotent (undoing twice is harmless).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Undo {
    /// Delete a stored object if it exists.
    DeleteObject {
        /// Its kind.
        kind: String,
        /// Its id.
        id: String,
    },
    /// Put back a stored object as it was.
    RestoreObject {
        /// Its kind.
        kind: String,
        /// Its id.
        id: String,
        /// Its former content.
        data: serde_json::Value,
    },
    /// Make sure a VM is not running on a server (kill it if it is).
    KillVm {
        /// The server.
        server: ServerId,
        /// The VM.
        vm: VmId,
    },
    /// Remove a VM's definition from a server.
    UndefineVm {
        /// The server.
        server: ServerId,
        /// The VM.
        vm: VmId,
    },
    /// Delete a volume from a repository.
    DeleteVolume {
        /// The repository.
        repo: RepoId,
        /// The volume.
        volume: VolumeId,
    },
    /// Delete the volume of this name from a repository, if one exists that no stored
    /// record claims. Recorded before a volume is made (its id is known only after), so
    /// that a process killed between making and recording it leaves nothing behind.
    DeleteVolumeNamed {
        /// The repository.
        repo: RepoId,
        /// The volume's name.
        name: String,
    },
    /// An undo carried out by a handler registered by name (extensions).
    Custom {
        /// Handler name.
        handler: String,
        /// Its argument.
        payload: serde_json::Value,
    },
}

/// An undo registered by a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UndoRecord {
    /// The step that registered it.
    pub step: String,
    /// What to do.
    pub undo: Undo,
}

/// A job: one state-changing operation, persisted with its steps, progress and outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// What it does (`vm.start`, `pool.create`, ...).
    pub kind: String,
    /// One line for people: "start vm web-01".
    pub description: String,
    /// The kind and id of the object it works on.
    pub target: Option<(String, String)>,
    /// Who started it.
    pub initiator: String,
    /// Its state.
    pub state: JobState,
    /// Its steps, in order.
    pub steps: Vec<JobStep>,
    /// Compensations registered so far, in order.
    pub undo_log: Vec<UndoRecord>,
    /// Progress.
    pub progress: Progress,
    /// An abort was asked.
    pub abort_requested: bool,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it started running.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// Why it did not complete.
    pub error: Option<String>,
    /// What could not be undone (state `Failed`).
    pub rollback_errors: Vec<String>,
    /// The job's result, as JSON (e.g. the id it created).
    pub result: Option<serde_json::Value>,
    /// The manager running it (absent in jobs of stores written before ownership).
    #[serde(default)]
    pub owner: Option<InstanceId>,
}

impl std::fmt::Display for Undo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undo::DeleteObject { kind, id } => write!(f, "delete {kind} {id}"),
            Undo::RestoreObject { kind, id, .. } => write!(f, "restore {kind} {id} as it was"),
            Undo::KillVm { server, vm } => write!(f, "kill vm {vm} on server {server}"),
            Undo::UndefineVm { server, vm } => write!(f, "undefine vm {vm} on server {server}"),
            Undo::DeleteVolume { repo, volume } => {
                write!(f, "delete volume {volume} in repository {repo}")
            }
            Undo::DeleteVolumeNamed { repo, name } => {
                write!(
                    f,
                    "delete volume {name:?} in repository {repo} if unrecorded"
                )
            }
            Undo::Custom { handler, .. } => write!(f, "custom undo {handler}"),
        }
    }
}
