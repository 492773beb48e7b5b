//! One module per subcommand group.

pub mod backend;
pub mod bench;
pub mod demo;
pub mod doctor;
pub mod log;
pub mod record;
pub mod replay;
pub mod run;
pub mod system;
pub mod version;
