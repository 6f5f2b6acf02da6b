//! Datasets from strangers built to hurt (issue 13): each hostile input is
//! made here, and `difi dataset info|export|convert` must refuse it with exit
//! status 1 and one line naming the file and the problem, within a 4 GB
//! address space and two minutes (see `common::difi_bounded`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{arg, difi_ok, difi_refuses, scratch};
use difi_datasets::pixels::{Pixels, encode_png};
use difi_datasets::writer::DatasetWriter;
use difi_datasets::{ImageDataset, ImageDatasetParams};
use flate2::Compression;
use flate2::write::GzEncoder;

/// A PNG signature, an IHDR announcing `width × height` 8-bit grayscale, an
/// empty IDAT and IEND: enough to pass for that size until decoded.
fn png_announcing(width: u32, height: u32) -> Vec<u8> {
    let chunk = |png: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        png.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend(kind);
        png.extend(data);
        png.extend(crc.sum().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn gray_png(side: usize) -> Vec<u8> {
    encode_png(&Pixels { width: side, height: side, channels: 1, data: vec![9; side * side] }).unwrap()
}

/// A dataset archive (`.zip`) or folder holding `files`.
fn dataset(path: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut writer = DatasetWriter::create(path).unwrap();
    for (name, bytes) in files {
        writer.add(name, bytes).unwrap();
    }
    writer.finish().unwrap();
    path.to_path_buf()
}

fn gz(path: &Path, parts: &[&[u8]], zeros: usize) {
    let mut out = GzEncoder::new(std::fs::File::create(path).unwrap(), Compression::fast());
    for part in parts {
        out.write_all(part).unwrap();
    }
    let block = vec![0u8; 1 << 20];
    for _ in 0..zeros / block.len() {
        out.write_all(&block).unwrap();
    }
    out.write_all(&block[..zeros % block.len()]).unwrap();
    out.finish().unwrap();
}

fn be32(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn images_larger_than_the_limits_are_refused_from_their_header() {
    let dir = scratch("hostile-huge-images");
    for (name, side) in [("huge.zip", 32768u32), ("enormous.zip", 1 << 30)] {
        let zip = dataset(&dir.join(name), &[("00000/img00000000.png", png_announcing(side, side))]);
        let expected = format!("00000/img00000000.png: {side}x{side} pixels, more than the 8192 per side");
        let err = difi_refuses(&["dataset", "info", arg(&zip)]);
        assert!(err.contains(name) && err.contains(&expected), "{err}");
        let out = dir.join(format!("{name}.npy"));
        let err = difi_refuses(&["dataset", "export", arg(&zip), "--out", arg(&out)]);
        assert!(err.contains(name) && err.contains(&expected), "{err}");
    }
    // A folder source for `convert`, where images need not be square.
    let source = dir.join("photos");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("wide.png"), png_announcing(100_000, 1)).unwrap();
    let dest = dir.join("out.zip");
    let err = difi_refuses(&["dataset", "convert", "--source", arg(&source), "--dest", arg(&dest)]);
    assert!(err.contains("wide.png") && err.contains("100000x1 pixels, more than"), "{err}");
    // Within the limits per side, beyond them in all (2^26 pixels).
    std::fs::write(source.join("wide.png"), png_announcing(8192, 8192)).unwrap();
    let err = difi_refuses(&["dataset", "convert", "--source", arg(&source), "--dest", arg(&dest)]);
    assert!(err.contains("wide.png") && err.contains("more than the 33554432 in all"), "{err}");
    // Nor may a conversion be asked to make such images.
    let small = dataset(&dir.join("small.zip"), &[("a.png", gray_png(8))]);
    let args = ["dataset", "convert", "--source", arg(&small), "--dest", arg(&dest), "--resolution", "65536x65536"];
    let err = difi_refuses(&args);
    assert!(err.contains("resolution") && err.contains("65536x65536 pixels, more than the 8192 per side"), "{err}");
    assert_eq!(entries(&dir), ["enormous.zip", "huge.zip", "photos", "small.zip"], "nothing written");
}

#[test]
fn idx_files_whose_header_overflows_or_lies_are_refused() {
    let dir = scratch("hostile-idx");
    let images = dir.join("bad-images-idx3-ubyte.gz");
    let labels = dir.join("bad-labels-idx1-ubyte.gz");
    let dest = dir.join("out.zip");
    let convert = || difi_refuses(&["dataset", "convert", "--source", arg(&images), "--dest", arg(&dest)]);
    let cases: Vec<([u32; 3], usize, u32, &str)> = vec![
        // count × rows × cols overflows 64 bits.
        ([u32::MAX, u32::MAX, u32::MAX], 0, u32::MAX, "pixels, more than the 8192 per side"),
        // A plausible size, but far more pixels than the limit.
        ([u32::MAX, 28, 28], 0, u32::MAX, "more than the 1073741824 bytes"),
        // A gzip bomb: 10 images announced, 64 MiB inflated.
        ([10, 28, 28], 64 << 20, 10, "holds more data than its header announces (10×28×28)"),
        // Truncated: 1000 images announced, 10 there.
        ([1000, 28, 28], 10 * 28 * 28, 1000, "holds 7840 bytes of data, its header announces 1000×28×28"),
    ];
    for ([count, rows, cols], zeros, label_count, expected) in cases {
        gz(&images, &[&be32(&[2051, count, rows, cols])], zeros);
        gz(&labels, &[&be32(&[2049, label_count])], (count as usize).min(1 << 20));
        let err = convert();
        assert!(err.contains("bad-images-idx3-ubyte.gz") && err.contains(expected), "{expected}: {err}");
    }
    // A label file that lies about its count or holds too many labels.
    gz(&images, &[&be32(&[2051, 10, 28, 28])], 10 * 28 * 28);
    gz(&labels, &[&be32(&[2049, 11])], 11);
    let err = convert();
    assert!(err.contains("bad-labels-idx1-ubyte.gz") && err.contains("holds 11 labels for 10 images"), "{err}");
    gz(&labels, &[&be32(&[2049, 10])], 32 << 20);
    let err = convert();
    assert!(err.contains("bad-labels-idx1-ubyte.gz") && err.contains("holds more data"), "{err}");
    assert!(!dest.exists());
}

#[test]
fn cifar_batches_larger_than_a_batch_are_refused_unread() {
    let dir = scratch("hostile-cifar");
    let tarball = dir.join("cifar-10-python.tar.gz");
    let mut tar = tar::Builder::new(GzEncoder::new(std::fs::File::create(&tarball).unwrap(), Compression::fast()));
    let mut header = tar::Header::new_gnu();
    let size = 65u64 << 20;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let zeros = std::io::Read::take(std::io::repeat(0), size);
    tar.append_data(&mut header, "cifar-10-batches-py/data_batch_1", zeros).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let dest = dir.join("out.zip");
    let err = difi_refuses(&["dataset", "convert", "--source", arg(&tarball), "--dest", arg(&dest)]);
    assert!(
        err.contains("cifar-10-python.tar.gz")
            && err.contains("data_batch_1 is 68157440 bytes; a CIFAR-10 batch is at most 67108864"),
        "{err}"
    );
    assert!(!dest.exists());
}

#[test]
fn links_to_folders_and_special_files_are_refused() {
    let dir = scratch("hostile-links");
    let folder = dataset(&dir.join("data"), &[("00000/img00000000.png", gray_png(8))]);
    // One link to `.` once listed the image 41 times; two never finished.
    std::os::unix::fs::symlink(".", folder.join("00000/x")).unwrap();
    std::os::unix::fs::symlink(".", folder.join("00000/y")).unwrap();
    let err = difi_refuses(&["dataset", "info", arg(&folder)]);
    assert!(err.contains("00000/") && err.contains("is a link to a folder"), "{err}");
    let dest = dir.join("out.zip");
    let err = difi_refuses(&["dataset", "convert", "--source", arg(&folder), "--dest", arg(&dest)]);
    assert!(err.contains("is a link to a folder"), "{err}");
    std::fs::remove_file(folder.join("00000/x")).unwrap();
    std::fs::remove_file(folder.join("00000/y")).unwrap();
    // A link to an image is an image; a link to an endless device is refused.
    std::os::unix::fs::symlink(folder.join("00000/img00000000.png"), folder.join("00000/img00000001.png")).unwrap();
    assert!(difi_ok(&["dataset", "info", arg(&folder), "--json"]).contains(r#""count":2"#));
    std::os::unix::fs::symlink("/dev/zero", folder.join("00000/img00000002.png")).unwrap();
    let err = difi_refuses(&["dataset", "info", arg(&folder)]);
    assert!(err.contains("img00000002.png") && err.contains("not a regular file"), "{err}");
    assert!(!dest.exists());
}

#[test]
fn labels_beyond_the_class_limit_are_refused_naming_file_and_label() {
    let dir = scratch("hostile-labels");
    let image = ("a.png", gray_png(8));
    for (name, label) in
        [("max.zip", i64::MAX.to_string()), ("million.zip", "1000000".into()), ("neg.zip", "-1".into())]
    {
        let metadata = format!(r#"{{"labels": [["a.png", {label}]]}}"#);
        let zip = dataset(&dir.join(name), &[image.clone(), ("dataset.json", metadata.into_bytes())]);
        let err = difi_refuses(&["dataset", "info", arg(&zip)]);
        assert!(
            err.contains(name)
                && err.contains(&format!("the label of a.png is `{label}`, not a class index in 0..1000000")),
            "{err}"
        );
        let params = ImageDatasetParams { path: zip, label_dim: Some(10), ..Default::default() };
        let err = ImageDataset::open(&params, Path::new(".")).err().expect("refused").to_string();
        assert!(err.contains(name) && err.contains("a.png"), "{err}");
    }
    // A dataset.json with more labels than there are images stops at the first extra one.
    let many = r#"{"labels": [["a.png", 0], ["b.png", 1], ["c.png", 2]]}"#;
    let zip = dataset(&dir.join("many.zip"), &[image.clone(), ("dataset.json", many.into())]);
    let err = difi_refuses(&["dataset", "info", arg(&zip)]);
    assert!(
        err.contains("many.zip") && err.contains("dataset.json: labels b.png, which is not in the dataset"),
        "{err}"
    );
    // A class count beyond the limit in a config.
    let ok = dataset(&dir.join("ok.zip"), &[image, ("dataset.json", br#"{"labels": [["a.png", 3]]}"#.to_vec())]);
    let params = ImageDatasetParams { path: ok, label_dim: Some(i64::MAX), ..Default::default() };
    let err = ImageDataset::open(&params, Path::new(".")).err().expect("refused").to_string();
    assert!(err.contains("label_dim") && err.contains("0..=1000000"), "{err}");
}

#[test]
fn zip_sizes_that_lie_are_not_trusted() {
    let dir = scratch("hostile-zip-sizes");
    let zip = dataset(
        &dir.join("liar.zip"),
        &[("a.png", gray_png(8)), ("dataset.json", br#"{"labels": [["a.png", 1]]}"#.to_vec())],
    );
    // Claim ~4 GB for dataset.json in its local and central headers.
    let mut bytes = std::fs::read(&zip).unwrap();
    let name = b"dataset.json";
    for (signature, sizes_at) in [(b"PK\x03\x04", 18), (b"PK\x01\x02", 20)] {
        let name_at = if signature == b"PK\x03\x04" { 30 } else { 46 };
        let start = (0..bytes.len() - name_at - name.len())
            .find(|&i| &bytes[i..i + 4] == signature && &bytes[i + name_at..i + name_at + name.len()] == name)
            .expect("the entry's header");
        for field in [sizes_at, sizes_at + 4] {
            bytes[start + field..start + field + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        }
    }
    std::fs::write(&zip, &bytes).unwrap();
    let err = difi_refuses(&["dataset", "info", arg(&zip)]);
    assert!(err.contains("liar.zip"), "{err}");
}

#[test]
fn export_never_overwrites_and_leaves_nothing_on_failure() {
    let dir = scratch("hostile-export");
    let zip = dataset(
        &dir.join("d.zip"),
        &[("a.png", gray_png(8)), ("dataset.json", br#"{"labels": [["a.png", 1]]}"#.to_vec())],
    );
    let same = dir.join("same.npy");
    let err = difi_refuses(&["dataset", "export", arg(&zip), "--out", arg(&same), "--labels", arg(&same)]);
    assert!(err.contains("same.npy: is the same file as"), "{err}");
    let other_spelling = dir.join("sub").join("..").join("same.npy");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let err = difi_refuses(&["dataset", "export", arg(&zip), "--out", arg(&same), "--labels", arg(&other_spelling)]);
    assert!(err.contains("is the same file as"), "{err}");
    // Existing files are kept, in convert's words.
    let existing = dir.join("existing.npy");
    std::fs::write(&existing, b"keep me").unwrap();
    let (fresh_images, fresh_labels) = (dir.join("i.npy"), dir.join("l.npy"));
    for (images, labels) in [(&existing, &fresh_labels), (&fresh_images, &existing)] {
        let err = difi_refuses(&["dataset", "export", arg(&zip), "--out", arg(images), "--labels", arg(labels)]);
        assert!(err.contains("existing.npy: exists; remove it or choose another destination"), "{err}");
    }
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
    // A folder as --out, a missing parent folder.
    let err = difi_refuses(&["dataset", "export", arg(&zip), "--out", arg(&dir.join("sub"))]);
    assert!(err.contains("sub: exists"), "{err}");
    let err = difi_refuses(&["dataset", "export", arg(&zip), "--out", arg(&dir.join("nowhere/x.npy"))]);
    assert!(err.contains("nowhere"), "{err}");
    assert_eq!(entries(&dir), ["d.zip", "existing.npy", "sub"], "nothing left behind");
    assert!(entries(&dir.join("sub")).is_empty());
    // And a fresh pair is written.
    difi_ok(&["dataset", "export", arg(&zip), "--out", arg(&fresh_images), "--labels", arg(&fresh_labels)]);
    assert_eq!(entries(&dir), ["d.zip", "existing.npy", "i.npy", "l.npy", "sub"]);
}
