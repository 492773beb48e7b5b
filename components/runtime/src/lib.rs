//! Starts the domains of system.toml as sandboxed processes (or threads) and supervises them
