//! One module per subcommand group.

pub mod doctor;
pub mod system;
pub mod version;
