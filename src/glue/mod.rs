//! Redis plumbing shared by the commands: a command's arguments, caller and reply
//! (`call`), the one key wrapper (`key`), and Redis strings reused across commands
//! (`strings`).

pub mod call;
pub mod key;
pub mod strings;
