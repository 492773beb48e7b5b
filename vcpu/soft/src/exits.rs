//! Instruction exits and the answers (completions) the monitor gives them.
//!
//! An instruction that needs the monitor stops without side effects and
//! `run` returns the exit. The monitor's [`vcpu::Completion`] is queued as an
//! [`Answer`]; the next `run` re-executes the instruction, which consumes the
//! answers in the order it meets its exit points (an instruction can have
//! several, e.g. a read-modify-write of MMIO). Answers are dropped when the
//! instruction retires or faults, and after each committed iteration of a
//! REP string instruction.

/// One answered exit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An MMIO access: bytes read (ignored for writes).
    Mmio([u8; 16]),
    /// Any other instruction exit.
    Value(vcpu::Completion),
}

/// The answers for the instruction being re-executed.
#[derive(Debug, Default, Clone)]
pub struct Answers {
    list: Vec<Answer>,
    pos: usize,
}

impl Answers {
    /// The next answer, if the monitor gave one for this exit point.
    #[inline]
    pub fn take(&mut self) -> Option<Answer> {
        let a = self.list.get(self.pos).copied();
        if a.is_some() {
            self.pos += 1;
        }
        a
    }

    /// Queue the answer to the latest exit; rewind so re-execution consumes from the start.
    pub fn push(&mut self, a: Answer) {
        self.list.push(a);
        self.pos = 0;
    }

    /// Forget all answers (the instruction or iteration committed).
    #[inline]
    pub fn clear(&mut self) {
        self.list.clear();
        self.pos = 0;
    }

    /// Whether there are none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Rewind to the first answer (the instruction stops and will re-execute).
    pub fn rewind(&mut self) {
        self.pos = 0;
    }
}

/// The exit an op stopped for (rip and length are filled in by the executor).
pub type PendingExit = vcpu::VmExit;
