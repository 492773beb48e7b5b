//! One module per subcommand group.

pub mod backend;
pub mod doctor;
pub mod run;
pub mod system;
pub mod version;
