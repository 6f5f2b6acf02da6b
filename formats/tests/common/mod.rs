//! Builders for the hostile files the tests write: `.npy` bytes, zip
//! archives with any header fields, and pickles opcode by opcode.
#![allow(dead_code)]

/// An `.npy` with `header` (padded as numpy pads it) followed by `data`.
pub fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    while !(10 + text.len() + 1).is_multiple_of(64) {
        text.push(' ');
    }
    text.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((text.len() as u16).to_le_bytes());
    out.extend(text.as_bytes());
    out.extend(data);
    out
}

/// One zip entry, with every field the tests may falsify.
pub struct ZipEntry {
    pub name: String,
    pub method: u16,
    pub flags: u16,
    pub crc: u32,
    pub uncompressed: u32,
    pub data: Vec<u8>,
}

impl ZipEntry {
    /// A stored entry with honest sizes and CRC.
    pub fn stored(name: &str, content: &[u8]) -> Self {
        let mut crc = flate2::Crc::new();
        crc.update(content);
        ZipEntry {
            name: name.into(),
            method: 0,
            flags: 0,
            crc: crc.sum(),
            uncompressed: content.len() as u32,
            data: content.to_vec(),
        }
    }

    /// A deflated entry with honest sizes and CRC.
    pub fn deflated(name: &str, content: &[u8]) -> Self {
        use std::io::Write;
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(content).unwrap();
        ZipEntry { method: 8, data: encoder.finish().unwrap(), ..ZipEntry::stored(name, content) }
    }
}

/// A zip archive of `entries` (local headers, central directory, end record).
pub fn zip(entries: &[ZipEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for e in entries {
        let offset = out.len() as u32;
        let fields = |out: &mut Vec<u8>| {
            out.extend(20u16.to_le_bytes());
            out.extend(e.flags.to_le_bytes());
            out.extend(e.method.to_le_bytes());
            out.extend([0u8; 4]); // time, date
            out.extend(e.crc.to_le_bytes());
            out.extend((e.data.len() as u32).to_le_bytes());
            out.extend(e.uncompressed.to_le_bytes());
            out.extend((e.name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes()); // extra
        };
        out.extend(0x04034b50u32.to_le_bytes());
        fields(&mut out);
        out.extend(e.name.as_bytes());
        out.extend(&e.data);
        central.extend(0x02014b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // made by
        fields(&mut central);
        central.extend([0u8; 8]); // comment length, disk, internal and external attributes (part)
        central.extend([0u8; 2]);
        central.extend(offset.to_le_bytes());
        central.extend(e.name.as_bytes());
    }
    let central_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x06054b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(central_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// Pickle opcodes, protocol 2.
pub mod pk {
    pub fn wrap(body: &[u8]) -> Vec<u8> {
        [b"\x80\x02".as_slice(), body, b"."].concat()
    }
    pub fn str(text: &str) -> Vec<u8> {
        [b"X".as_slice(), &(text.len() as u32).to_le_bytes(), text.as_bytes()].concat()
    }
    pub fn bytes(data: &[u8]) -> Vec<u8> {
        [b"B".as_slice(), &(data.len() as u32).to_le_bytes(), data].concat()
    }
    pub fn int(value: i32) -> Vec<u8> {
        [b"J".as_slice(), &value.to_le_bytes()].concat()
    }
    pub fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }
    pub fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
        [b"(".as_slice(), &items.concat(), b"t"].concat()
    }
    pub fn dict(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let items: Vec<u8> = pairs.iter().flat_map(|(k, v)| [k.clone(), v.clone()].concat()).collect();
        [b"}(".as_slice(), &items, b"u"].concat()
    }
    pub fn call(module: &str, name: &str, args: &[Vec<u8>]) -> Vec<u8> {
        [global(module, name), tuple(args), b"R".to_vec()].concat()
    }
    pub fn put(index: u32) -> Vec<u8> {
        [b"r".as_slice(), &index.to_le_bytes()].concat()
    }
    pub fn get(index: u32) -> Vec<u8> {
        [b"j".as_slice(), &index.to_le_bytes()].concat()
    }
}

/// torch's legacy serialization of one float storage holding `values`, with
/// `declared` as the element count written before the data.
pub fn legacy_float_storage(values: &[f32], declared: u64) -> Vec<u8> {
    use pk::*;
    let magic = [b"\x8a\x0a".as_slice(), &0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]].concat();
    let id = tuple(&[str("storage"), global("torch", "FloatStorage"), str("0"), str("cpu"), int(values.len() as i32)]);
    let mut out = [
        wrap(&magic),
        wrap(&int(1001)),
        wrap(&dict(&[(str("little_endian"), b"\x88".to_vec())])),
        wrap(&[id, b"Q".to_vec()].concat()),
        wrap(&[b"(".as_slice(), &str("0"), b"l"].concat()),
    ]
    .concat();
    out.extend(declared.to_le_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// The opcodes of `_rebuild_tensor_v2(_load_from_bytes(storage), offset, size, stride, False, {})`.
pub fn tensor(storage: &[u8], offset: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
    use pk::*;
    let ints = |v: &[i32]| tuple(&v.iter().map(|&i| int(i)).collect::<Vec<_>>());
    call(
        "torch._utils",
        "_rebuild_tensor_v2",
        &[
            call("torch.storage", "_load_from_bytes", &[bytes(storage)]),
            int(offset),
            ints(size),
            ints(stride),
            b"\x89".to_vec(),
            b"}".to_vec(),
        ],
    )
}
