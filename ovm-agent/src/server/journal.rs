//! The request journal: what became of each state-changing request, by request id, kept
//! on disk so that a retry — after a timeout, a reconnect or an agent restart — is
//! answered from the first outcome and never applied twice.
//!
//! A request is written `begun` before the hypervisor is touched and `done` with its
//! outcome after. One found `begun` but not `done` when the agent starts was cut short by
//! the agent's own end: its retry gets an error saying so (the hypervisor may or may not
//! have acted; the VM's state tells), never a second attempt.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ovm_core::sync::lock;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::protocol::{Outcome, WireError};

/// Requests remembered; older ones are forgotten first.
pub const KEEP: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
enum Line {
    Begun {
        id: Uuid,
        op: String,
    },
    Done {
        id: Uuid,
        op: String,
        outcome: Outcome,
    },
}

enum Entry {
    InFlight { op: String, done: Arc<Notify> },
    Done { op: String, outcome: Outcome },
}

/// What to do with a request.
pub enum Admission {
    /// New: run it, then call [`Journal::finish`].
    Run,
    /// Seen before: this is its outcome.
    Answered(Outcome),
}

/// The journal of one agent.
pub struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    entries: Mutex<(HashMap<Uuid, Entry>, VecDeque<Uuid>)>,
}

impl Journal {
    /// Opens the journal in `dir`, compacting it to the last [`KEEP`] requests.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("requests.jsonl");
        let mut entries: HashMap<Uuid, Entry> = HashMap::new();
        let mut order: VecDeque<Uuid> = VecDeque::new();
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines() {
                // A torn last line (a crash mid-write) is skipped: its request is `begun`.
                let Ok(line) = serde_json::from_str::<Line>(&line?) else {
                    continue;
                };
                let (id, op, outcome) = match line {
                    Line::Begun { id, op } => (id, op.clone(), interrupted(&op, id)),
                    Line::Done { id, op, outcome } => (id, op, outcome),
                };
                if !entries.contains_key(&id) {
                    order.push_back(id);
                }
                entries.insert(id, Entry::Done { op, outcome });
            }
        }
        while order.len() > KEEP {
            if let Some(old) = order.pop_front() {
                entries.remove(&old);
            }
        }
        // Rewrite what is kept, then append from there.
        let tmp = path.with_extension("tmp");
        {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for id in &order {
                if let Some(Entry::Done { op, outcome }) = entries.get(id) {
                    let line = Line::Done {
                        id: *id,
                        op: op.clone(),
                        outcome: outcome.clone(),
                    };
                    serde_json::to_writer(&mut w, &line)?;
                    w.write_all(b"\n")?;
                }
            }
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Journal {
            path,
            file: Mutex::new(file),
            entries: Mutex::new((entries, order)),
        })
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Admits request `id` doing `op`: run it, or answer from before (waiting for a copy
    /// still in flight).
    pub async fn admit(&self, id: Uuid, op: &str) -> Result<Admission, WireError> {
        loop {
            let wait = {
                let mut guard = lock(&self.entries);
                let (entries, order) = &mut *guard;
                match entries.get(&id) {
                    Some(Entry::Done { op: seen, outcome }) => {
                        same_op(id, seen, op)?;
                        return Ok(Admission::Answered(outcome.clone()));
                    }
                    Some(Entry::InFlight { op: seen, done }) => {
                        same_op(id, seen, op)?;
                        done.clone()
                    }
                    None => {
                        self.append(&Line::Begun {
                            id,
                            op: op.to_string(),
                        })
                        .map_err(|e| refused(500, format!("request journal: {e}")))?;
                        entries.insert(
                            id,
                            Entry::InFlight {
                                op: op.to_string(),
                                done: Arc::new(Notify::new()),
                            },
                        );
                        order.push_back(id);
                        while order.len() > KEEP {
                            if let Some(old) = order.pop_front() {
                                entries.remove(&old);
                            }
                        }
                        return Ok(Admission::Run);
                    }
                }
            };
            let notified = wait.notified();
            // Finished between the lookup and here: look again.
            if matches!(lock(&self.entries).0.get(&id), Some(Entry::InFlight { .. })) {
                notified.await;
            }
        }
    }

    /// Records the outcome of a request admitted with [`Admission::Run`].
    pub fn finish(&self, id: Uuid, op: &str, outcome: &Outcome) {
        let line = Line::Done {
            id,
            op: op.to_string(),
            outcome: outcome.clone(),
        };
        if let Err(e) = self.append(&line) {
            tracing::error!(%id, "request journal: cannot record an outcome: {e}");
        }
        let mut guard = lock(&self.entries);
        if let Some(Entry::InFlight { done, .. }) = guard.0.insert(
            id,
            Entry::Done {
                op: op.to_string(),
                outcome: outcome.clone(),
            },
        ) {
            done.notify_waiters();
        }
    }

    fn append(&self, line: &Line) -> std::io::Result<()> {
        let mut text = serde_json::to_vec(line)?;
        text.push(b'\n');
        let mut f = lock(&self.file);
        f.write_all(&text)?;
        // The outcome must outlive a crash of the agent or of its machine.
        f.sync_data()
    }
}

fn same_op(id: Uuid, seen: &str, op: &str) -> Result<(), WireError> {
    if seen == op {
        Ok(())
    } else {
        Err(refused(
            409,
            format!("request id {id} was used for {seen}; this request is {op}"),
        ))
    }
}

fn interrupted(op: &str, id: Uuid) -> Outcome {
    Outcome::Error(WireError::Backend {
        backend: "agent".into(),
        message: format!(
            "request {id} ({op}) was in flight when the agent stopped; whether it took \
             effect is unknown (the VM's state says)"
        ),
    })
}

fn refused(status: u16, message: String) -> WireError {
    WireError::Refused { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;

    #[tokio::test]
    async fn a_retry_is_answered_from_the_first_outcome_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let id = Uuid::new_v4();
        assert!(matches!(
            j.admit(id, "start").await.unwrap(),
            Admission::Run
        ));
        j.finish(id, "start", &Outcome::Ok(Reply::Done));
        assert!(matches!(
            j.admit(id, "start").await.unwrap(),
            Admission::Answered(Outcome::Ok(Reply::Done))
        ));
        let other = j.admit(id, "kill").await.err().unwrap();
        assert!(matches!(other, WireError::Refused { status: 409, .. }));
        // Begun, never finished: the agent died in between.
        let cut = Uuid::new_v4();
        assert!(matches!(
            j.admit(cut, "define").await.unwrap(),
            Admission::Run
        ));
        drop(j);
        let j = Journal::open(dir.path()).unwrap();
        assert!(matches!(
            j.admit(id, "start").await.unwrap(),
            Admission::Answered(Outcome::Ok(Reply::Done))
        ));
        match j.admit(cut, "define").await.unwrap() {
            Admission::Answered(Outcome::Error(WireError::Backend { message, .. })) => {
                assert!(
                    message.contains("in flight when the agent stopped"),
                    "{message}"
                )
            }
            _ => panic!("an interrupted request ran again"),
        }
    }

    #[tokio::test]
    async fn a_copy_arriving_while_the_first_runs_waits_for_its_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(dir.path()).unwrap());
        let id = Uuid::new_v4();
        assert!(matches!(j.admit(id, "stop").await.unwrap(), Admission::Run));
        let j2 = j.clone();
        let copy = tokio::spawn(async move { j2.admit(id, "stop").await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!copy.is_finished());
        j.finish(id, "stop", &Outcome::Ok(Reply::Done));
        let got = tokio::time::timeout(std::time::Duration::from_secs(2), copy)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(got, Admission::Answered(Outcome::Ok(Reply::Done))));
    }

    #[test]
    fn a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("requests.jsonl"),
            b"{\"state\":\"done\",\"id\":",
        )
        .unwrap();
        assert!(Journal::open(dir.path()).is_ok());
    }
}
