//! The recording hot path does not allocate per record: recording a guest
//! allocates on the vCPU's thread what running it live does, plus a little
//! per digest (its page list), not per input or state check. Counted per
//! thread with a global allocator wrapper, on the `entropy` guest (its
//! inputs: port reads, RDTSC, RDRAND, RDSEED, CPUID) with a digest every 50
//! inputs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

mod common;

use common::every;
use vm_monitor::record::RecordingEnv;
use vm_monitor::{Environment, LiveEnvironment, Machine, RunLimits};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: nothing to count while the thread is being torn down.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout, per GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations on this thread while `machine.run` runs `env`.
fn run_counted(machine: &Machine, env: &mut dyn Environment) -> u64 {
    let mut vcpu = common::soft_vcpu(machine);
    let before = allocs();
    machine.run(&mut vcpu, env, &RunLimits::default()).unwrap();
    allocs() - before
}

fn live(machine: &Machine) -> LiveEnvironment {
    common::live(machine, Box::new(std::io::sink()), None, None)
}

#[test]
fn recording_allocates_per_digest_not_per_record() {
    let machine = common::machine("entropy");
    // Warm up (lazy statics, first-use allocations of the host side).
    run_counted(&machine, &mut live(&machine));
    let machine = common::machine("entropy");
    let baseline = run_counted(&machine, &mut live(&machine));

    let machine = common::machine("entropy");
    let mut env = RecordingEnv::new(
        live(&machine),
        Vec::with_capacity(100_000),
        machine.memory().clone(),
        machine.ram_size(),
        every(50),
    );
    let recorded = run_counted(&machine, &mut env);
    let stats = env.stats();
    let extra = recorded.saturating_sub(baseline);
    eprintln!(
        "live {baseline} allocations, recording {recorded} ({} records: {} inputs, {} state checks, {} digests)",
        stats.records, stats.inputs, stats.checks, stats.digests
    );
    assert!(stats.inputs > 100 && stats.checks > 100, "{stats:?}");
    assert!(
        extra <= 4 * stats.digests + 4,
        "{extra} more allocations than live for {} records and {} digests",
        stats.records,
        stats.digests
    );
}
