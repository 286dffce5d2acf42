//! Sessions running real generated code: hand-built manifests and kernel IR, CLIF from
//! `strata_kernels::cpu::emit_clif`, outputs compared with values computed by hand.

use strata_artifact::Artifact;
use strata_artifact::manifest::{BufferInfo, Entry, EntryPort, Extent, Launch, Location, Manifest};
use strata_artifact::weights::encode_weights;
use strata_kernels::ir::{
    Access, BinaryOp, BufferDecl, Contraction, Dim, Expr, Index, Kernel, KernelBody, MatrixOperand,
    ScalarType, Store, UnaryOp,
};

use strata_artifact::HostTensor;
use strata_runtime::{RunError, Session};

// ---------------------------------------------------------------------------------------
// Fixture: a dense layer then a biased relu, one entry, two launches.
//
//   h = x W^T + c      (Contract; W stored [out, in] = [2, 3] as in PyTorch)
//   y = relu(h + b)    (Map)
//
// x: f32[batch, 3], h, y: f32[batch, 2] in the I/O block; W, c, b persistent.

fn decl(name: &str, shape: Vec<Dim>, access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype: ScalarType::F32,
        shape,
        access,
    }
}

fn dense_kernel() -> Kernel {
    Kernel {
        name: "dense".into(),
        buffers: vec![
            decl("x", vec![Dim::Batch, Dim::Fixed(3)], Access::Read),
            decl("w", vec![Dim::Fixed(2), Dim::Fixed(3)], Access::Read),
            decl("c", vec![Dim::Fixed(2)], Access::Read),
            decl("h", vec![Dim::Batch, Dim::Fixed(2)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m: Dim::Batch,
            n: Dim::Fixed(2),
            k: Dim::Fixed(3),
            // a[m, k] = x[m * 3 + k]
            a: MatrixOperand {
                buf: 0,
                offset: Index::Const(0),
                row_stride: Index::Const(3),
                col_stride: Index::Const(1),
                window: None,
            },
            // b[k, n] = W[n, k] = w[n * 3 + k]: row (k) stride 1, column (n) stride `in`.
            b: MatrixOperand {
                buf: 1,
                offset: Index::Const(0),
                row_stride: Index::Const(1),
                col_stride: Index::Const(3),
                window: None,
            },
            out: 3,
            epilogue: Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(2, Index::Var(1))),
            terms: Vec::new(),
        }),
    }
}

fn bias_relu_kernel() -> Kernel {
    let at = Index::row_major(
        &[Index::Var(0), Index::Var(1)],
        &[Dim::Batch, Dim::Fixed(2)],
    );
    Kernel {
        name: "bias_relu".into(),
        buffers: vec![
            decl("h", vec![Dim::Batch, Dim::Fixed(2)], Access::Read),
            decl("b", vec![Dim::Fixed(2)], Access::Read),
            decl("y", vec![Dim::Batch, Dim::Fixed(2)], Access::Write),
        ],
        body: KernelBody::Map {
            space: vec![Dim::Batch, Dim::Fixed(2)],
            stores: vec![Store {
                buf: 2,
                index: at.clone(),
                value: Expr::unary(
                    UnaryOp::Relu,
                    Expr::binary(
                        BinaryOp::Add,
                        Expr::load(0, at),
                        Expr::load(1, Index::Var(1)),
                    ),
                ),
            }],
        },
    }
}

fn buffer(name: &str, shape: Vec<Dim>, location: Location) -> BufferInfo {
    BufferInfo {
        name: name.into(),
        dtype: ScalarType::F32,
        shape,
        location,
    }
}

fn io_at(per_batch: u64) -> Location {
    Location::Io {
        offset: Extent {
            fixed: 0,
            per_batch,
        },
    }
}

fn persistent(key: &str) -> Location {
    Location::Persistent { key: key.into() }
}

fn manifest() -> Manifest {
    Manifest {
        model: "DenseRelu".into(),
        compiler: "strata test".into(),
        buffers: vec![
            // 0..12*batch: x, 12..20: h, 20..28: y
            buffer("x", vec![Dim::Batch, Dim::Fixed(3)], io_at(0)),
            buffer(
                "w",
                vec![Dim::Fixed(2), Dim::Fixed(3)],
                persistent("dense.weight"),
            ),
            buffer("c", vec![Dim::Fixed(2)], persistent("dense.bias")),
            buffer("h", vec![Dim::Batch, Dim::Fixed(2)], io_at(12)),
            buffer("b", vec![Dim::Fixed(2)], persistent("shift")),
            buffer("y", vec![Dim::Batch, Dim::Fixed(2)], io_at(20)),
        ],
        kernels: vec![dense_kernel(), bias_relu_kernel()],
        entries: vec![Entry {
            name: "infer".into(),
            inputs: vec![EntryPort {
                name: "x".into(),
                buffer: 0,
            }],
            outputs: vec![
                EntryPort {
                    name: "h".into(),
                    buffer: 3,
                },
                EntryPort {
                    name: "y".into(),
                    buffer: 5,
                },
            ],
            launches: vec![
                Launch {
                    kernel: 0,
                    bindings: vec![0, 1, 2, 3],
                },
                Launch {
                    kernel: 1,
                    bindings: vec![3, 4, 5],
                },
            ],
            loops: vec![],
        }],
        arena: Extent::default(),
        io: Extent {
            fixed: 0,
            per_batch: 28,
        },
        train: None,
    }
}

/// Model parameters: W (row-major [out, in]), c, b.
struct Params {
    w: [f32; 6],
    c: [f32; 2],
    b: [f32; 2],
}

const PARAMS: Params = Params {
    w: [1.0, 2.0, 3.0, -1.0, 0.5, 0.0],
    c: [0.25, -0.5],
    b: [-10.0, 1.0],
};

fn weights(p: &Params) -> Vec<u8> {
    let w = HostTensor::f32(vec![2, 3], p.w.to_vec()).unwrap();
    let c = HostTensor::f32(vec![2], p.c.to_vec()).unwrap();
    let b = HostTensor::f32(vec![2], p.b.to_vec()).unwrap();
    encode_weights([("dense.weight", &w), ("dense.bias", &c), ("shift", &b)]).unwrap()
}

fn artifact() -> Artifact {
    let manifest = manifest();
    let clif = strata_kernels::cpu::emit_clif(&manifest.kernels).unwrap();
    Artifact {
        manifest,
        clif,
        wgsl: String::new(),
        weights: weights(&PARAMS).into(),
        machine_code: None,
        onnx: Vec::new(),
    }
}

fn session() -> Session {
    Session::new(&artifact()).unwrap()
}

/// `h = x W^T + c` and `y = relu(h + b)`, row by row, computed here.
fn expected(p: &Params, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut h = Vec::new();
    let mut y = Vec::new();
    for row in x.chunks(3) {
        for o in 0..2 {
            let dot: f32 = (0..3).map(|i| row[i] * p.w[o * 3 + i]).sum();
            let v = dot + p.c[o];
            h.push(v);
            y.push((v + p.b[o]).max(0.0));
        }
    }
    (h, y)
}

fn input(rows: u64) -> HostTensor {
    let data = (0..rows * 3).map(|i| i as f32 * 0.5 - 2.0).collect();
    HostTensor::f32(vec![rows, 3], data).unwrap()
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{got:?} vs {want:?}"
        );
    }
}

fn run(session: &mut Session, x: HostTensor) -> (HostTensor, HostTensor) {
    let mut out = session.run("infer", &[("x", x)]).unwrap();
    assert_eq!(out.len(), 2);
    let (name_y, y) = out.pop().unwrap();
    let (name_h, h) = out.pop().unwrap();
    assert_eq!((name_h.as_str(), name_y.as_str()), ("h", "y"));
    (h, y)
}

// ---------------------------------------------------------------------------------------

#[test]
fn runs_a_contraction_with_transposed_weights_and_a_bias_epilogue() {
    let mut s = session();
    let x = input(4);
    let (want_h, _) = expected(&PARAMS, x.as_f32().unwrap());
    let (h, _) = run(&mut s, x);
    assert_eq!(h.shape, vec![4, 2]);
    assert_close(h.as_f32().unwrap(), &want_h);
}

#[test]
fn prepare_compiles_an_entry_before_its_first_run_and_refuses_unknown_ones() {
    let mut s = session();
    let modules = |s: &Session| s.code().map(|c| c.compiled_modules());
    assert_eq!(modules(&s), Some(0));
    s.prepare("infer", 4).unwrap();
    assert_eq!(modules(&s), Some(1));
    let x = input(4);
    let (want_h, want_y) = expected(&PARAMS, x.as_f32().unwrap());
    let (h, y) = run(&mut s, x);
    assert_close(h.as_f32().unwrap(), &want_h);
    assert_close(y.as_f32().unwrap(), &want_y);
    // The run found its code ready.
    assert_eq!(modules(&s), Some(1));
    assert!(matches!(
        s.prepare("train", 4),
        Err(RunError::UnknownEntry { name, .. }) if name == "train"
    ));
}

#[test]
fn runs_a_map_with_a_persistent_bias_after_it() {
    let mut s = session();
    let x = input(3);
    let (_, want_y) = expected(&PARAMS, x.as_f32().unwrap());
    let (_, y) = run(&mut s, x);
    assert_eq!(y.shape, vec![3, 2]);
    assert_close(y.as_f32().unwrap(), &want_y);
    assert!(want_y.contains(&0.0) && want_y.iter().any(|&v| v > 0.0));
}

#[test]
fn runs_any_batch_size_reusing_the_arena() {
    let mut s = session();
    for rows in [1, 7, 2, 33, 1] {
        let x = input(rows);
        let (want_h, want_y) = expected(&PARAMS, x.as_f32().unwrap());
        let (h, y) = run(&mut s, x);
        assert_close(h.as_f32().unwrap(), &want_h);
        assert_close(y.as_f32().unwrap(), &want_y);
    }
}

#[test]
fn a_run_reads_aligned_parameters_in_place_and_copies_misaligned_ones() {
    let x = input(3);
    let (want_h, want_y) = expected(&PARAMS, x.as_f32().unwrap());
    // `weights()` places the tensors' data at a multiple of 8 bytes of the file; one
    // byte in front of it misaligns every tensor for `f32`.
    let aligned = artifact();
    let mut misaligned = artifact();
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(&weights(&PARAMS));
    misaligned.weights = strata_artifact::Bytes::from(shifted).slice(1..weights(&PARAMS).len() + 1);
    for (a, copied) in [(aligned, 0), (misaligned, 3)] {
        let mut s = Session::new(&a).unwrap();
        let (h, y) = run(&mut s, x.clone());
        assert_close(h.as_f32().unwrap(), &want_h);
        assert_close(y.as_f32().unwrap(), &want_y);
        assert_eq!(s.weights_copied(), copied);
        // Reading the weights copies them; a later run reads the copies.
        assert_eq!(s.weights().count(), 3);
        assert_eq!(s.weights_copied(), 3);
        let (_, y) = run(&mut s, x.clone());
        assert_close(y.as_f32().unwrap(), &want_y);
    }
}

#[test]
fn loaded_weights_replace_the_built_in_ones() {
    let mut s = session();
    let other = Params {
        w: [0.0, 1.0, 0.0, 1.0, 1.0, 1.0],
        c: [1.0, 2.0],
        b: [0.0, -100.0],
    };
    s.load_weights(&weights(&other)).unwrap();
    let x = input(2);
    let (want_h, want_y) = expected(&other, x.as_f32().unwrap());
    let (h, y) = run(&mut s, x);
    assert_close(h.as_f32().unwrap(), &want_h);
    assert_close(y.as_f32().unwrap(), &want_y);
}

#[test]
fn saved_weights_load_back() {
    let s = session();
    let saved = s.save_weights().unwrap();
    let mut t = session();
    t.load_weights(&saved).unwrap();
    let a: Vec<_> = s
        .weights()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let b: Vec<_> = t
        .weights()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), 3);
}

#[test]
fn refuses_weights_that_do_not_fit_naming_keys_and_shapes() {
    let mut s = session();
    let w = HostTensor::f32(vec![3, 2], vec![0.0; 6]).unwrap();
    let c = HostTensor::f32(vec![2], vec![0.0; 2]).unwrap();
    let bytes = encode_weights([("dense.weight", &w), ("dense.bias", &c), ("shift", &c)]).unwrap();
    let err = s.load_weights(&bytes).unwrap_err().to_string();
    assert_eq!(
        err,
        "tensor `dense.weight`: expected shape [2, 3], got [3, 2]"
    );

    let bytes = encode_weights([("dense.bias", &c), ("shift", &c)]).unwrap();
    let err = s.load_weights(&bytes).unwrap_err().to_string();
    assert_eq!(err, "missing tensors `dense.weight`");

    let w = HostTensor::f32(vec![2, 3], vec![0.0; 6]).unwrap();
    let bytes = encode_weights([
        ("dense.weight", &w),
        ("dense.bias", &c),
        ("shift", &c),
        ("extra", &c),
    ])
    .unwrap();
    let err = s.load_weights(&bytes).unwrap_err().to_string();
    assert!(err.starts_with("unknown tensors `extra`"), "{err}");

    // Nothing was replaced by the refused files.
    let x = input(2);
    let (want_h, _) = expected(&PARAMS, x.as_f32().unwrap());
    let (h, _) = run(&mut s, x);
    assert_close(h.as_f32().unwrap(), &want_h);
}

#[test]
fn refuses_inputs_that_do_not_fit_the_entry() {
    let mut s = session();
    let bad = HostTensor::f32(vec![5, 4], vec![0.0; 20]).unwrap();
    let err = s.run("infer", &[("x", bad)]).unwrap_err().to_string();
    assert_eq!(err, "input `x`: expected f32[batch, 3], got f32[5, 4]");
    let err = s.run("train", &[("x", input(1))]).unwrap_err().to_string();
    assert_eq!(err, "no entry `train` (the model has `infer`)");
    let err = s.run("infer", &[]).unwrap_err().to_string();
    assert_eq!(err, "missing inputs `x`");
}

#[test]
fn refuses_an_artifact_whose_code_lacks_a_kernel() {
    let mut a = artifact();
    a.manifest.kernels[1].name = "renamed".into();
    a.manifest.entries[0].launches.pop();
    assert!(Session::new(&a).is_err());
}

/// The fixture with a persistent buffer no entry reads (as an optimizer's state is for
/// `infer`): a session copies a buffer out of the artifact when something first needs it.
#[test]
fn a_buffer_no_run_has_read_still_reads_saves_and_loads_with_the_rest() {
    let mut a = artifact();
    a.manifest.buffers.push(buffer(
        "state",
        vec![Dim::Fixed(4)],
        persistent("shift.adam_m"),
    ));
    let w = HostTensor::f32(vec![2, 3], PARAMS.w.to_vec()).unwrap();
    let c = HostTensor::f32(vec![2], PARAMS.c.to_vec()).unwrap();
    let b = HostTensor::f32(vec![2], PARAMS.b.to_vec()).unwrap();
    let state = HostTensor::f32(vec![4], vec![0.5, -1.5, 2.0, 7.0]).unwrap();
    let bytes = encode_weights([
        ("dense.weight", &w),
        ("dense.bias", &c),
        ("shift", &b),
        ("shift.adam_m", &state),
    ])
    .unwrap();
    a.weights = bytes.into();
    let mut s = Session::new(&a).unwrap();
    let (_, y) = run(&mut s, input(2));
    assert_close(
        y.as_f32().unwrap(),
        &expected(&PARAMS, input(2).as_f32().unwrap()).1,
    );
    let read: Vec<(String, HostTensor)> = s
        .weights()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(
        read.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["dense.weight", "dense.bias", "shift", "shift.adam_m"]
    );
    assert_eq!(read[3].1, state);
    assert_eq!(read[0].1, w);

    // Saved, changed and loaded into a fresh session: every buffer, read or not, moves.
    let saved = s.save_weights().unwrap();
    let mut t = Session::new(&a).unwrap();
    let other = HostTensor::f32(vec![4], vec![1.0; 4]).unwrap();
    let changed = encode_weights([
        ("dense.weight", &w),
        ("dense.bias", &c),
        ("shift", &b),
        ("shift.adam_m", &other),
    ])
    .unwrap();
    t.load_weights(&changed).unwrap();
    assert_eq!(t.weights().nth(3).map(|(_, v)| v.clone()), Some(other));
    t.load_weights(&saved).unwrap();
    assert_eq!(t.weights().nth(3).map(|(_, v)| v.clone()), Some(state));
}

/// Optimizer state starts at zero: weights may leave it out (a built artifact stores
/// none), and a session reads it as zeros, saves it and takes it back; only optimizer
/// state may be left out.
#[test]
fn optimizer_state_left_out_of_the_weights_is_zero() {
    let mut a = artifact();
    a.manifest.buffers.push(buffer(
        "m",
        vec![Dim::Fixed(4)],
        persistent("optim.m.shift"),
    ));
    let mut s = Session::new(&a).expect("the weights may leave optimizer state out");
    let (_, y) = run(&mut s, input(2));
    assert_close(
        y.as_f32().unwrap(),
        &expected(&PARAMS, input(2).as_f32().unwrap()).1,
    );
    let zeros = HostTensor::f32(vec![4], vec![0.0; 4]).unwrap();
    assert_eq!(s.weights().nth(3), Some(("optim.m.shift", &zeros)));

    // A file with the state sets it; one without it (the parameters alone) zeroes it.
    let w = HostTensor::f32(vec![2, 3], PARAMS.w.to_vec()).unwrap();
    let c = HostTensor::f32(vec![2], PARAMS.c.to_vec()).unwrap();
    let b = HostTensor::f32(vec![2], PARAMS.b.to_vec()).unwrap();
    let state = HostTensor::f32(vec![4], vec![0.5, -1.5, 2.0, 7.0]).unwrap();
    let with_state = encode_weights([
        ("dense.weight", &w),
        ("dense.bias", &c),
        ("shift", &b),
        ("optim.m.shift", &state),
    ])
    .unwrap();
    s.load_weights(&with_state).unwrap();
    assert_eq!(s.weights().nth(3), Some(("optim.m.shift", &state)));
    let saved = s.save_weights().unwrap();
    s.load_weights(&weights(&PARAMS)).unwrap();
    assert_eq!(s.weights().nth(3), Some(("optim.m.shift", &zeros)));
    s.load_weights(&saved).unwrap();
    assert_eq!(s.weights().nth(3), Some(("optim.m.shift", &state)));

    // A parameter is never optional.
    let without_bias = encode_weights([("dense.weight", &w), ("shift", &b)]).unwrap();
    let err = s.load_weights(&without_bias).unwrap_err().to_string();
    assert!(err.contains("dense.bias"), "{err}");
    let mut missing_param = a.clone();
    missing_param.weights = without_bias.into();
    assert!(Session::new(&missing_param).is_err());
}

/// `z = x2 V` with `V[k, n] = w[n * 2 + k]`: the weight of `dense` read as another
/// transposed matrix (2 x 3 instead of 3 x 2) from the same offset.
fn reshaped_weight_kernel() -> Kernel {
    Kernel {
        name: "reshaped".into(),
        buffers: vec![
            decl("x2", vec![Dim::Batch, Dim::Fixed(2)], Access::Read),
            decl("w", vec![Dim::Fixed(2), Dim::Fixed(3)], Access::Read),
            decl("z", vec![Dim::Batch, Dim::Fixed(3)], Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            summed: vec![],
            m: Dim::Batch,
            n: Dim::Fixed(3),
            k: Dim::Fixed(2),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Const(0),
                row_stride: Index::Const(2),
                col_stride: Index::Const(1),
                window: None,
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Const(0),
                row_stride: Index::Const(1),
                col_stride: Index::Const(2),
                window: None,
            },
            out: 2,
            epilogue: Expr::Acc,
            terms: Vec::new(),
        }),
    }
}

#[test]
fn one_weight_read_as_two_transposed_matrices_gets_a_copy_for_each() {
    let mut manifest = manifest();
    // x2 after y in the I/O block (8 bytes a row), then z (12).
    manifest
        .buffers
        .push(buffer("x2", vec![Dim::Batch, Dim::Fixed(2)], io_at(28)));
    manifest
        .buffers
        .push(buffer("z", vec![Dim::Batch, Dim::Fixed(3)], io_at(36)));
    manifest.io.per_batch = 48;
    manifest.kernels.push(reshaped_weight_kernel());
    let entry = &mut manifest.entries[0];
    entry.inputs.push(EntryPort {
        name: "x2".into(),
        buffer: 6,
    });
    entry.outputs.push(EntryPort {
        name: "z".into(),
        buffer: 7,
    });
    entry.launches.push(Launch {
        kernel: 2,
        bindings: vec![6, 1, 7],
    });
    let clif = strata_kernels::cpu::emit_clif(&manifest.kernels).unwrap();
    let artifact = Artifact {
        manifest,
        clif,
        wgsl: String::new(),
        weights: weights(&PARAMS).into(),
        machine_code: None,
        onnx: Vec::new(),
    };
    let mut s = Session::new(&artifact).unwrap();
    let x = input(4);
    let x2: Vec<f32> = (0..8).map(|i| i as f32 - 3.0).collect();
    let inputs = [
        ("x", x.clone()),
        ("x2", HostTensor::f32(vec![4, 2], x2.clone()).unwrap()),
    ];
    // Twice: the second run reads the copies the first made.
    for _ in 0..2 {
        let out = s.run("infer", &inputs).unwrap();
        let (want_h, _) = expected(&PARAMS, x.as_f32().unwrap());
        assert_close(out[0].1.as_f32().unwrap(), &want_h);
        let want_z: Vec<f32> = x2
            .chunks(2)
            .flat_map(|row| {
                (0..3).map(move |n| row[0] * PARAMS.w[n * 2] + row[1] * PARAMS.w[n * 2 + 1])
            })
            .collect();
        assert_eq!(out[2].0, "z");
        assert_close(out[2].1.as_f32().unwrap(), &want_z);
    }
}
