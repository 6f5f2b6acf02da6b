//! `difi convert edm IN.pkl OUT.safetensors`: reference checkpoints to difi's files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_zoo::edm::convert::read_edm_pickle;

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
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    format: Format,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.format {
        Format::Edm { input, output } => convert_edm(&input, &output),
    }
}

fn convert_edm(input: &Path, output: &Path) -> Result<ExitCode> {
    if output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("{}: the output is a .safetensors file", output.display());
    }
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
