//! One module per subcommand group.

pub mod bench;
pub mod doctor;
pub mod log;
pub mod system;
pub mod version;
