//! Reports for people: the self-contained HTML report of a replay.

pub mod html;
pub mod member;
