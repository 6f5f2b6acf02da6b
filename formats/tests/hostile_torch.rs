//! Pickled tensors whose views or storages do not match the bytes present
//! are refused with an error naming the checkpoint file and the tensor.

mod common;

use std::path::Path;

use common::pk::*;
use common::{legacy_float_storage, tensor};
use difi_formats::pickle::parse;
use difi_formats::torch_legacy::{load_legacy_storage, rebuild_tensor};
use difi_formats::torch_persistence::PersistentModule;

fn rebuild(storage: &[u8], offset: i32, size: &[i32], stride: &[i32]) -> Result<tch::Tensor, String> {
    let (value, _) = parse(&wrap(&tensor(storage, offset, size, stride))).unwrap();
    rebuild_tensor(&value).map_err(|e| e.to_string())
}

#[test]
fn a_valid_view_is_rebuilt() {
    let storage = legacy_float_storage(&[0., 1., 2., 3., 4., 5.], 6);
    let t = rebuild(&storage, 0, &[2, 3], &[3, 1]).unwrap();
    assert_eq!(t.size(), [2, 3]);
    // A transposed view and an offset view.
    let t = rebuild(&storage, 0, &[3, 2], &[1, 3]).unwrap();
    assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), [0., 3., 1., 4., 2., 5.]);
    let t = rebuild(&storage, 4, &[2], &[1]).unwrap();
    assert_eq!(Vec::<f32>::try_from(t).unwrap(), [4., 5.]);
    assert_eq!(rebuild(&storage, 0, &[0, 3], &[3, 1]).unwrap().size(), [0, 3]);
}

#[test]
fn views_that_repeat_or_leave_their_storage_are_refused() {
    let storage = legacy_float_storage(&[1.0], 1);
    // 1.5 KB that converted into a 2 GB file: one element, stride 0, 2^29 times.
    let err = rebuild(&storage, 0, &[1 << 29], &[0]).unwrap_err();
    assert!(err.contains("repeats storage elements"), "{err}");
    let six = legacy_float_storage(&[0.; 6], 6);
    for (offset, size, stride, expected) in [
        (0, vec![2, 3], vec![1, 1], "repeats"),
        (0, vec![7], vec![1], "does not fit"),
        (5, vec![2], vec![1], "does not fit"),
        (0, vec![2, 2], vec![i32::MAX, 1], "does not fit"),
        (-1, vec![1], vec![1], "negative"),
        (0, vec![2], vec![-1], "negative"),
        (0, vec![2, 3], vec![1], "do not describe"),
    ] {
        let err = rebuild(&six, offset, &size, &stride).unwrap_err();
        assert!(err.contains(expected), "{size:?} {stride:?}: {err}");
    }
}

#[test]
fn a_storage_announcing_more_elements_than_present_is_refused() {
    let storage = legacy_float_storage(&[1.0, 2.0], 1 << 40);
    let err = load_legacy_storage(&storage).unwrap_err().to_string();
    assert!(err.contains("truncated storage"), "{err}");
    let storage = legacy_float_storage(&[1.0, 2.0], u64::MAX);
    assert!(load_legacy_storage(&storage).unwrap_err().to_string().contains("overflows"));
}

/// `_reconstruct_persistent_obj` of a module whose parameters are `params`.
fn network(params: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let state = dict(&[(str("_init_kwargs"), dict(&[])), (str("_parameters"), dict(params))]);
    let meta = dict(&[(str("class_name"), str("Net")), (str("state"), state)]);
    wrap(&call("torch_utils.persistence", "_reconstruct_persistent_obj", &[meta]))
}

#[test]
fn tensor_errors_name_the_checkpoint_and_the_tensor() {
    let storage = legacy_float_storage(&[1.0], 1);
    let data = network(&[(str("weight"), tensor(&storage, 0, &[4], &[1]))]);
    let (value, _) = parse(&data).unwrap();
    let err = PersistentModule::read(&value, "ema", Path::new("edm.pkl")).err().unwrap().to_string();
    assert!(err.starts_with("checkpoint edm.pkl") && err.contains("`weight`"), "{err}");
    let good = network(&[(str("weight"), tensor(&storage, 0, &[1], &[1]))]);
    let module = PersistentModule::read(&parse(&good).unwrap().0, "ema", Path::new("edm.pkl")).unwrap();
    assert_eq!(module.tensors.len(), 1);
}

#[test]
fn one_storage_read_into_many_tensors_is_refused() {
    // One 4 KB storage referenced by 1000 parameters through the memo: 4 MB of tensors from 10 KB.
    let storage = legacy_float_storage(&[0.5; 1024], 1024);
    let mut params = vec![(str("w0"), [tensor(&storage, 0, &[1024], &[1]), put(1)].concat())];
    params.extend((1..1000).map(|i| (str(&format!("w{i}")), get(1))));
    let (value, _) = parse(&network(&params)).unwrap();
    let err = PersistentModule::read(&value, "ema", Path::new("edm.pkl")).err().unwrap().to_string();
    assert!(err.contains("more than 4 times"), "{err}");
}
