//! One module per subcommand: argument structs and printing only.

pub mod bench;
pub mod inspect;
pub mod layout;
pub mod matrix;
pub mod run;
