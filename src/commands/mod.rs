//! One module per subcommand: argument structs and printing only.

pub mod bench;
pub mod harness;
pub mod inspect;
pub mod install;
pub mod kbuild;
pub mod layout;
pub mod map;
pub mod matrix;
pub mod run;
