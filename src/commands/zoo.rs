//! `difi zoo`: the model zoo's reference checks and presets.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use difi_core::device::DeviceSpec;
use difi_zoo::edm::config::{EdmNetworkConfig, PRESETS};
use difi_zoo::edm::fixture::verify;
use difi_zoo::edm::network::{EdmNetwork, Precision};

/// `--precision`: fp32, fp16, bf16 or auto.
fn parse_precision(text: &str) -> Result<Precision> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .with_context(|| format!("`{text}` is not a precision: use fp32, fp16, bf16 or auto"))
}

/// Bounds of `zoo verify` (relative L2).
const FORWARD_BOUND: f64 = 1e-4;
const SAMPLER_BOUND: f64 = 1e-3;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check a network against reference outputs in a safetensors file: an
    /// EDM network (metadata `precond` + `kwargs`; tensors `x`, `sigma`,
    /// `expected_f64`, …) or a StyleGAN2 generator (metadata `kwargs` with
    /// `z_dim`, `truncation_psi`; tensors `z`, `c`, `expected_ws`,
    /// `expected_img`, `expected_img_nonoise`).
    Verify {
        /// Reference files; each is checked.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// EDM backbone precision: fp32, fp16, bf16 or auto (bounds apply to
        /// fp32; StyleGAN2 generators always run in fp32).
        #[arg(long, default_value = "fp32", value_parser = parse_precision)]
        precision: Precision,
        /// Device: auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// Print one JSON object per file.
        #[arg(long)]
        json: bool,
    },
    /// List the EDM presets with their parameter counts.
    Presets,
    /// Train the fmnist-classifier feature detector on a Fashion-MNIST
    /// dataset (32×32) and report its accuracy on a test dataset.
    TrainClassifier {
        /// Training dataset (e.g. converted from train-images-idx3-ubyte.gz).
        #[arg(long)]
        train: PathBuf,
        /// Test dataset (e.g. converted from t10k-images-idx3-ubyte.gz).
        #[arg(long)]
        test: PathBuf,
        /// Where to write the weights (.safetensors).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        epochs: usize,
        #[arg(long, default_value_t = 0)]
        seed: i64,
        #[arg(long, default_value = "auto")]
        device: DeviceSpec,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Verify { files, precision, device, json } => {
            let device = device.resolve()?;
            let mut failed = false;
            for file in &files {
                if difi_zoo::stylegan2::is_generator_file(file)? {
                    failed |= !verify_stylegan2(file, device, json)?;
                    continue;
                }
                let report = verify(file, precision, device)?;
                let forward_ok = report.forward_rel_l2 <= FORWARD_BOUND;
                let sampler_ok = report.sampler_rel_l2.is_none_or(|e| e <= SAMPLER_BOUND);
                let strict = report.precision == Precision::Fp32;
                failed |= strict && !(forward_ok && sampler_ok);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"file": file, "report": report, "pass": forward_ok && sampler_ok})
                    );
                    continue;
                }
                println!("{}", file.display());
                println!(
                    "  forward  rel L2 {:.3e} (bound {FORWARD_BOUND:.0e}; the reference's own float32: {}) {}",
                    report.forward_rel_l2,
                    report.reference_f32_rel_l2.map_or("not recorded".into(), |e| format!("{e:.3e}")),
                    if forward_ok { "ok" } else { "FAIL" }
                );
                if let (Some(error), Some(nfe)) = (report.sampler_rel_l2, report.sampler_nfe) {
                    println!(
                        "  sampler  rel L2 {error:.3e} (bound {SAMPLER_BOUND:.0e}, {nfe} NFE) {}",
                        if sampler_ok { "ok" } else { "FAIL" }
                    );
                }
                println!(
                    "  {} parameters, backbone in {}",
                    report.parameters,
                    format!("{:?}", report.precision).to_lowercase()
                );
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::TrainClassifier { train, test, out, epochs, seed, device } => {
            train_classifier(&train, &test, &out, epochs, seed, device)
        }
        Command::Presets => {
            println!("{:<26} {:>12}  architecture", "preset", "parameters");
            for name in PRESETS {
                let config = EdmNetworkConfig::preset(name)?;
                let network = EdmNetwork::new(&config, Precision::Fp32, tch::Device::Cpu)?;
                println!(
                    "{name:<26} {:>12}  {:?} + {:?}, {}x{}, {} labels",
                    network.parameter_count(),
                    config.precond,
                    config.model_type,
                    config.img_resolution,
                    config.img_resolution,
                    config.label_dim
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Checks a StyleGAN2 generator file and prints its errors; true when within the bound.
fn verify_stylegan2(file: &std::path::Path, device: tch::Device, json: bool) -> Result<bool> {
    let report = difi_zoo::stylegan2::fixture::verify(file, device)?;
    let pass = report.worst() <= FORWARD_BOUND;
    if json {
        println!("{}", serde_json::json!({"file": file, "report": report, "pass": pass}));
        return Ok(pass);
    }
    let verdict = |error: f64| if error <= FORWARD_BOUND { "ok" } else { "FAIL" };
    println!("{}", file.display());
    println!(
        "  mapping     rel L2 {:.3e} (truncation_psi {}, bound {FORWARD_BOUND:.0e}) {}",
        report.ws_rel_l2,
        report.truncation_psi,
        verdict(report.ws_rel_l2)
    );
    println!("  image       rel L2 {:.3e} (const noise) {}", report.img_rel_l2, verdict(report.img_rel_l2));
    println!(
        "  image       rel L2 {:.3e} (no noise) {}",
        report.img_nonoise_rel_l2,
        verdict(report.img_nonoise_rel_l2)
    );
    println!("  {} parameters, float32", report.parameters);
    Ok(pass)
}

fn train_classifier(
    train: &std::path::Path,
    test: &std::path::Path,
    out: &std::path::Path,
    epochs: usize,
    seed: i64,
    device: DeviceSpec,
) -> Result<ExitCode> {
    use difi_datasets::ImageArchive;
    use difi_datasets::export::to_tensors;
    use difi_metrics::fmnist_classifier::FmnistClassifier;
    let device = device.resolve()?;
    let load = |path: &std::path::Path| -> Result<(tch::Tensor, tch::Tensor)> {
        let (images, labels) = to_tensors(&ImageArchive::open(path)?)?;
        let labels = labels.with_context(|| format!("{}: the classifier needs labels", path.display()))?;
        Ok((images, labels))
    };
    let (train_images, train_labels) = load(train)?;
    let (test_images, test_labels) = load(test)?;
    let started = std::time::Instant::now();
    let mut classifier = FmnistClassifier::new(device);
    classifier.train(&train_images, &train_labels, epochs, seed, |epoch, loss| {
        eprintln!("epoch {epoch}: loss {loss:.4} ({:.0} s)", started.elapsed().as_secs_f64());
    })?;
    let train_accuracy = classifier.accuracy(&train_images, &train_labels)?;
    let test_accuracy = classifier.accuracy(&test_images, &test_labels)?;
    let metadata = std::collections::HashMap::from([
        ("difi_role".to_string(), "fmnist-classifier".to_string()),
        ("train_accuracy".to_string(), format!("{train_accuracy:.4}")),
        ("test_accuracy".to_string(), format!("{test_accuracy:.4}")),
        ("epochs".to_string(), epochs.to_string()),
        ("seed".to_string(), seed.to_string()),
        ("train".to_string(), train.display().to_string()),
        ("test".to_string(), test.display().to_string()),
    ]);
    classifier.save(out, &metadata)?;
    println!("train accuracy {train_accuracy:.4}, test accuracy {test_accuracy:.4} → {}", out.display());
    Ok(ExitCode::SUCCESS)
}
