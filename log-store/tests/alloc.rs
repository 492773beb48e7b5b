//! The writer's hot path does not allocate per record: appending many small
//! records costs allocations per block (index entry, timepoint spans), not
//! per record. Counted with a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use log_store::{Durability, LogWriter, WriterConfig, sample};
use motion_records::Record;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged; counting has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, per GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn appending_small_records_allocates_per_block_not_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let cfg = WriterConfig::with_durability(Durability::AtSeal);
    let mut w = LogWriter::create(&path, &sample::machine(), cfg).unwrap();
    let records: Vec<Record> = (0..200_000).map(|i| sample::small(3, i)).collect();
    // Warm up: buffers reach their working size.
    w.append(&records[..10_000]).unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    let blocks_before = w_blocks(&w);
    for chunk in records[10_000..].chunks(256) {
        w.append(chunk).unwrap();
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    let blocks = w_blocks(&w) - blocks_before;
    eprintln!("{allocs} allocations for 190000 records in {blocks} blocks");
    assert!(blocks > 10);
    assert!(
        allocs <= blocks * 4 + 16,
        "{allocs} allocations for 190000 records in {blocks} blocks"
    );
    w.seal().unwrap();
}

fn w_blocks(w: &LogWriter) -> u64 {
    w.blocks_written()
}
