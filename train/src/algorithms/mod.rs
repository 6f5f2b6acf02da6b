//! The algorithms the runner drives, one file each.
//!
//! | algorithm | trains | from |
//! | --- | --- | --- |
//! | [`diff_instruct`] | a one-step generator (and its fake score) | a teacher, no data |
//! | [`edm_teacher`] | a score model (the teacher) | dataset images |

pub mod diff_instruct;
pub mod edm_teacher;
