//! Every reference file in `tests/fixtures/edm/` through the network and
//! the sampler: float32 within 1e-4 relative L2 of EDM's float64 forward,
//! and the Heun sampler within 1e-3 of EDM's samples.

use std::path::PathBuf;

use difi_zoo::edm::fixture::verify;
use difi_zoo::edm::network::Precision;
use tch::Device;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/edm");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (the reference fixtures of the repository)", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "expected the four EDM fixtures in {}", dir.display());
    files
}

#[test]
fn every_edm_fixture_matches_the_reference_in_float32() {
    for file in fixtures() {
        let report = verify(&file, Precision::Fp32, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("{}: {report:?}", file.file_name().unwrap().to_string_lossy());
        assert!(report.forward_rel_l2 <= 1e-4, "{}: forward rel L2 {}", file.display(), report.forward_rel_l2);
        if let Some(error) = report.sampler_rel_l2 {
            assert!(error <= 1e-3, "{}: sampler rel L2 {error}", file.display());
        }
    }
}

#[test]
fn reduced_precision_stays_close_to_the_reference() {
    for (precision, bound) in [(Precision::Bf16, 8e-2), (Precision::Fp16, 1e-2)] {
        for file in fixtures() {
            match verify(&file, precision, Device::Cpu) {
                Ok(report) => {
                    eprintln!(
                        "{} {precision:?}: forward rel L2 {:.2e}",
                        file.file_name().unwrap().to_string_lossy(),
                        report.forward_rel_l2
                    );
                    assert!(
                        report.forward_rel_l2 <= bound,
                        "{}: {precision:?} rel L2 {}",
                        file.display(),
                        report.forward_rel_l2
                    );
                }
                Err(e) => panic!("{} {precision:?}: {e}", file.display()),
            }
        }
    }
}
