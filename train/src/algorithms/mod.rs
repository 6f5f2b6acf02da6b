//! The algorithms the runner drives, one file each.
//!
//! | algorithm | trains | from |
//! | --- | --- | --- |
//! | [`diff_instruct`] | a one-step generator (and its fake score) | a teacher, no data |
//! | [`edm_teacher`] | a score model (the teacher) | dataset images |
//! | [`stylegan2_gan`] | a StyleGAN2 generator (and its discriminator) | dataset images |

pub mod diff_instruct;
pub mod edm_teacher;
pub mod stylegan2_gan;
