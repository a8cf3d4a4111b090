use serde::{Deserialize, Serialize};

use crate::id::{JobId, Timestamp};

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It worked.
    Success,
    /// It failed (and was rolled back where possible).
    Failure,
    /// Informational: something happened (a VM crashed, a guest misbehaved).
    Info,
}

/// One entry of the audit history: who did what to which object, when, with what outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, assigned by the store (0 before it is stored).
    pub seq: u64,
    /// When.
    pub time: Timestamp,
    /// Who (`cli:root`, `manager`, `ha`, `drs`, a guest...).
    pub initiator: String,
    /// Kind of the object acted on.
    pub object_kind: String,
    /// Id of the object acted on.
    pub object_id: String,
    /// The action (`vm.start`, `vm.crashed`, ...).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Details for people.
    pub detail: String,
    /// The job it belongs to.
    pub job: Option<JobId>,
}

/// Which events to return.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only events about this object id.
    pub object_id: Option<String>,
    /// Only events at or after this time.
    pub since: Option<Timestamp>,
    /// Only events before this time.
    pub until: Option<Timestamp>,
    /// Most events to return (newest first when limited).
    pub limit: Option<u32>,
}
