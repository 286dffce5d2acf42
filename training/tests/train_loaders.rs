//! Loading datasets from CSV, NPY, IDX and safetensors files: what loads, and the errors
//! (with file, line, column or offset) for what does not.

use std::io::Write;
use std::path::Path;

use strata_artifact::HostTensor;
use strata_kernels::rng::Philox;
use strata_training::loaders::{
    ALLOW_NONFINITE, CsvOptions, DataSpec, HeaderMode, Task, load_csv, load_idx, load_npy,
    load_safetensors, maybe_gunzip_at_most, parse_csv, parse_idx, parse_safetensors,
};
use strata_training::{DataError, DataSource, Labels};

fn csv(text: &str) -> Result<strata_training::Dataset, DataError> {
    parse_csv(text.as_bytes(), "t.csv", &CsvOptions::default())
}

fn error(text: &str) -> String {
    csv(text).unwrap_err().to_string()
}

#[test]
fn csv_with_header_and_integer_labels_is_classification() {
    let data = csv("a,b,label\n1,2,0\n3,4,2\n").unwrap();
    assert_eq!(data.len, 2);
    assert_eq!(data.features, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        data.labels,
        Labels::Classes {
            values: vec![0, 2],
            classes: 3
        }
    );
}

#[test]
fn csv_with_fractional_labels_is_regression() {
    let data = csv("1,2,0.5\n3,4,2\n").unwrap();
    assert_eq!(
        data.labels,
        Labels::Targets {
            values: vec![0.5, 2.0],
            width: 1
        }
    );
}

#[test]
fn csv_label_column_counts_from_either_end() {
    let options = CsvOptions {
        label_column: 0,
        ..CsvOptions::default()
    };
    let data = parse_csv(b"1,2,3\n0,5,6\n", "t.csv", &options).unwrap();
    assert_eq!(data.features, vec![2.0, 3.0, 5.0, 6.0]);
    assert_eq!(data.labels.classes(), Some(2));
    let options = CsvOptions {
        label_column: -2,
        ..CsvOptions::default()
    };
    let data = parse_csv(b"1,2,3\n0,5,6\n", "t.csv", &options).unwrap();
    assert_eq!(data.features, vec![1.0, 3.0, 0.0, 6.0]);
    let options = CsvOptions {
        label_column: -4,
        ..CsvOptions::default()
    };
    let message = parse_csv(b"1,2,3\n", "t.csv", &options)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("label column -4 does not exist"),
        "{message}"
    );
}

#[test]
fn csv_missing_value_names_line_and_column() {
    let message = error("x,y,label\n1,2,0\n3,,1\n");
    assert!(
        message.starts_with("t.csv: line 3, column 2: missing value"),
        "{message}"
    );
    let message = error("1,2,0\n3,4,1\n5,NaN,1\n");
    assert!(message.contains("line 3, column 2"), "{message}");
}

#[test]
fn csv_drop_missing_skips_incomplete_rows() {
    let options = CsvOptions {
        drop_missing: true,
        ..CsvOptions::default()
    };
    let data = parse_csv(b"1,2,0\n3,,1\n5,6,1\n", "t.csv", &options).unwrap();
    assert_eq!(data.len, 2);
    assert_eq!(data.features, vec![1.0, 2.0, 5.0, 6.0]);
}

#[test]
fn csv_non_numbers_and_ragged_rows_are_errors_with_their_line() {
    let message = error("1,2,0\n3,abc,1\n");
    assert_eq!(
        message,
        "t.csv: line 2, column 2: `abc` is not a finite number"
    );
    let message = error("1,2,0\n3,4\n");
    assert_eq!(message, "t.csv: line 2: 2 fields where line 1 has 3");
    let message = error("1,2,0\n3,4,1,7\n");
    assert!(message.contains("line 2: 4 fields"), "{message}");
    let message = error("1,2,0\n1,inf,0\n");
    assert!(message.contains("line 2, column 2: `inf`"), "{message}");
    // A header may be narrower than the rows (scikit-learn's are), the rows not.
    assert_eq!(csv("n,m\n1,2,0\n3,4,1\n").unwrap().len, 2);
}

#[test]
fn csv_empty_or_header_only_files_are_errors() {
    assert!(error("").contains("empty"));
    assert!(error("a,b\n").contains("no data rows"));
    assert!(error("1\n2\n").contains("at least one feature column"));
}

#[test]
fn csv_header_modes_and_forced_tasks() {
    // A numeric first line is a header only when told so.
    let options = CsvOptions {
        header: HeaderMode::Present,
        ..CsvOptions::default()
    };
    assert_eq!(
        parse_csv(b"9,9,9\n1,2,0\n", "t.csv", &options).unwrap().len,
        1
    );
    let options = CsvOptions {
        header: HeaderMode::Absent,
        ..CsvOptions::default()
    };
    let message = parse_csv(b"a,b,c\n1,2,0\n", "t.csv", &options)
        .unwrap_err()
        .to_string();
    assert!(message.contains("line 1, column 1"), "{message}");

    let regression = CsvOptions {
        task: Task::Regression,
        ..CsvOptions::default()
    };
    let data = parse_csv(b"1,2\n3,4\n", "t.csv", &regression).unwrap();
    assert!(matches!(data.labels, Labels::Targets { .. }));
    let classification = CsvOptions {
        task: Task::Classification,
        ..CsvOptions::default()
    };
    let message = parse_csv(b"1,2\n3,-1\n", "t.csv", &classification)
        .unwrap_err()
        .to_string();
    assert!(message.contains("line 2, column 2: label -1"), "{message}");
    // Under Auto, negative integers are targets.
    assert!(matches!(
        csv("1,-1\n2,1\n").unwrap().labels,
        Labels::Targets { .. }
    ));
}

#[test]
fn csv_handles_quotes_crlf_bom_and_blank_lines() {
    let data = csv("\u{feff}\"YEAR\",\"VALUE\"\r\n1700,5\r\n\r\n\"1701\",11\r\n").unwrap();
    assert_eq!(data.len, 2);
    assert_eq!(data.features, vec![1700.0, 1701.0]);
}

#[test]
fn csv_files_load_from_disk_gzipped_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("d.csv");
    std::fs::write(&plain, "1,2,0\n3,4,1\n").unwrap();
    let gz = dir.path().join("d.csv.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"1,2,0\n3,4,1\n").unwrap();
    std::fs::write(&gz, encoder.finish().unwrap()).unwrap();
    let a = load_csv(&plain, &CsvOptions::default()).unwrap();
    let b = load_csv(&gz, &CsvOptions::default()).unwrap();
    assert_eq!(a, b);

    let missing = dir.path().join("nope.csv");
    let message = load_csv(&missing, &CsvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("nope.csv"), "{message}");

    // A truncated gzip stream is an error, not a shorter dataset.
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() - 10]).unwrap();
    let message = load_csv(&gz, &CsvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("gzip"), "{message}");
}

#[test]
fn data_source_specs_load_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.csv");
    std::fs::write(&path, "0,1,2\n1,3,4\n").unwrap();
    let spec = format!("csv:{},label=0,no_header", path.display());
    let data = DataSource::parse(&spec).unwrap().load().unwrap();
    assert_eq!(data.features, vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(DataSource::parse("iris").unwrap().load().unwrap().len, 150);
}

fn save_npy(path: &Path, tensor: &HostTensor) {
    strata_artifact::npy::write_npy(path, tensor).unwrap();
}

#[test]
fn npy_features_and_labels_load() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x.npy"), dir.path().join("y.npy"));
    save_npy(
        &x,
        &HostTensor::f32(vec![3, 2, 2], (0..12).map(|v| v as f32).collect()).unwrap(),
    );
    save_npy(&y, &HostTensor::i32(vec![3], vec![1, 0, 4]).unwrap());
    let data = load_npy(&x, &y).unwrap();
    assert_eq!((data.len, data.feature_shape.clone()), (3, vec![2, 2]));
    assert_eq!(data.classes(), Some(5));

    save_npy(&y, &HostTensor::f32(vec![3, 2], vec![0.5; 6]).unwrap());
    let data = load_npy(&x, &y).unwrap();
    assert_eq!(
        data.labels,
        Labels::Targets {
            values: vec![0.5; 6],
            width: 2
        }
    );

    save_npy(&y, &HostTensor::i32(vec![2], vec![1, 0]).unwrap());
    let message = load_npy(&x, &y).unwrap_err().to_string();
    assert!(
        message.contains("y.npy") && message.contains("do not fit 3 samples"),
        "{message}"
    );

    std::fs::write(&x, b"\x93NUMPY garbage").unwrap();
    let message = load_npy(&x, &y).unwrap_err().to_string();
    assert!(message.contains("x.npy"), "{message}");
}

/// An IDX file: magic, type, dims, big-endian data.
fn idx(type_code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, type_code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[test]
fn idx_images_and_labels_load_like_mnist() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = (dir.path().join("images"), dir.path().join("labels.gz"));
    std::fs::write(
        &images,
        idx(0x08, &[3, 2, 2], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255]),
    )
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx(0x08, &[3], &[7, 0, 9])).unwrap();
    std::fs::write(&labels, gz.finish().unwrap()).unwrap();
    let data = load_idx(&images, &labels).unwrap();
    assert_eq!(data.feature_shape, vec![2, 2]);
    assert_eq!(data.features[11], 255.0);
    assert_eq!(
        data.labels,
        Labels::Classes {
            values: vec![7, 0, 9],
            classes: 10
        }
    );
}

#[test]
fn idx_reads_big_endian_floats() {
    let data: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect();
    let tensor = parse_idx(&idx(0x0d, &[2], &data), "f.idx").unwrap();
    assert_eq!(tensor.as_f32().unwrap(), &[1.5, -2.0]);
}

#[test]
fn malformed_idx_files_name_the_offset() {
    let message = parse_idx(&idx(0x08, &[3, 2], &[1, 2, 3, 4, 5]), "i.idx")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("i.idx: byte offset 17: truncated"),
        "{message}"
    );
    let message = parse_idx(&idx(0x08, &[2], &[1, 2, 3]), "i.idx")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("i.idx: byte offset 10: 1 unexpected bytes"),
        "{message}"
    );
    let message = parse_idx(&[1, 0, 8, 1], "i.idx").unwrap_err().to_string();
    assert!(message.contains("not an IDX file"), "{message}");
    let message = parse_idx(&idx(0x07, &[1], &[0]), "i.idx")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("offset 2: unknown IDX element type 0x07"),
        "{message}"
    );
    // A header announcing 2^32-1 x 2^32-1 elements does not allocate.
    let message = parse_idx(&idx(0x0e, &[u32::MAX, u32::MAX, u32::MAX], &[]), "i.idx")
        .unwrap_err()
        .to_string();
    assert!(message.contains("too large"), "{message}");
}

#[test]
fn safetensors_with_features_and_labels_loads() {
    let x = HostTensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let y = HostTensor::i32(vec![2], vec![1, 1]).unwrap();
    let bytes =
        strata_artifact::weights::encode_weights([("features", &x), ("labels", &y)]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let data = load_safetensors(&path).unwrap();
    assert_eq!(data.features, x.as_f32().unwrap());
    assert_eq!(data.classes(), Some(2));

    let only_x = strata_artifact::weights::encode_weights([("features", &x)]).unwrap();
    let message = parse_safetensors(&only_x, "o.safetensors")
        .unwrap_err()
        .to_string();
    assert!(message.contains("no tensor `labels`"), "{message}");
    let message = parse_safetensors(&bytes[..bytes.len() - 1], "t.safetensors")
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with("t.safetensors: not a valid safetensors file"),
        "{message}"
    );
}

/// Garbage and truncations of valid files: every loader answers, none panics.
#[test]
fn loaders_never_panic_on_garbage_or_truncation() {
    let mut rng = Philox::from_seed(11);
    let valid_idx = idx(0x0c, &[2, 2], &[0; 16]);
    let valid_csv = b"a,b,c\n1,2,0\n3,4,1\n5,\"6\",1\n".to_vec();
    let x = HostTensor::f32(vec![2, 1], vec![1.0, 2.0]).unwrap();
    let valid_st =
        strata_artifact::weights::encode_weights([("features", &x), ("labels", &x)]).unwrap();
    for valid in [&valid_idx, &valid_csv, &valid_st] {
        for cut in 0..valid.len() {
            let _ = parse_idx(&valid[..cut], "f");
            let _ = parse_csv(&valid[..cut], "f", &CsvOptions::default());
            let _ = parse_safetensors(&valid[..cut], "f");
        }
    }
    for len in 0..200 {
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u32() as u8).collect();
        let _ = parse_idx(&bytes, "f");
        let _ = parse_csv(&bytes, "f", &CsvOptions::default());
        let _ = parse_safetensors(&bytes, "f");
        let mut with_magic = vec![0, 0, 8, (len % 4) as u8];
        with_magic.extend_from_slice(&bytes);
        let _ = parse_idx(&with_magic, "f");
    }
}

#[test]
fn non_finite_values_in_npy_data_are_refused_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    let y = dir.path().join("y.npy");
    let features = HostTensor::f32(vec![3, 2], vec![0.0, 1.0, 2.0, 3.0, f32::INFINITY, 5.0]);
    strata_artifact::npy::write_npy(&x, &features.unwrap()).unwrap();
    strata_artifact::npy::write_npy(&y, &HostTensor::i32(vec![3], vec![0, 1, 0]).unwrap()).unwrap();
    let spec = format!("npy:{},{}", x.display(), y.display());
    let message = DataSpec::parse(&spec)
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(message.contains("x.npy"), "{message}");
    assert!(message.contains("row 2, column 0"), "{message}");
    assert!(message.contains(ALLOW_NONFINITE), "{message}");
    let kept = DataSpec::parse(&format!("{spec},{ALLOW_NONFINITE}"))
        .unwrap()
        .load()
        .expect("allowed");
    assert!(kept.features[4].is_infinite());
}

#[test]
fn a_csv_number_past_f32_is_refused_at_its_cell() {
    let message = parse_csv(b"1,2,0\n3,1e300,1\n", "big.csv", &CsvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(message.contains("big.csv: line 2, column 2"), "{message}");
}

#[test]
fn a_gzip_stream_that_inflates_past_the_limit_is_too_large_not_corrupt() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b'0'; 1 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 8 << 10, "{} bytes", bomb.len());
    let message = maybe_gunzip_at_most(bomb, "bomb.csv.gz", 64 << 10)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("decompresses to more than 65536 bytes"),
        "{message}"
    );
    assert!(!message.contains("corrupt"), "{message}");
    assert!(
        message.contains("STRATA_MAX_DECOMPRESSED_BYTES"),
        "{message}"
    );
}

#[test]
fn the_decompression_limit_comes_from_its_environment_variable_or_is_4_gib() {
    use strata_training::loaders::decompressed_limit;
    assert_eq!(decompressed_limit(None), Ok(4 << 30));
    assert_eq!(decompressed_limit(Some("65536")), Ok(65536));
    for bad in ["0", "-1", "4GB", ""] {
        let message = decompressed_limit(Some(bad)).unwrap_err();
        assert!(
            message.starts_with(&format!("STRATA_MAX_DECOMPRESSED_BYTES={bad} is not")),
            "{message}"
        );
    }
}
