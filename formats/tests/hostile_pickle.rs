//! Pickles built to exhaust memory or the stack are refused quickly, and the
//! memo shares values the way Python does.

mod common;

use std::time::Instant;

use common::pk::*;
use difi_formats::pickle::{MAX_DEPTH, MAX_VALUES, Value, parse};

fn err(data: &[u8]) -> String {
    parse(data).unwrap_err().to_string()
}

#[test]
fn huge_memo_indices_allocate_nothing() {
    // PUT at index 2^32-1 resized the memo vector to 171 GB worth of slots.
    let (value, _) = parse(&wrap(&[b"N".as_slice(), &put(u32::MAX)].concat())).unwrap();
    assert_eq!(value, Value::None);
    // A text PUT at usize::MAX overflowed `index + 1`.
    let (value, _) = parse(&wrap(b"Np18446744073709551615\n")).unwrap();
    assert_eq!(value, Value::None);
    assert!(err(&wrap(b"g18446744073709551615\n")).contains("memo 18446744073709551615 is empty"));
    assert!(err(&wrap(b"p99999999999999999999999\n")).contains("bad PUT index"));
}

#[test]
fn a_list_filled_after_its_put_reads_back_filled() {
    // l = []; memo it; append 1, 2; then (l, l) — Python reads ([1, 2], [1, 2]).
    let data = wrap(&[b"]".as_slice(), &put(0), b"(K\x01K\x02e", &get(0), b"\x86"].concat());
    let (value, _) = parse(&data).unwrap();
    let items = value.as_sequence().unwrap();
    let expected = Value::List(vec![Value::Int(1), Value::Int(2)].into());
    assert_eq!(items, [expected.clone(), expected]);
}

#[test]
fn billion_laughs_shares_instead_of_copying() {
    // 30 levels of lists, each holding the level below ten times: 10^30
    // values if expanded, a few hundred shared ones here.
    let mut body = [b"]".as_slice(), &put(0)].concat();
    for level in 1..=30u32 {
        body.push(b'(');
        for _ in 0..10 {
            body.extend(get(level - 1));
        }
        body.push(b'l');
        body.extend(put(level));
    }
    let data = wrap(&body);
    assert!(data.len() < 2000);
    let start = Instant::now();
    let (value, _) = parse(&data).unwrap();
    assert!(start.elapsed().as_secs() < 2);
    assert_eq!(value.as_sequence().unwrap().len(), 10);
    // Converting such a value to JSON is bounded too.
    let err = difi_formats::torch_persistence::to_json(&value, "kwargs").unwrap_err().to_string();
    assert!(err.contains("more than"), "{err}");
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    // 200 000 nested tuples overflowed the stack when dropped.
    let deep = wrap(&[b")".as_slice(), &vec![0x85u8; 200_000]].concat());
    assert!(err(&deep).contains(&format!("nest deeper than {MAX_DEPTH} levels")));
    let deep_lists = wrap(&[b"(".repeat(200_000), b"l".repeat(200_000)].concat());
    assert!(err(&deep_lists).contains("nest deeper"));
    // The deepest accepted value is dropped, compared and cloned within a test thread's stack.
    let deepest = wrap(&[b")".as_slice(), &vec![0x85u8; MAX_DEPTH - 1]].concat());
    let (value, _) = parse(&deepest).unwrap();
    assert_eq!(value.clone(), value);
}

#[test]
fn self_referencing_values_are_refused() {
    // l = []; l.append(l)
    let data = wrap(&[b"]".as_slice(), &put(0), &get(0), b"a"].concat());
    assert!(err(&data).contains("contains itself"));
}

#[test]
fn value_count_is_bounded() {
    // DUP six million times: six million stack entries from 6 MB.
    let data = wrap(&[b"N".as_slice(), &vec![b'2'; MAX_VALUES + 10]].concat());
    assert!(err(&data).contains(&format!("more than {MAX_VALUES} values")));
    // Calls copy their argument tuple: a memoized 1000-item tuple called many times.
    let mut body = [b"(".as_slice(), &b"N".repeat(1000), b"t", &put(0), b"0"].concat();
    for _ in 0..10_000 {
        body.extend([b"N".as_slice(), &get(0), b"R0"].concat());
    }
    assert!(err(&wrap(&body)).contains("values"));
}

#[test]
fn truncated_and_odd_inputs_are_errors() {
    for data in [
        b"".as_slice(),
        b"\x80",
        b"\x80\x02",
        b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x80\x02\x8b\xff\xff\xff\x7f",
        b"\x80\x02t.",
        b"\x80\x02(u.",
        b"\x80\x02b.",
        b"\x80\x02NN\x93.",
        b"\x80\x02NNR.",
    ] {
        assert!(parse(data).is_err(), "{data:?}");
    }
}
