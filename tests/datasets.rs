//! Datasets in the EDM/StyleGAN format: the shared archives (made by EDM's own
//! dataset tool) read as EDM's loader reads them, sources converted as EDM's
//! tool converts them (checked against values computed independently by the
//! project's Python), lossless round trips, Fashion-MNIST from Debian's
//! package, the training loader, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{arg, difi_err, difi_ok, root, scratch};
use difi_core::traits::Dataset;
use difi_datasets::loader::Batches;
use difi_datasets::pixels::{Pixels, encode_png};
use difi_datasets::writer::DatasetWriter;
use difi_datasets::{ImageArchive, ImageDataset, ImageDatasetParams};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/data").join(name)
}

fn python(args: &[&str]) {
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run `make setup`", python.display());
    let status =
        Command::new(python).arg(root().join("tests/python/dataset_reference.py")).args(args).status().unwrap();
    assert!(status.success(), "dataset_reference.py {args:?} failed");
}

/// `(images uint8 [N, C, H, W], labels int64 [N])` of a reference .npz.
fn reference(path: &Path) -> (Tensor, Tensor) {
    let arrays: std::collections::HashMap<String, Tensor> = Tensor::read_npz(path).unwrap().into_iter().collect();
    (arrays["images"].shallow_clone(), arrays["labels"].shallow_clone())
}

fn reference_names(path: &Path) -> Vec<String> {
    serde_json::from_str(&std::fs::read_to_string(path.with_extension("names.json")).unwrap()).unwrap()
}

/// `(images, labels)` exported by `difi dataset export`.
fn export(dataset: &Path, dir: &Path) -> (Tensor, Option<Tensor>) {
    let images = dir.join("export-images.npy");
    let labels = dir.join("export-labels.npy");
    // Export refuses to replace files.
    let _ = std::fs::remove_file(&images);
    let _ = std::fs::remove_file(&labels);
    let labelled = ImageArchive::open(dataset).unwrap().labels().is_some();
    let mut args = vec!["dataset", "export", arg(dataset), "--out", arg(&images)];
    if labelled {
        args.extend(["--labels", arg(&labels)]);
    }
    difi_ok(&args);
    (Tensor::read_npy(&images).unwrap(), labelled.then(|| Tensor::read_npy(&labels).unwrap()))
}

fn info(dataset: &Path) -> serde_json::Value {
    serde_json::from_str(&difi_ok(&["dataset", "info", arg(dataset), "--json"])).unwrap()
}

#[test]
fn shared_archives_read_as_edms_loader_reads_them() {
    let dir = scratch("datasets-fixtures");
    for (name, count, channels, label_dim) in
        [("digits-8x8-labelled.zip", 1797, 1, 10), ("digits-8x8-rgb.zip", 600, 3, 0)]
    {
        let zip = fixture(name);
        let info = info(&zip);
        assert_eq!(
            (
                info["count"].as_u64(),
                info["resolution"].as_u64(),
                info["channels"].as_u64(),
                info["label_dim"].as_u64()
            ),
            (Some(count), Some(8), Some(channels), Some(label_dim)),
            "{name}: {info}"
        );
        let expected = dir.join(format!("{name}.npz"));
        python(&["load", arg(&zip), arg(&expected)]);
        let (images, labels) = reference(&expected);
        let (ours, our_labels) = export(&zip, &dir);
        assert_eq!(ours.size(), vec![count as i64, channels as i64, 8, 8]);
        assert_eq!(ours.kind(), Kind::Uint8);
        assert!(ours.equal(&images), "{name}: pixels differ from EDM's loader");
        match our_labels {
            Some(ours) => assert!(ours.equal(&labels), "{name}: labels differ"),
            None => assert_eq!(labels.min().int64_value(&[]), -1),
        }
    }
}

#[test]
fn sources_convert_as_edms_tool_converts_them() {
    for source in ["folder", "cifar", "mnist"] {
        let dir = scratch(&format!("datasets-source-{source}"));
        python(&[source, arg(&dir)]);
        let input = match source {
            "folder" => dir.join("src"),
            "cifar" => dir.join("cifar-10-python.tar.gz"),
            _ => dir.join("tiny-images-idx3-ubyte.gz"),
        };
        let expected = dir.join("expected.npz");
        let (images, labels) = reference(&expected);
        for dest in [dir.join("out.zip"), dir.join("out-folder")] {
            difi_ok(&["dataset", "convert", "--source", arg(&input), "--dest", arg(&dest)]);
            let archive = ImageArchive::open(&dest).unwrap();
            assert_eq!(archive.names(), reference_names(&expected).as_slice(), "{source}: names");
            let (ours, our_labels) = export(&dest, &dir);
            assert!(ours.equal(&images), "{source} → {}: pixels differ", dest.display());
            assert!(our_labels.expect("labelled").equal(&labels), "{source}: labels differ");
        }
        // --max-images keeps the first images.
        let few = dir.join("few.zip");
        difi_ok(&["dataset", "convert", "--source", arg(&input), "--dest", arg(&few), "--max-images", "3"]);
        let (ours, _) = export(&few, &dir);
        assert!(ours.equal(&images.narrow(0, 0, 3)));
    }
}

#[test]
fn conversions_round_trip_losslessly() {
    let dir = scratch("datasets-round-trip");
    let original = fixture("digits-8x8-labelled.zip");
    let (images, labels) = export(&original, &dir);
    let copy = dir.join("copy.zip");
    difi_ok(&["dataset", "convert", "--source", arg(&original), "--dest", arg(&copy)]);
    let folder = dir.join("folder");
    difi_ok(&["dataset", "convert", "--source", arg(&copy), "--dest", arg(&folder)]);
    for converted in [&copy, &folder] {
        let (again, again_labels) = export(converted, &dir);
        assert!(again.equal(&images) && again_labels.unwrap().equal(labels.as_ref().unwrap()));
    }
    // Resizing changes the resolution and keeps the labels.
    let big = dir.join("big.zip");
    difi_ok(&[
        "dataset",
        "convert",
        "--source",
        arg(&original),
        "--dest",
        arg(&big),
        "--resolution",
        "16x16",
        "--max-images",
        "10",
    ]);
    assert_eq!(info(&big)["resolution"], 16);
    let (resized, resized_labels) = export(&big, &dir);
    assert_eq!(resized.size(), vec![10, 1, 16, 16]);
    assert!(resized_labels.unwrap().equal(&labels.unwrap().narrow(0, 0, 10)));
}

#[test]
fn fashion_mnist_converts_from_debians_package() {
    let source = PathBuf::from("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
    assert!(source.is_file(), "{} missing: install Debian's dataset-fashion-mnist (.ci/run does)", source.display());
    let dir = scratch("datasets-fashion-mnist");
    let zip = dir.join("fashion-mnist.zip");
    difi_ok(&["dataset", "convert", "--source", arg(&source), "--dest", arg(&zip)]);
    let info = info(&zip);
    assert_eq!(
        (info["count"].as_u64(), info["resolution"].as_u64(), info["channels"].as_u64(), info["label_dim"].as_u64()),
        (Some(60000), Some(32), Some(1), Some(10))
    );
    let (images, labels) = export(&zip, &dir);
    let expected = dir.join("idx.npz");
    python(&["idx", arg(&source), arg(&expected)]);
    let (reference_images, reference_labels) = reference(&expected);
    assert!(images.equal(&reference_images) && labels.unwrap().equal(&reference_labels));
    // The zero border of the 28×28 → 32×32 padding.
    let interior = images.narrow(2, 2, 28).narrow(3, 2, 28);
    let border_sum = images.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[])
        - interior.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(border_sum, 0);
    assert!(interior.to_kind(Kind::Int64).sum(Kind::Int64).int64_value(&[]) > 0);
}

#[test]
fn the_loader_shuffles_flips_and_scales() {
    let params = ImageDatasetParams { path: fixture("digits-8x8-labelled.zip"), xflip: true, ..Default::default() };
    let dataset = ImageDataset::open(&params, Path::new(".")).unwrap();
    assert_eq!(dataset.len(), 2 * 1797);
    let (image, label) = dataset.get(5).unwrap();
    let (flipped, flipped_label) = dataset.get(1797 + 5).unwrap();
    assert!(flipped.equal(&image.flip([2])) && label == flipped_label);

    let batches: Vec<_> = Batches::new(&dataset, 500, Some((3, 0)), Device::Cpu).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 8);
    let first = &batches[0];
    assert_eq!(first.images.size(), vec![500, 1, 8, 8]);
    assert!(first.images.min().double_value(&[]) >= -1.0 && first.images.max().double_value(&[]) <= 1.0);
    assert_eq!(first.labels.as_ref().unwrap().size(), vec![500, 10]);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(seen[..20], (0..20).collect::<Vec<_>>()[..], "shuffled");
    seen.sort();
    assert_eq!(seen, (0..2 * 1797).collect::<Vec<_>>(), "every image once per epoch");
    let again: Vec<usize> = Batches::new(&dataset, 500, Some((3, 0)), Device::Cpu).next().unwrap().unwrap().indices;
    assert_eq!(again, first.indices, "reproducible from the seed");

    // Labels beyond the classes a run expects are refused, naming the image.
    let strict =
        ImageDatasetParams { path: fixture("digits-8x8-labelled.zip"), label_dim: Some(5), ..Default::default() };
    let err = ImageDataset::open(&strict, Path::new(".")).err().unwrap().to_string();
    assert!(err.contains("out of range for 5 classes") && err.contains(".png"), "{err}");
}

/// A PNG to write: name, width, height, channels.
type Png<'a> = (&'a str, usize, usize, usize);

/// Writes a dataset archive with the given PNGs and metadata.
fn write_archive(path: &Path, images: &[Png<'_>], metadata: Option<&str>) {
    let mut writer = DatasetWriter::create(path).unwrap();
    for (name, width, height, channels) in images {
        let pixels =
            Pixels { width: *width, height: *height, channels: *channels, data: vec![7; width * height * channels] };
        writer.add(name, &encode_png(&pixels).unwrap()).unwrap();
    }
    if let Some(metadata) = metadata {
        writer.add("dataset.json", metadata.as_bytes()).unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn bad_datasets_are_refused_with_the_file_and_the_problem() {
    let dir = scratch("datasets-bad");
    let ok = ("a.png", 8, 8, 1);
    let cases: Vec<(&str, Vec<Png<'_>>, Option<&str>, &str)> = vec![
        ("mixed.zip", vec![ok, ("b.png", 16, 16, 1)], None, "b.png is 16x16"),
        ("channels.zip", vec![ok, ("b.png", 8, 8, 3)], None, "b.png is 8x8 with 3 channels"),
        ("wide.zip", vec![("a.png", 16, 8, 1)], None, "a.png is 16x8; images must be square"),
        ("twelve.zip", vec![("a.png", 12, 12, 1)], None, "power of two"),
        (
            "ghost.zip",
            vec![ok],
            Some(r#"{"labels": [["a.png", 0], ["gone.png", 1]]}"#),
            "labels gone.png, which is not in the dataset",
        ),
        ("unlabelled.zip", vec![ok, ("b.png", 8, 8, 1)], Some(r#"{"labels": [["a.png", 0]]}"#), "no label for b.png"),
        ("negative.zip", vec![ok], Some(r#"{"labels": [["a.png", -2]]}"#), "label of a.png is `-2`"),
        ("notjson.zip", vec![ok], Some("{labels"), "dataset.json is not JSON"),
    ];
    for (name, images, metadata, expected) in cases {
        let path = dir.join(name);
        write_archive(&path, &images, metadata);
        let err = difi_err(&["dataset", "info", arg(&path)]);
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
    }

    // Truncated and corrupt archives.
    let good = std::fs::read(fixture("digits-8x8-rgb.zip")).unwrap();
    let truncated = dir.join("truncated.zip");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let err = difi_err(&["dataset", "info", arg(&truncated)]);
    assert!(err.contains("truncated.zip") && err.contains("not a readable ZIP"), "{err}");
    let mut corrupt = good.clone();
    for byte in &mut corrupt[2000..2100] {
        *byte ^= 0x5a;
    }
    let corrupt_path = dir.join("corrupt.zip");
    std::fs::write(&corrupt_path, &corrupt).unwrap();
    let err = difi_err(&["dataset", "export", arg(&corrupt_path), "--out", arg(&dir.join("x.npy"))]);
    assert!(err.contains("corrupt.zip") && err.contains("img0000"), "{err}");
    assert!(!dir.join("x.npy").exists() && !dir.join(".x.npy.partial").exists());

    // Compressed entries.
    let deflated = dir.join("deflated.zip");
    python(&["deflated", arg(&fixture("digits-8x8-rgb.zip")), arg(&deflated)]);
    let err = difi_err(&["dataset", "info", arg(&deflated)]);
    assert!(err.contains("deflated.zip") && err.contains("is compressed"), "{err}");
}

#[test]
fn convert_never_leaves_a_half_written_destination() {
    let dir = scratch("datasets-convert-failures");
    // A source whose third image has another size: the conversion fails midway.
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    for (i, side) in [8, 8, 16, 8].iter().enumerate() {
        let pixels = Pixels { width: *side, height: *side, channels: 3, data: vec![i as u8; side * side * 3] };
        std::fs::write(source.join(format!("{i}.png")), encode_png(&pixels).unwrap()).unwrap();
    }
    for dest in [dir.join("out.zip"), dir.join("out")] {
        let err = difi_err(&["dataset", "convert", "--source", arg(&source), "--dest", arg(&dest)]);
        assert!(err.contains("image 2 is 16x16") && err.contains("source"), "{err}");
        assert!(!dest.exists(), "nothing at {}", dest.display());
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "only the source remains: {leftovers:?}");
    }
    // An existing destination is left alone.
    let existing = dir.join("existing.zip");
    std::fs::write(&existing, b"keep me").unwrap();
    let err =
        difi_err(&["dataset", "convert", "--source", arg(&fixture("digits-8x8-rgb.zip")), "--dest", arg(&existing)]);
    assert!(err.contains("existing.zip") && err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    // Unknown sources are named.
    let err = difi_err(&["dataset", "convert", "--source", "nowhere/x.tar", "--dest", arg(&dir.join("y.zip"))]);
    assert!(err.contains("nowhere/x.tar"), "{err}");
}
