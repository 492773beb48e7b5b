//! Per-exit register state of a KVM vCPU, read as few times as possible.
//!
//! Why: on the nested KVM of the development machines every vCPU ioctl
//! costs several microseconds, and the backend used to make about eight per
//! exit (KVM_GET_REGS/SREGS/VCPU_EVENTS for every query, a second KVM_RUN to
//! finish each instruction). The state a query sees can only change through
//! KVM_RUN or a setter, so it is read once between those and kept; where the
//! host offers KVM_CAP_SYNC_REGS, KVM writes it into `kvm_run` at every exit
//! and even that one read costs no ioctl.

use std::cell::Cell;

use kvm_bindings::{kvm_regs, kvm_sregs, kvm_vcpu_events};

/// Which per-exit shortcuts a [`crate::KvmVcpu`] takes. All on by default;
/// all off is the backend's original one-ioctl-per-query behaviour, kept as
/// the baseline the `kvm_exit_cost` benchmark prints beside the fast path and
/// so tests can check both give the same results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastPath {
    /// Read registers, special registers and vCPU events from `kvm_run`'s
    /// sync area (KVM_CAP_SYNC_REGS) when the host offers them.
    pub sync_regs: bool,
    /// Keep state read since the last KVM_RUN or setter instead of asking
    /// KVM again.
    pub cache: bool,
    /// Let the next KVM_RUN finish an instruction the monitor completed
    /// (with its guest entry) instead of a KVM_RUN of its own, unless the
    /// vCPU's state is looked at before then (which finishes it at once).
    pub merge_completion: bool,
}

impl Default for FastPath {
    fn default() -> Self {
        FastPath::ALL
    }
}

impl FastPath {
    /// Every shortcut.
    pub const ALL: FastPath = FastPath {
        sync_regs: true,
        cache: true,
        merge_completion: true,
    };
    /// None: an ioctl for every query and a KVM_RUN for every completion.
    pub const NONE: FastPath = FastPath {
        sync_regs: false,
        cache: false,
        merge_completion: false,
    };
}

/// vCPU ioctls a [`crate::KvmVcpu`] has made since creation, by kind: the
/// figure the exit-cost benchmark divides by the exit count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoctlCounts {
    /// KVM_RUN, both guest entries and instruction completions.
    pub run: u64,
    /// KVM_GET_REGS.
    pub get_regs: u64,
    /// KVM_GET_SREGS.
    pub get_sregs: u64,
    /// KVM_GET_VCPU_EVENTS.
    pub get_events: u64,
    /// KVM_TRANSLATE (instruction bytes of I/O exits).
    pub translate: u64,
    /// Every other vCPU ioctl (setters, injection, MSRs, XSAVE).
    pub other: u64,
}

impl IoctlCounts {
    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.run + self.get_regs + self.get_sregs + self.get_events + self.translate + self.other
    }
}

/// What is known of the vCPU's state since the last KVM_RUN or setter.
#[derive(Default)]
pub(crate) struct StateCache {
    pub regs: Cell<Option<kvm_regs>>,
    pub sregs: Cell<Option<kvm_sregs>>,
    pub events: Cell<Option<kvm_vcpu_events>>,
    /// `kvm_run.s.regs` holds what KVM stored at the end of the last
    /// KVM_RUN (for the fields in the vCPU's valid mask) and nothing has
    /// changed the vCPU since.
    pub sync_fresh: Cell<bool>,
}

impl StateCache {
    /// Forget everything: a setter or injection changed the vCPU.
    pub fn invalidate(&self) {
        self.regs.set(None);
        self.sregs.set(None);
        self.events.set(None);
        self.sync_fresh.set(false);
    }

    /// A KVM_RUN returned: cached values are stale; the sync area is fresh
    /// if KVM was asked to fill it.
    pub fn after_run(&self, sync_valid: bool) {
        self.regs.set(None);
        self.sregs.set(None);
        self.events.set(None);
        self.sync_fresh.set(sync_valid);
    }
}
