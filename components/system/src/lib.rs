//! The system description (system.toml): model and validator
