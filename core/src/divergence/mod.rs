//! Divergences built into difi-core. Others (SiD, DMD, SIM, …) are plugins.

pub mod ikl;
