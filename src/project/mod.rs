//! A project on disk: `nudge.yaml`, the rules folder and the plugins
//! folder, read and loaded together (`load`), and the starter project that
//! `nudge init` writes (`init`).

pub mod init;
pub mod load;
pub mod query;
