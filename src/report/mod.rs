//! Reports for people and tools: the self-contained HTML report of a
//! replay, and a member as JSON.

pub mod html;
pub mod member;
