//! `difi convert edm IN.pkl OUT.safetensors`: reference checkpoints to difi's files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_zoo::edm::convert::read_edm_pickle;
use difi_zoo::stylegan2::convert::read_stylegan2_pickle;

#[derive(clap::Subcommand)]
pub enum Format {
    /// An EDM network pickle (network-snapshot-*.pkl, edm-*.pkl): the `ema`
    /// network's weights under EDM's state_dict() names, with its architecture.
    Edm {
        /// The pickle (read, never executed).
        input: PathBuf,
        /// The safetensors file to write; a teacher component is written beside it (*.teacher.ron).
        output: PathBuf,
    },
    /// A StyleGAN2-ADA network pickle (network-snapshot-*.pkl): the `G_ema`
    /// generator's weights under the reference's state_dict() names, with its
    /// constructor arguments as `kwargs` metadata.
    Stylegan2 {
        /// The pickle (read, never executed).
        input: PathBuf,
        /// The safetensors file to write.
        output: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    format: Format,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.format {
        Format::Edm { input, output } => convert_edm(&input, &output),
        Format::Stylegan2 { input, output } => convert_stylegan2(&input, &output),
    }
}

fn ensure_safetensors(output: &Path) -> Result<()> {
    if output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("{}: the output is a .safetensors file", output.display());
    }
    Ok(())
}

fn convert_stylegan2(input: &Path, output: &Path) -> Result<ExitCode> {
    ensure_safetensors(output)?;
    let generator = read_stylegan2_pickle(input)?;
    generator.write(output, input)?;
    let c = &generator.config;
    let checkpoint = std::path::absolute(output).with_context(|| output.display().to_string())?;
    eprintln!(
        "{}: G_ema, {:?} at {}x{}, {} classes, {} tensors → {}\n\
         generator component: (plugin: \"stylegan2\", params: (checkpoint: \"{}\"))",
        input.display(),
        c.synthesis.architecture,
        c.img_resolution,
        c.img_resolution,
        c.c_dim,
        generator.tensor_count(),
        output.display(),
        checkpoint.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn convert_edm(input: &Path, output: &Path) -> Result<ExitCode> {
    ensure_safetensors(output)?;
    let network = read_edm_pickle(input)?;
    network.write(output, input)?;
    let checkpoint = std::path::absolute(output).with_context(|| output.display().to_string())?;
    let teacher = teacher_component(&checkpoint, &network.config)?;
    let teacher_path = output.with_extension("teacher.ron");
    difi_formats::atomic::write_atomically(&teacher_path, teacher.as_bytes())?;
    eprintln!(
        "{}: {} around {:?} at {}x{}, {} tensors → {}\nteacher component: {}",
        input.display(),
        network.class_name,
        network.config.model_type,
        network.config.img_resolution,
        network.config.img_resolution,
        network.tensor_count(),
        output.display(),
        teacher_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `(plugin: "edm", params: (checkpoint: …, network: …))`, printed as a config prints it.
fn teacher_component(checkpoint: &Path, network: &difi_zoo::edm::config::EdmNetworkConfig) -> Result<String> {
    let params = serde_json::json!({
        "checkpoint": checkpoint,
        "network": serde_json::to_value(network.to_args())?,
    });
    let component = difi_core::component::Component::plugin("edm", params);
    let text = difi_core::ron_tree::to_ron(&serde_json::to_value(&component)?);
    Ok(format!(
        "// Teacher component written by `difi convert edm`; use it as `teacher: <this>` in a config\n\
         // or with --set \"teacher=$(cat {})\".\n{text}",
        checkpoint.with_extension("teacher.ron").display()
    ))
}
