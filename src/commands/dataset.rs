//! `difi dataset convert|info|export`: the EDM/StyleGAN dataset format.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_datasets::ImageArchive;
use difi_datasets::convert::{ConvertOptions, convert};
use difi_datasets::export::export;
use difi_datasets::transform::Transform;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Convert an image folder, a dataset .zip, MNIST-format idx files
    /// (*-images-idx3-ubyte.gz) or cifar-10-python.tar.gz into the format.
    Convert {
        /// The source.
        #[arg(long)]
        source: PathBuf,
        /// The new dataset: OUT.zip (uncompressed) or a folder; must not exist.
        #[arg(long)]
        dest: PathBuf,
        /// Convert at most this many images.
        #[arg(long)]
        max_images: Option<usize>,
        /// Output size, WxH (e.g. 64x64).
        #[arg(long)]
        resolution: Option<String>,
        /// Crop before resizing: center-crop or center-crop-wide.
        #[arg(long)]
        transform: Option<Transform>,
    },
    /// Image count, resolution, channels and label dimension.
    Info {
        /// A dataset .zip or folder.
        path: PathBuf,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write the images as uint8 [N, C, H, W] .npy (and labels as int64 [N]).
    Export {
        /// A dataset .zip or folder.
        path: PathBuf,
        /// The images .npy.
        #[arg(long)]
        out: PathBuf,
        /// The labels .npy.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

fn parse_resolution(text: &str) -> Result<(usize, usize)> {
    let (w, h) = text.split_once('x').with_context(|| format!("--resolution {text}: write WxH, e.g. 64x64"))?;
    let parse = |v: &str| v.trim().parse::<usize>().ok().filter(|v| *v > 0);
    match (parse(w), parse(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => bail!("--resolution {text}: width and height must be positive integers"),
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Convert { source, dest, max_images, resolution, transform } => {
            let resolution = resolution.as_deref().map(parse_resolution).transpose()?;
            if transform.is_some() && resolution.is_none() {
                bail!("--transform needs --resolution");
            }
            let summary = convert(&source, &dest, &ConvertOptions { max_images, resolution, transform })?;
            eprintln!(
                "wrote {} images of {res}x{res}x{} to {} ({}{})",
                summary.images,
                summary.channels,
                dest.display(),
                if summary.labelled { "labelled" } else { "unlabelled" },
                if summary.skipped > 0 { format!(", {} skipped", summary.skipped) } else { String::new() },
                res = summary.resolution,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Info { path, json } => {
            let archive = ImageArchive::open(&path)?;
            let [channels, resolution, _] = archive.shape();
            let info = serde_json::json!({
                "path": path,
                "format": if archive.is_zip() { "zip" } else { "folder" },
                "count": archive.len(),
                "resolution": resolution,
                "channels": channels,
                "label_dim": archive.label_dim(),
            });
            if json {
                println!("{info}");
            } else {
                println!("{}", path.display());
                println!("  images      {}", archive.len());
                println!("  resolution  {resolution}x{resolution}");
                println!("  channels    {channels}");
                println!(
                    "  labels      {}",
                    if archive.label_dim() > 0 { format!("{} classes", archive.label_dim()) } else { "none".into() }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { path, out, labels } => {
            let archive = ImageArchive::open(&path)?;
            export(&archive, &out, labels.as_deref())?;
            eprintln!("wrote {} images to {}", archive.len(), out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
