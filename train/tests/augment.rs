//! EDM's AugmentPipe, reproduced draw for draw: the same seed gives the
//! same augmented images and labels as the reference (`tests/fixtures/augment`,
//! made by `tests/python/augment_reference.py` from NVlabs/edm).

use std::path::PathBuf;

use difi_train::augment::AugmentPipe;
use tch::Tensor;

#[test]
fn augmentations_match_edms_reference_draw_for_draw() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/augment/edm-augment.npz");
    let arrays = difi_formats::npz::read_npz(&path).unwrap();
    let get = |name: &str| arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone());
    let mut cases = 0;
    while let Some(images) = get(&format!("case{cases}_images")) {
        let k = cases;
        let kwargs_bytes: Vec<u8> = Vec::try_from(get(&format!("case{k}_kwargs")).unwrap()).unwrap();
        let kwargs: serde_json::Value = serde_json::from_slice(&kwargs_bytes).unwrap();
        let pipe: AugmentPipe = serde_json::from_value(kwargs.clone()).unwrap();
        let seed = get(&format!("case{k}_seed")).unwrap().int64_value(&[]);
        tch::manual_seed(seed);
        let (out, labels) = pipe.apply(&images).unwrap();
        let expected_out = get(&format!("case{k}_out")).unwrap();
        let expected_labels = get(&format!("case{k}_labels")).unwrap();
        assert_eq!(labels.size(), expected_labels.size(), "case {k} {kwargs}: labels");
        assert_eq!(labels.size()[1], pipe.label_dim(), "case {k}: label_dim");
        let max_diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        let label_error = max_diff(&labels, &expected_labels);
        let image_error = max_diff(&out, &expected_out);
        eprintln!("case {k} {kwargs}: images {image_error:.2e}, labels {label_error:.2e}");
        assert!(label_error < 1e-6, "case {k} {kwargs}: labels differ by {label_error}");
        assert!(image_error < 1e-5, "case {k} {kwargs}: images differ by {image_error}");
        // Something actually changed, so the test compares transforms, not identities.
        assert!(max_diff(&out, &images) > 0.1, "case {k}: nothing was augmented");
        cases += 1;
    }
    assert_eq!(cases, 5);
}

#[test]
fn edms_setting_gives_nine_labels() {
    assert_eq!(AugmentPipe::edm(0.12).label_dim(), 9);
    assert_eq!(AugmentPipe::default().label_dim(), 0);
}
