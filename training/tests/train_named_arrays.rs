//! Files of named arrays (`.npz`, safetensors, a directory of `.npy` files) read for a
//! model's inputs and labels: what loads, the errors that name the file and the array,
//! and hostile archives that must be errors, never panics.

use std::path::{Path, PathBuf};

use strata_artifact::HostTensor;
use strata_artifact::tensor::TensorData;
use strata_artifact::weights::encode_weights;
use strata_kernels::ir::ScalarType;
use strata_training::loaders::npz_file::NpzArchive;
use strata_training::loaders::{ArrayFileKind, ArrayRequest, ArrayRole, load_named};
use strata_training::{DataSource, Labels};

fn request(name: &str, dtype: ScalarType, shape: &[u64], role: ArrayRole) -> ArrayRequest {
    ArrayRequest {
        name: name.into(),
        dtype,
        sample_shape: shape.to_vec(),
        role,
    }
}

fn f32_input(name: &str, shape: &[u64], role: ArrayRole) -> ArrayRequest {
    request(name, ScalarType::F32, shape, role)
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A safetensors file of `tensors` in a fresh directory (kept alive by the returned guard).
fn safetensors_file(tensors: &[(&str, HostTensor)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    let bytes = encode_weights(tensors.iter().map(|(n, t)| (*n, t))).unwrap();
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

fn pairs() -> Vec<ArrayRequest> {
    vec![
        f32_input("a", &[4], ArrayRole::Features),
        request("same", ScalarType::I32, &[], ArrayRole::Label),
        f32_input("b", &[4], ArrayRole::Other),
    ]
}

#[test]
fn an_npz_written_as_numpy_writes_it_fills_each_input_by_name() {
    // Deflated members with ZIP64 local headers, as `np.savez_compressed` writes them.
    let path = repo_file("dsl-examples/data/digit_pairs.npz");
    let requests = [
        f32_input("a", &[64], ArrayRole::Features),
        request("same", ScalarType::I32, &[], ArrayRole::Label),
        f32_input("b", &[64], ArrayRole::Other),
    ];
    let data = load_named(ArrayFileKind::Npz, &path, &[], &requests).unwrap();
    assert_eq!(data.len, 1200);
    assert!(data.features.iter().all(|&x| (0.0..=16.0).contains(&x)));
    let Labels::Classes { values, classes } = &data.labels else {
        panic!("`same` is a class label: {:?}", data.labels)
    };
    assert_eq!((*classes, values.iter().sum::<i32>()), (2, 600));
    assert_eq!(data.arrays.len(), 1);
    assert_eq!(data.arrays[0].name, "b");
    assert_eq!(data.arrays[0].sample_shape, vec![64]);
    let archive = NpzArchive::parse(std::fs::read(&path).unwrap(), "p.npz").unwrap();
    assert_eq!(archive.names(), vec!["a", "b", "same"]);
}

#[test]
fn a_mapping_names_the_array_an_input_or_label_takes() {
    let (_dir, path) = safetensors_file(&[
        (
            "left",
            HostTensor::f32(vec![2, 4], (0..8).map(|v| v as f32).collect()).unwrap(),
        ),
        ("right", HostTensor::f32(vec![2, 4], vec![9.0; 8]).unwrap()),
        ("target", HostTensor::i32(vec![2], vec![0, 1]).unwrap()),
    ]);
    let mapping: Vec<(String, String)> = [("a", "left"), ("b", "right"), ("same", "target")]
        .iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect();
    let data = load_named(ArrayFileKind::Safetensors, &path, &mapping, &pairs()).unwrap();
    assert_eq!(data.features, (0..8).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(data.arrays[0].data, TensorData::F32(vec![9.0; 8]));

    // The spec's form reads the same way.
    let spec = format!("safetensors:{},a=left,b=right,same=target", path.display());
    let source = DataSource::parse(&spec).unwrap();
    let file = source.array_file().unwrap();
    assert_eq!(
        (file.kind, file.path),
        (ArrayFileKind::Safetensors, path.as_path())
    );
    assert_eq!(file.names, mapping.as_slice());
}

#[test]
fn a_missing_array_names_the_file_the_array_and_what_it_holds() {
    let (_dir, path) = safetensors_file(&[
        ("a", HostTensor::f32(vec![2, 4], vec![0.0; 8]).unwrap()),
        ("same", HostTensor::i32(vec![2], vec![0, 1]).unwrap()),
    ]);
    let message = load_named(ArrayFileKind::Safetensors, &path, &[], &pairs())
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&path.display().to_string())
            && message.contains("no array `b` for the input `b`; it holds a, same")
            && message.contains("`b = \"ARRAY\"`"),
        "{message}"
    );
}

#[test]
fn a_wrong_shape_or_element_type_is_an_error_naming_the_array() {
    let (_dir, path) = safetensors_file(&[
        ("a", HostTensor::f32(vec![2, 4], vec![0.0; 8]).unwrap()),
        ("b", HostTensor::f32(vec![2, 2, 2], vec![0.0; 8]).unwrap()),
        ("same", HostTensor::i32(vec![2], vec![0, 1]).unwrap()),
    ]);
    let message = load_named(ArrayFileKind::Safetensors, &path, &[], &pairs())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("array `b` is [2, 2, 2], but the input `b` takes [batch, 4]"),
        "{message}"
    );
    let (_dir, path) = safetensors_file(&[
        ("a", HostTensor::f32(vec![2, 4], vec![0.0; 8]).unwrap()),
        ("b", HostTensor::f32(vec![2, 4], vec![0.0; 8]).unwrap()),
        ("same", HostTensor::f32(vec![2], vec![0.0, 1.0]).unwrap()),
    ]);
    let message = load_named(ArrayFileKind::Safetensors, &path, &[], &pairs())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("array `same` holds floating-point numbers, but the label `same` is i32"),
        "{message}"
    );
}

#[test]
fn arrays_that_disagree_on_the_number_of_samples_are_an_error() {
    let (_dir, path) = safetensors_file(&[
        ("a", HostTensor::f32(vec![2, 4], vec![0.0; 8]).unwrap()),
        ("b", HostTensor::f32(vec![3, 4], vec![0.0; 12]).unwrap()),
        ("same", HostTensor::i32(vec![2], vec![0, 1]).unwrap()),
    ]);
    let message = load_named(ArrayFileKind::Safetensors, &path, &[], &pairs())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("the arrays disagree on the number of samples: `a` has 2, `b` has 3"),
        "{message}"
    );
}

#[test]
fn a_directory_of_npy_files_is_read_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, t: HostTensor| {
        strata_artifact::npy::write_npy(&dir.path().join(format!("{name}.npy")), &t).unwrap()
    };
    save("a", HostTensor::f32(vec![3, 4], vec![1.0; 12]).unwrap());
    save("b", HostTensor::f32(vec![3, 4], vec![2.0; 12]).unwrap());
    save("same", HostTensor::i32(vec![3], vec![1, 0, 1]).unwrap());
    let data = load_named(ArrayFileKind::NpyDir, dir.path(), &[], &pairs()).unwrap();
    assert_eq!((data.len, data.features[0]), (3, 1.0));
    assert_eq!(data.arrays[0].data, TensorData::F32(vec![2.0; 12]));
    // A mapped name is a file of the directory, never a path out of it.
    let out = vec![("b".to_string(), "../b".to_string())];
    let message = load_named(ArrayFileKind::NpyDir, dir.path(), &out, &pairs())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no array `../b` for the input `b`"),
        "{message}"
    );
    // A file where a directory is expected says what `npy(…)` reads.
    let message = load_named(
        ArrayFileKind::NpyDir,
        &dir.path().join("a.npy"),
        &[],
        &pairs(),
    )
    .unwrap_err()
    .to_string();
    assert!(message.contains("not a directory"), "{message}");
}

#[test]
fn features_and_labels_arrays_still_fill_a_one_input_model_in_any_shape_of_the_size() {
    let (_dir, path) = safetensors_file(&[
        (
            "features",
            HostTensor::f32(vec![2, 16], vec![0.5; 32]).unwrap(),
        ),
        ("labels", HostTensor::f32(vec![2], vec![1.0, 2.0]).unwrap()),
    ]);
    let requests = [
        f32_input("img", &[1, 4, 4], ArrayRole::Features),
        f32_input("y", &[1], ArrayRole::Label),
    ];
    let data = load_named(ArrayFileKind::Safetensors, &path, &[], &requests).unwrap();
    assert_eq!(data.feature_shape, vec![1, 4, 4]);
    assert_eq!(
        data.labels,
        Labels::Targets {
            values: vec![1.0, 2.0],
            width: 1
        }
    );
}

#[test]
fn labels_may_have_any_rank() {
    let (_dir, path) = safetensors_file(&[
        ("x", HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap()),
        (
            "t",
            HostTensor::f32(vec![2, 3, 2], (0..12).map(|v| v as f32).collect()).unwrap(),
        ),
        (
            "tags",
            HostTensor::i32(vec![2, 3], vec![0, 1, 2, 2, 1, 0]).unwrap(),
        ),
    ]);
    let requests = [
        f32_input("x", &[3], ArrayRole::Features),
        f32_input("t", &[3, 2], ArrayRole::Label),
        request("tags", ScalarType::I32, &[3], ArrayRole::Other),
    ];
    let data = load_named(ArrayFileKind::Safetensors, &path, &[], &requests).unwrap();
    assert!(matches!(data.labels, Labels::Targets { width: 6, .. }));
    // As the first label, integer sequences are class sequences.
    let requests = [
        f32_input("x", &[3], ArrayRole::Features),
        request("tags", ScalarType::I32, &[3], ArrayRole::Label),
    ];
    let data = load_named(ArrayFileKind::Safetensors, &path, &[], &requests).unwrap();
    assert!(matches!(
        data.labels,
        Labels::Sequences {
            classes: 3,
            length: 3,
            ..
        }
    ));
    // A pair of .npy files takes labels of any rank too (per-position targets).
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    strata_artifact::npy::write_npy(&x, &HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap())
        .unwrap();
    let targets = HostTensor::f32(vec![2, 3, 2], vec![0.5; 12]).unwrap();
    strata_artifact::npy::write_npy(&y, &targets).unwrap();
    let data = strata_training::loaders::load_npy(&x, &y).unwrap();
    assert!(matches!(data.labels, Labels::Targets { width: 6, .. }));
}

#[test]
fn splits_and_batches_keep_every_array_aligned_with_its_sample() {
    let n = 50;
    let (_dir, path) = safetensors_file(&[
        (
            "a",
            HostTensor::f32(vec![n, 4], (0..4 * n).map(|v| (v / 4) as f32).collect()).unwrap(),
        ),
        (
            "b",
            HostTensor::f32(
                vec![n, 4],
                (0..4 * n).map(|v| (v / 4) as f32 * 10.0).collect(),
            )
            .unwrap(),
        ),
        (
            "same",
            HostTensor::i32(vec![n], (0..n as i32).map(|i| i % 2).collect()).unwrap(),
        ),
    ]);
    let data = load_named(ArrayFileKind::Safetensors, &path, &[], &pairs()).unwrap();
    let (train, _, test) = data.split((0.6, 0.2, 0.2), 3).unwrap();
    for part in [&train, &test] {
        for batch in part.batches(7, Some(11)).unwrap() {
            let a = batch.features.as_f32().unwrap();
            let (name, b) = &batch.arrays[0];
            assert_eq!(name, "b");
            assert_eq!(b.shape, vec![batch.len as u64, 4]);
            let b = b.as_f32().unwrap();
            let labels = batch.labels.as_i32().unwrap();
            for i in 0..batch.len {
                assert_eq!(b[4 * i], a[4 * i] * 10.0);
                assert_eq!(labels[i], a[4 * i] as i32 % 2);
            }
        }
    }
}

/// A ZIP archive of stored (uncompressed) members, written field by field.
fn stored_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in members {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            for x in [0u16, 0, 0, 0] {
                v.extend(x.to_le_bytes()); // flags, method (stored), time, date
            }
            v.extend(crc.sum().to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra field length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend(20u16.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0]);
        common(&mut central);
        central.extend([0; 8]); // comment length, disk, internal and external attributes
        central.extend([0; 2]);
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0; 4]);
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0; 2]);
    out
}

fn npy_of(t: &HostTensor) -> Vec<u8> {
    strata_artifact::npy::npy_bytes(t, Path::new("m.npy")).unwrap()
}

#[test]
fn a_stored_archive_reads_and_a_damaged_one_is_an_error() {
    let x = npy_of(&HostTensor::f32(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap());
    let bytes = stored_zip(&[("x.npy", &x)]);
    let archive = NpzArchive::parse(bytes.clone(), "s.npz").unwrap();
    assert_eq!(archive.npy_bytes("x", 1 << 20).unwrap(), Some(x.clone()));
    assert_eq!(archive.npy_bytes("y", 1 << 20).unwrap(), None);
    // A member larger than the limit on decompressed data is refused before it is read.
    let message = archive.npy_bytes("x", 10).unwrap_err().to_string();
    assert!(message.contains("more than the limit of 10"), "{message}");

    // One flipped data byte: the CRC says so.
    let mut damaged = bytes.clone();
    let at = 30 + "x.npy".len() + x.len() - 1;
    damaged[at] ^= 0xff;
    let message = NpzArchive::parse(damaged, "s.npz")
        .unwrap()
        .npy_bytes("x", 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("s.npz: byte offset 0: member `x.npy`: CRC-32"),
        "{message}"
    );
    let message = NpzArchive::parse(b"PK not really".to_vec(), "n.npz")
        .err()
        .expect("not a zip")
        .to_string();
    assert!(message.contains("not an .npz file"), "{message}");
}

#[test]
fn hostile_archives_are_errors_never_panics() {
    let x = npy_of(&HostTensor::f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap());
    let y = npy_of(&HostTensor::i32(vec![3], vec![0, 1, 0]).unwrap());
    let valid = stored_zip(&[("x.npy", &x), ("y.npy", &y)]);
    let read_all = |bytes: Vec<u8>| {
        if let Ok(archive) = NpzArchive::parse(bytes, "h.npz") {
            for name in archive.names() {
                if let Ok(Some(npy)) = archive.npy_bytes(&name, 1 << 20) {
                    let _ = strata_artifact::npy::read_npy_bytes(&npy, Path::new("h.npy"));
                }
            }
        }
    };
    for cut in 0..valid.len() {
        read_all(valid[..cut].to_vec());
    }
    let mut rng = strata_kernels::rng::Philox::from_seed(5);
    for _ in 0..2000 {
        let mut bytes = valid.clone();
        for _ in 0..3 {
            let at = rng.next_u32() as usize % bytes.len();
            bytes[at] = rng.next_u32() as u8;
        }
        read_all(bytes);
    }
    // Counts and offsets of all ones (the ZIP64 markers) without a ZIP64 record.
    let mut huge = valid.clone();
    let eocd = huge.len() - 22;
    huge[eocd + 10..eocd + 20].fill(0xff);
    read_all(huge);
}
