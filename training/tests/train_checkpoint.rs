//! Checkpoints: round trips, atomic saves, and clear errors for damaged files.

use std::path::Path;

use strata_artifact::HostTensor;
use strata_training::{Checkpoint, CheckpointError};

fn checkpoint() -> Checkpoint {
    Checkpoint {
        weights: vec![
            (
                "w1".into(),
                HostTensor::f32(vec![2, 3], vec![0.5, -1.0, 2.0, 3.25, 0.0, -7.5]).unwrap(),
            ),
            (
                "adam.m.w1".into(),
                HostTensor::f32(vec![2, 3], vec![0.1; 6]).unwrap(),
            ),
            (
                "b1".into(),
                HostTensor::f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
            ),
            ("adam.t".into(), HostTensor::i32(vec![1], vec![17]).unwrap()),
        ],
        step: 17,
        epoch: 2,
        rng_state: 0xdead_beef_1234_5678,
        best_metric: Some(0.937_5),
        extra: serde_json::json!({"lr": 0.01, "patience_left": 3}),
    }
}

fn sorted(mut c: Checkpoint) -> Checkpoint {
    c.weights.sort_by(|a, b| a.0.cmp(&b.0));
    c
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn saved_checkpoint_loads_back_equal_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    checkpoint().save_atomic(&path).unwrap();
    let loaded = Checkpoint::load(&path).unwrap();
    assert_eq!(loaded, sorted(checkpoint()));
    assert_eq!(loaded.tensor("adam.t").unwrap().as_i32().unwrap(), &[17]);

    let mut no_best = checkpoint();
    no_best.best_metric = None;
    no_best.extra = serde_json::Value::Null;
    no_best.save_atomic(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap(), sorted(no_best));
}

#[test]
fn atomic_save_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    checkpoint().save_atomic(&path).unwrap();
    checkpoint().save_atomic(&path).unwrap(); // over an existing file
    assert_eq!(files_in(dir.path()), vec!["ckpt.safetensors"]);
}

#[test]
fn failed_save_leaves_the_old_checkpoint_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    checkpoint().save_atomic(&path).unwrap();
    let mut bad = checkpoint();
    bad.weights
        .push(("w1".into(), HostTensor::f32(vec![1], vec![0.0]).unwrap()));
    let err = bad.save_atomic(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::DuplicateKey { .. }), "{err}");
    assert_eq!(files_in(dir.path()), vec!["ckpt.safetensors"]);
    assert_eq!(Checkpoint::load(&path).unwrap(), sorted(checkpoint()));

    let missing_dir = dir.path().join("no/such/dir/ckpt.safetensors");
    let err = checkpoint().save_atomic(&missing_dir).unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn truncated_checkpoint_is_reported_as_corrupt() {
    let bytes = checkpoint().to_bytes().unwrap();
    for cut in [0, 7, 8, 100, bytes.len() - 1] {
        let err = Checkpoint::from_bytes(&bytes[..cut], Path::new("c.st")).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "cut {cut}: {err}"
        );
        assert!(
            err.to_string().starts_with("c.st: corrupt checkpoint"),
            "{err}"
        );
    }
}

#[test]
fn flipped_tensor_bytes_fail_the_checksum() {
    let mut bytes = checkpoint().to_bytes().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let err = Checkpoint::from_bytes(&bytes, Path::new("c.st")).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[test]
fn garbage_and_plain_safetensors_are_not_checkpoints() {
    let err = Checkpoint::from_bytes(b"hello, world", Path::new("g")).unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");

    let x = HostTensor::f32(vec![1], vec![1.0]).unwrap();
    let plain = strata_artifact::weights::encode_weights([("x", &x)]).unwrap();
    let err = Checkpoint::from_bytes(&plain, Path::new("p")).unwrap_err();
    assert!(
        matches!(err, CheckpointError::NotACheckpoint { .. }),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let err = Checkpoint::load(&dir.path().join("absent")).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
}

#[test]
fn check_against_lists_missing_unexpected_and_misshapen_tensors() {
    let c = checkpoint();
    let expected = [
        ("w1", vec![2u64, 3]),
        ("adam.m.w1", vec![2, 3]),
        ("b1", vec![4]),
        ("adam.t", vec![1]),
        ("w2", vec![3, 1]),
    ];
    let err = c
        .check_against(expected.iter().map(|(k, s)| (*k, s)))
        .unwrap_err();
    let CheckpointError::Mismatch {
        missing,
        unexpected,
        shapes,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(missing, &["w2"]);
    assert!(unexpected.is_empty());
    assert_eq!(shapes.len(), 1);
    assert_eq!(
        (shapes[0].key.as_str(), shapes[0].found.as_slice()),
        ("b1", &[3u64][..])
    );
    assert_eq!(
        err.to_string(),
        "checkpoint does not fit the model: missing tensors `w2`; \
         tensor `b1` has shape [3] where [4] is expected"
    );

    let exact = c.weights.iter().map(|(k, t)| (k.as_str(), t.shape.clone()));
    c.check_against(exact).unwrap();
    let err = c
        .check_against([("w1", [2u64, 3])])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unexpected tensors `adam.m.w1`, `adam.t`, `b1`"),
        "{err}"
    );
}

#[test]
fn weights_alone_encode_as_plain_safetensors() {
    let bytes = checkpoint().weights_safetensors().unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.names().len(), 4);
}

/// `bytes` with the first `from` in the safetensors header replaced by `to` (same
/// length, so the file stays well-formed).
fn edit_header(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(header.contains(from), "{from} not in {header}");
    let mut edited = bytes[..8].to_vec();
    edited.extend_from_slice(header.replacen(from, to, 1).as_bytes());
    edited.extend_from_slice(&bytes[8 + n..]);
    edited
}

#[test]
fn a_changed_digit_in_any_metadata_fails_the_checksum() {
    let bytes = checkpoint().to_bytes().unwrap();
    for (from, to) in [
        (r#""step":"17""#, r#""step":"18""#),
        (r#""epoch":"2""#, r#""epoch":"3""#),
        (r#""best_metric":"0.9375""#, r#""best_metric":"0.9875""#),
        (r#"\"patience_left\":3"#, r#"\"patience_left\":4"#),
    ] {
        let edited = edit_header(&bytes, from, to);
        let err = Checkpoint::from_bytes(&edited, Path::new("c.st")).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }) && err.to_string().contains("checksum"),
            "{from} -> {to}: {err}"
        );
    }
}

#[test]
fn checkpoints_of_the_same_state_are_the_same_bytes() {
    // Every map of the standard library is seeded afresh: a header written in a
    // hash map's order would differ from one save to the next.
    let first = checkpoint().to_bytes().unwrap();
    for _ in 0..16 {
        assert!(checkpoint().to_bytes().unwrap() == first, "bytes differ");
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.ckpt"), dir.path().join("b.ckpt"));
    checkpoint().save_atomic(&a).unwrap();
    checkpoint().save_atomic(&b).unwrap();
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}

#[test]
fn a_checkpoint_of_an_older_format_is_refused_with_a_hint() {
    let x = HostTensor::f32(vec![1], vec![1.0]).unwrap();
    let bytes = strata_artifact::weights::encode_weights([("x", &x)]).unwrap();
    let mut metadata = std::collections::HashMap::new();
    metadata.insert("format".to_string(), "strata-checkpoint".to_string());
    metadata.insert("format_version".to_string(), "1".to_string());
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let old = safetensors::serialize(file.tensors(), Some(metadata)).unwrap();
    let err = Checkpoint::from_bytes(&old, Path::new("old.ckpt")).unwrap_err();
    assert!(
        matches!(err, CheckpointError::UnsupportedVersion { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with("old.ckpt: checkpoint format version 1")
            && text.contains(&format!(
                "reads version {}",
                strata_training::checkpoint::CHECKPOINT_FORMAT_VERSION
            ))
            && text.contains("start a new run"),
        "{text}"
    );
}
