//! Typed IPC: interfaces, postcard encoding, in-process and cross-process transports
