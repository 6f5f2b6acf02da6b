//! `.npy` / `.npz` files that lie about their contents are refused with an
//! error naming the file and the problem, before any allocation the bytes
//! present do not back.

mod common;

use std::path::{Path, PathBuf};

use common::{ZipEntry, npy, zip};
use difi_formats::npz::{parse_npz, read_npy, read_npz, write_npz};
use tch::{Kind, Tensor};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("difi-hostile-npz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

const MU_HEADER: &str = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
const SIGMA_64: &str = "{'descr': '<f8', 'fortran_order': False, 'shape': (64, 64), }";

fn npz_err(bytes: &[u8]) -> String {
    parse_npz(std::io::Cursor::new(bytes), Path::new("stats.npz")).unwrap_err().to_string()
}

#[test]
fn arrays_written_by_difi_read_back() {
    let dir = scratch("roundtrip");
    let mu = Tensor::from_slice(&[1.5f64, -2.0, 3.25]);
    let sigma = Tensor::arange(9, (Kind::Double, tch::Device::Cpu)).reshape([3, 3]);
    let labels = Tensor::from_slice(&[3i64, 1, 4]);
    let pixels = Tensor::from_slice(&[0u8, 255, 7, 9]).reshape([2, 2]);
    let path = dir.join("stats.npz");
    write_npz(&path, &[("mu", &mu), ("sigma", &sigma), ("labels", &labels), ("pixels", &pixels)]).unwrap();
    let arrays = read_npz(&path).unwrap();
    let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["mu", "sigma", "labels", "pixels"]);
    for ((_, read), original) in arrays.iter().zip([&mu, &sigma, &labels, &pixels]) {
        assert_eq!(read.kind(), original.kind());
        assert!(read.equal(original));
    }
    let npy_path = dir.join("features.npy");
    difi_formats::npz::write_npy(&npy_path, &sigma.to_kind(Kind::Float)).unwrap();
    assert!(read_npy(&npy_path).unwrap().equal(&sigma.to_kind(Kind::Float)));
}

#[test]
fn scalars_fortran_order_and_deflated_entries_are_read() {
    let dir = scratch("variants");
    let scalar = read_npy(&write(
        &dir,
        "scalar.npy",
        &npy("{'descr': '<i8', 'fortran_order': False, 'shape': (), }", &7i64.to_le_bytes()),
    ))
    .unwrap();
    assert_eq!((scalar.size(), scalar.int64_value(&[])), (vec![], 7));
    // [[1, 2, 3], [4, 5, 6]] stored column by column.
    let fortran =
        npy("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }", &f64_bytes(&[1., 4., 2., 5., 3., 6.]));
    let t = read_npy(&write(&dir, "fortran.npy", &fortran)).unwrap();
    assert!(t.equal(&Tensor::from_slice(&[1f64, 2., 3., 4., 5., 6.]).reshape([2, 3])));
    // numpy.savez_compressed writes deflated entries.
    let compressed = zip(&[ZipEntry::deflated("mu.npy", &npy(MU_HEADER, &f64_bytes(&[0.5, 1.5])))]);
    let arrays = parse_npz(std::io::Cursor::new(compressed), Path::new("c.npz")).unwrap();
    assert!(arrays[0].1.equal(&Tensor::from_slice(&[0.5f64, 1.5])));
}

#[test]
fn a_header_that_promises_more_data_than_present_is_refused() {
    let dir = scratch("short");
    // FID statistics whose sigma header says 64×64 and that hold no data:
    // tch's reader copied 32 KiB from beyond the buffer.
    let path = write(&dir, "sigma.npy", &npy(SIGMA_64, &[]));
    let err = read_npy(&path).unwrap_err().to_string();
    assert!(err.contains("sigma.npy") && err.contains("needs 32768 data bytes, the file holds 0"), "{err}");
    let path = write(&dir, "short.npy", &npy(SIGMA_64, &[0u8; 100]));
    assert!(read_npy(&path).unwrap_err().to_string().contains("the file holds 100"));
    let path = write(&dir, "long.npy", &npy(MU_HEADER, &[0u8; 24]));
    assert!(read_npy(&path).unwrap_err().to_string().contains("needs 16 data bytes, the file holds 24"));
    // The same lie inside an .npz, with an honest zip entry.
    let err = npz_err(&zip(&[ZipEntry::stored("sigma.npy", &npy(SIGMA_64, &[]))]));
    assert!(err.contains("stats.npz") && err.contains("sigma.npy") && err.contains("needs"), "{err}");
}

#[test]
fn hostile_headers_are_refused() {
    let dir = scratch("headers");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic.npy", b"\x93NUMPZ\x01\x00\x00\x00".to_vec(), "magic"),
        ("version.npy", b"\x93NUMPY\x07\x00\x00\x00".to_vec(), "version 7.0"),
        ("huge-header.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec(), "header of 4294967295 bytes"),
        ("cut-header.npy", b"\x93NUMPY\x01\x00\x40\x00{'descr'".to_vec(), "truncated"),
        ("big-endian.npy", npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", &[0; 4]), "big-endian"),
        ("object.npy", npy("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", &[0; 8]), "unsupported dtype"),
        (
            "overflow.npy",
            npy("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", &[]),
            "overflows",
        ),
        ("bool.npy", npy("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", &[1, 7]), "other than 0 or 1"),
        ("empty.npy", Vec::new(), "8-byte preamble"),
    ];
    for (name, bytes, expected) in cases {
        let err = read_npy(&write(&dir, name, &bytes)).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(expected), "{name}: {err}");
    }
}

#[test]
fn hostile_npz_entries_are_refused() {
    let array = npy(MU_HEADER, &f64_bytes(&[1.0, 2.0]));
    let honest = ZipEntry::stored("mu.npy", &array);
    let cases: Vec<(ZipEntry, &str)> = vec![
        (ZipEntry { flags: 1, ..ZipEntry::stored("mu.npy", &array) }, "encrypted"),
        (ZipEntry { method: 14, ..ZipEntry::stored("mu.npy", &array) }, "compressed with"),
        (ZipEntry { method: 12, ..ZipEntry::stored("mu.npy", &array) }, "compressed with"),
        (ZipEntry { crc: honest.crc ^ 1, ..ZipEntry::stored("mu.npy", &array) }, "CRC mismatch"),
        (ZipEntry::stored("mu.txt", &array), "not an .npy array"),
        // The zip entry claims 4 GiB + more: refused before reading.
        (ZipEntry { uncompressed: u32::MAX, ..ZipEntry::deflated("mu.npy", &array) }, "bytes"),
        // A deflated entry that expands beyond its declared size stops at the declared size.
        (ZipEntry { uncompressed: array.len() as u32 - 8, ..ZipEntry::deflated("mu.npy", &array) }, "needs"),
        (ZipEntry { data: b"\xff\xff\xff garbage".to_vec(), ..ZipEntry::deflated("mu.npy", &array) }, "mu.npy"),
    ];
    for (entry, expected) in cases {
        let err = npz_err(&zip(&[entry]));
        assert!(err.contains("stats.npz") && err.contains(expected), "{expected}: {err}");
    }
    assert!(npz_err(b"PK\x03\x04 not really").contains("stats.npz"));
    // A stored entry whose data is cut short.
    let mut cut = zip(&[honest]);
    cut.truncate(40);
    assert!(npz_err(&cut).contains("stats.npz"));
}
