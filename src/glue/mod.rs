//! Redis plumbing shared by the commands: a command's arguments, caller and reply
//! (`call`), the one key wrapper (`key`), and Redis strings reused across commands
//! (`strings`).

pub(crate) mod call;
pub(crate) mod key;
pub(crate) mod strings;
