//! Redis plumbing shared by the commands and the write path: a command's arguments
//! (`args`), its entry point (`dispatch`), the ACL user it runs as (`caller`) and the ACL
//! check of the keys it touches through that user's selectors (`acl`), the clock
//! (`clock`), the module API calls that are not about a key (`ffi`: `api!`, timers, jobs,
//! the detached context), the one Redis key wrapper (`redis_key`), command registration (`register`), replies streamed into
//! Redis's output (`reply`), and Redis strings reused across commands (`strings`).

pub(crate) mod acl;
pub(crate) mod args;
pub(crate) mod caller;
pub(crate) mod clock;
pub(crate) mod dispatch;
pub(crate) mod ffi;
pub(crate) mod redis_key;
pub(crate) mod register;
pub(crate) mod reply;
pub(crate) mod strings;
pub(crate) mod subscribe;
