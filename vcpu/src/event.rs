//! Events a monitor injects at VM entry (the VM-entry interruption-information field).

use serde::{Deserialize, Serialize};

/// An architectural exception, with its error code where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// Vector 0..=31.
    pub vector: u8,
    /// Error code pushed on delivery (#DF, #TS, #NP, #SS, #GP, #PF, #AC).
    pub error_code: Option<u32>,
}

impl Exception {
    /// #UD.
    pub const UD: Exception = Exception {
        vector: 6,
        error_code: None,
    };
    /// #GP(0).
    pub const GP0: Exception = Exception {
        vector: 13,
        error_code: Some(0),
    };

    /// Whether the architecture pushes an error code for this vector.
    pub fn vector_has_error_code(vector: u8) -> bool {
        matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
    }
}

/// An event to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An external interrupt (vector 32..=255). Requires the guest to be
    /// interruptible; otherwise request an interrupt-window exit and wait.
    ExternalInterrupt(u8),
    /// Non-maskable interrupt (vector 2).
    Nmi,
    /// A hardware exception.
    Exception(Exception),
}
