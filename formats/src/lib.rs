//! difi-formats: the files difi reads and writes, each reader safe on
//! untrusted input (nothing is ever executed, sizes are checked against the
//! bytes present).
//!
//! | module | files |
//! | --- | --- |
//! | [`pickle`] | Python pickles, interpreted into a value tree |
//! | [`torch_legacy`] | tensors inside pickled networks (torch's legacy storage format) |
//! | [`torch_persistence`] | `torch_utils.persistence` network pickles (EDM, StyleGAN2-ADA) |
//! | [`weights`] | safetensors weight files under the reference parameter names |
//! | [`npy`] | the NumPy array encoding inside `.npy` and `.npz` |
//! | [`npz`] | NumPy `.npy` / `.npz` files (samples, features, FID statistics) |
//! | [`image`] | float images ↔ uint8, PNG files and grids |
//! | [`atomic`] | writes through a temporary file and a rename |

pub mod atomic;
pub mod image;
pub mod npy;
pub mod npz;
pub mod pickle;
pub mod torch_legacy;
pub mod torch_persistence;
pub mod weights;
