//! Redis plumbing shared by the commands: a command's arguments, caller and reply
//! (`call`), the ACL check of the keys it touches through the caller's selectors (`acl`),
//! the one key wrapper (`key`), and Redis strings reused across commands (`strings`).

pub mod acl;
pub mod call;
pub mod key;
pub mod strings;
