//! difi-datasets: the EDM/StyleGAN dataset format (an uncompressed ZIP or a
//! folder of PNGs with `dataset.json`), its training loader, and the tools
//! that convert sources into it and export it. Registers the `zip` and
//! `folder` dataset plugins.

pub mod archive;
pub mod bounded_read;
pub mod convert;
pub mod dataset;
pub mod destination;
pub mod export;
pub mod limits;
pub mod loader;
pub mod metadata;
pub mod pixels;
pub mod sources;
pub mod transform;
pub mod walk;
pub mod writer;

pub use archive::ImageArchive;
pub use dataset::{ImageDataset, ImageDatasetParams};

/// Keeps this crate's plugin registrations in a binary (see `difi_zoo::link`).
pub fn link() {
    std::hint::black_box(ImageDatasetParams::default);
}
