//! The interrupt-handler types both runtimes offer, and the exception names
//! their reports print.

/// Registers saved on interrupt entry, lowest address first. Under `rt` the
/// common entry path fills every field and resumes the frame a handler
/// returns; under `urt` a handler is a plain call and gets a zeroed frame
/// whose `vector` is set.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(missing_docs)]
pub struct Frame {
    pub xmm: [[u64; 2]; 16],
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector (pushed by `rt`'s stub).
    pub vector: u64,
    /// The CPU's error code, or 0 (always 0 under `urt`).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// An interrupt handler: gets the interrupted frame, returns the frame to
/// resume (ignored under `urt`: without a saved context there is nothing to
/// switch to).
pub type Handler = fn(*mut Frame) -> *mut Frame;

/// The names of the 32 exception vectors, as the `EXCEPTION ...` line prints them.
pub const EXCEPTION_NAMES: [&str; 32] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved 15",
    "#MF x87 error",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD error",
    "#VE virtualization",
    "#CP control protection",
    "reserved 22",
    "reserved 23",
    "reserved 24",
    "reserved 25",
    "reserved 26",
    "reserved 27",
    "reserved 28",
    "reserved 29",
    "reserved 30",
    "reserved 31",
];
