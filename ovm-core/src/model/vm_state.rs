//! The VM state machine: one table of the moves a VM's record may make, and one of the
//! states each operation may start from. The manager checks every state it records
//! against the first, and every operation it accepts against the second, so no sequence
//! of operations, failures and guest events reaches a state nobody planned for.

use super::VmState;

/// An operation on a VM, as a user asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmOp {
    /// Place and start it.
    Start,
    /// Shut it down (the guest is asked first).
    Stop,
    /// Pull the plug.
    Kill,
    /// Stop its vCPUs, keeping memory.
    Pause,
    /// Let a paused VM run again.
    Resume,
    /// Move it to another server.
    Migrate,
    /// Remove its record.
    Delete,
}

impl VmOp {
    /// The verb, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            VmOp::Start => "start",
            VmOp::Stop => "stop",
            VmOp::Kill => "kill",
            VmOp::Pause => "pause",
            VmOp::Resume => "resume",
            VmOp::Migrate => "migrate",
            VmOp::Delete => "delete",
        }
    }

    /// Every operation.
    pub const ALL: [VmOp; 7] = [
        VmOp::Start,
        VmOp::Stop,
        VmOp::Kill,
        VmOp::Pause,
        VmOp::Resume,
        VmOp::Migrate,
        VmOp::Delete,
    ];

    /// The states the operation may start from.
    pub fn allowed_from(self, state: VmState) -> bool {
        use VmState::*;
        match self {
            VmOp::Start => matches!(state, Stopped | Crashed),
            // A crashed VM is stopped or killed to clean up what its server still holds; a
            // kill also ends a stop that hangs.
            VmOp::Stop => matches!(state, Running | Paused | Crashed),
            VmOp::Kill => matches!(state, Running | Paused | Crashed | Stopping),
            VmOp::Pause => state == Running,
            VmOp::Resume => state == Paused,
            VmOp::Migrate => matches!(state, Running | Paused),
            VmOp::Delete => matches!(state, Stopped | Crashed),
        }
    }

    /// The state the operation's job records before it acts on a hypervisor (its claim:
    /// of two racing operations, the one whose claim commits first wins), or `None` for
    /// one that moves the VM straight to its end state.
    pub fn claims(self) -> Option<VmState> {
        match self {
            VmOp::Start => Some(VmState::Starting),
            VmOp::Stop | VmOp::Kill => Some(VmState::Stopping),
            VmOp::Migrate => Some(VmState::Migrating),
            VmOp::Pause | VmOp::Resume | VmOp::Delete => None,
        }
    }

    /// Where the VM ends when the operation succeeds (`None`: its record is gone).
    pub fn ends_in(self) -> Option<VmState> {
        match self {
            VmOp::Start | VmOp::Resume | VmOp::Migrate => Some(VmState::Running),
            VmOp::Stop | VmOp::Kill => Some(VmState::Stopped),
            VmOp::Pause => Some(VmState::Paused),
            VmOp::Delete => None,
        }
    }
}

impl std::fmt::Display for VmOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl VmState {
    /// The one table of legal moves of a VM's record. Staying put is always legal.
    pub fn can_become(self, to: VmState) -> bool {
        use VmState::*;
        self == to
            || matches!(
                (self, to),
                // A start claims the VM; it runs, or its guest already stopped, paused or
                // crashed when the start was recorded; a failed start gives it back.
                (Stopped | Crashed, Starting)
                    | (Starting, Running | Paused | Stopped | Crashed)
                    // Running: paused, stopped (by a job, or the guest powered off), moved,
                    // crashed, or found gone by reconciliation.
                    | (Running, Paused | Stopping | Migrating | Stopped | Crashed)
                    | (Paused, Running | Stopping | Migrating | Stopped | Crashed)
                    // A stop ends stopped — or, having failed, leaves it as it was.
                    | (Stopping, Stopped | Crashed | Running | Paused)
                    // A migration ends on one server or the other, or the VM is lost.
                    | (Migrating, Running | Paused | Stopped | Crashed)
                    // A crashed VM is cleaned up; one found running though recorded at
                    // rest (a stray) is claimed to be stopped.
                    | (Crashed, Stopped | Stopping)
                    | (Stopped, Stopping)
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const STATES: [VmState; 7] = [
        VmState::Stopped,
        VmState::Starting,
        VmState::Running,
        VmState::Paused,
        VmState::Stopping,
        VmState::Migrating,
        VmState::Crashed,
    ];

    /// What happens to an operation's job once it has claimed the VM.
    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Succeeds,
        /// Fails and rolls back: the record goes back to where it was.
        FailsAndRollsBack,
        /// The guest or its VMM dies meanwhile.
        Crashes,
    }

    /// A step of the world: an operation with its outcome, or a guest event on a VM that
    /// runs (it powers off, it crashes).
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Op(VmOp, Outcome),
        GuestPowersOff,
        GuestCrashes,
    }

    fn step() -> impl Strategy<Value = Step> {
        let op = prop::sample::select(VmOp::ALL.to_vec());
        let outcome = prop_oneof![
            Just(Outcome::Succeeds),
            Just(Outcome::FailsAndRollsBack),
            Just(Outcome::Crashes)
        ];
        prop_oneof![
            4 => (op, outcome).prop_map(|(o, r)| Step::Op(o, r)),
            1 => Just(Step::GuestPowersOff),
            1 => Just(Step::GuestCrashes),
        ]
    }

    /// Moves `state` to `to`, asserting the move is in the table.
    fn moves(state: &mut VmState, to: VmState, why: &str) {
        assert!(
            state.can_become(to),
            "{state} -> {to} ({why}) is not in the table"
        );
        *state = to;
    }

    proptest! {
        /// Any sequence of operations (each refused, or claiming, then succeeding, failing
        /// or crashing) and guest events keeps the record on the table's moves, never
        /// leaves a VM that can neither run nor be cleaned up, and deletes only a VM at
        /// rest.
        #[test]
        fn no_sequence_leaves_the_table(steps in prop::collection::vec(step(), 1..60)) {
            let mut state = VmState::Stopped;
            for s in steps {
                match s {
                    Step::Op(op, outcome) => {
                        if !op.allowed_from(state) {
                            continue;
                        }
                        let before = state;
                        if let Some(claim) = op.claims() {
                            moves(&mut state, claim, op.as_str());
                        }
                        match outcome {
                            Outcome::Succeeds => match op.ends_in() {
                                Some(end) => moves(&mut state, end, "success"),
                                None => {
                                    prop_assert!(!before.is_active(), "{op} of an active VM");
                                    state = VmState::Stopped; // a new VM of the same name
                                }
                            },
                            Outcome::FailsAndRollsBack => moves(&mut state, before, "rollback"),
                            // Only a VM with a VMM (one claimed, or running) can crash.
                            Outcome::Crashes if state.is_active() => {
                                moves(&mut state, VmState::Crashed, "crash")
                            }
                            Outcome::Crashes => moves(&mut state, before, "rollback"),
                        }
                    }
                    Step::GuestPowersOff if matches!(state, VmState::Running | VmState::Paused) => {
                        moves(&mut state, VmState::Stopped, "guest power-off");
                    }
                    Step::GuestCrashes if matches!(state, VmState::Running | VmState::Paused) => {
                        moves(&mut state, VmState::Crashed, "guest crash");
                    }
                    Step::GuestPowersOff | Step::GuestCrashes => {}
                }
                // Never stuck: from wherever it is at rest, some operation applies.
                prop_assert!(
                    state.is_active() || VmOp::ALL.iter().any(|op| op.allowed_from(state)),
                    "{state} allows nothing"
                );
            }
        }
    }

    /// The tables agree: every operation's claim and end are moves the table allows from
    /// every state it may start from, and every state reaches `stopped`.
    #[test]
    fn operations_move_only_along_the_table() {
        for op in VmOp::ALL {
            for from in STATES.into_iter().filter(|s| op.allowed_from(*s)) {
                let at = op.claims().unwrap_or(from);
                assert!(from.can_become(at), "{op} claims {at} from {from}");
                if let Some(end) = op.ends_in() {
                    assert!(at.can_become(end), "{op} ends {end} from {at}");
                }
                assert!(at.can_become(from), "{op} cannot roll back to {from}");
            }
        }
        for from in STATES {
            let mut seen = BTreeSet::from([from.as_str()]);
            let mut frontier = vec![from];
            while let Some(s) = frontier.pop() {
                for to in STATES.into_iter().filter(|t| s.can_become(*t)) {
                    if seen.insert(to.as_str()) {
                        frontier.push(to);
                    }
                }
            }
            assert!(seen.contains("stopped"), "{from} never reaches stopped");
        }
    }
}
