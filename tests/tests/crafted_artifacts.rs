//! Artifacts crafted to make the generated code touch memory outside its buffers: an
//! index one element past the end, one that leaves its buffer only at larger batch
//! sizes, `gemm` operands with lying strides and offsets, two outputs of one launch on
//! the same bytes. Each is written with a valid checksum (as an attacker would fix it
//! up), and each is refused with a clear error, by the loader or before the first run at
//! the batch size where it would go wrong. And every example's compiled kernels pass the
//! same check at the batch sizes the tests run.

use strata_artifact::manifest::Manifest;
use strata_artifact::tensor::HostTensor;
use strata_artifact::validate::validate_bounds;
use strata_artifact::{Artifact, ArtifactError};
use strata_compiler::driver::{CompileOptions, compile};
use strata_kernels::ir::{Dim, Expr, Index, KernelBody};
use strata_runtime::{RunError, Session};
use strata_tests::train_check::training_options;
use strata_tests::{example_files, load_example};

#[test]
fn every_examples_kernels_stay_inside_their_buffers() {
    for path in example_files() {
        let source = load_example(&path);
        // With the training entries where the model has a train section.
        let compiled = compile(&source, &training_options())
            .or_else(|_| compile(&source, &CompileOptions::default()))
            .unwrap_or_else(|e| panic!("{}", e.render(&source)));
        for batch in [1, 7, 64] {
            validate_bounds(&compiled.artifact.manifest, batch)
                .unwrap_or_else(|e| panic!("{}, batch {batch}: {e}", source.name));
        }
    }
}

/// The MLP example compiled with its training entries.
fn mlp() -> Artifact {
    let path = example_files()
        .into_iter()
        .find(|p| p.ends_with("mlp.strata"))
        .expect("the MLP example");
    let source = load_example(&path);
    compile(&source, &training_options())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)))
        .artifact
}

/// The artifact's bytes after `craft` changed its manifest, checksum recomputed, read
/// back.
fn crafted(craft: impl FnOnce(&mut Manifest)) -> Result<Artifact, ArtifactError> {
    let mut artifact = mlp();
    craft(&mut artifact.manifest);
    let bytes = artifact.to_bytes().expect("the crafted artifact encodes");
    Artifact::from_bytes(&bytes)
}

fn refused_at_load(craft: impl FnOnce(&mut Manifest)) -> String {
    match crafted(craft) {
        Ok(_) => panic!("the crafted artifact was accepted"),
        Err(e) => e.to_string(),
    }
}

/// The position of the first kernel of the `infer` entry whose body is a map.
fn first_map(m: &Manifest) -> usize {
    let infer = m.entries.iter().find(|e| e.name == "infer").expect("infer");
    infer
        .launches
        .iter()
        .map(|l| l.kernel)
        .find(|&k| matches!(m.kernels[k].body, KernelBody::Map { .. }))
        .expect("a map kernel")
}

/// The first load of an expression.
fn first_load(e: &mut Expr) -> Option<&mut Index> {
    match e {
        Expr::Load { index, .. } => Some(index),
        // The load of the id: the table's row is checked when the kernel runs.
        Expr::Gather { id_index, .. } => Some(id_index),
        Expr::Const(_) | Expr::Acc | Expr::IndexValue(_) => None,
        Expr::Unary(_, x) | Expr::Uniform { step: x, .. } | Expr::Reduce { value: x, .. } => {
            first_load(x)
        }
        Expr::Binary(_, a, b) => first_load(a).or_else(|| first_load(b)),
        Expr::Select {
            cond,
            then,
            otherwise,
        } => first_load(cond)
            .or_else(|| first_load(then))
            .or_else(|| first_load(otherwise)),
    }
}

/// Applies `f` to the first load index of the first map of `infer`.
fn shift_first_load(m: &mut Manifest, f: impl FnOnce(Index) -> Index) {
    let k = first_map(m);
    let KernelBody::Map { stores, .. } = &mut m.kernels[k].body else {
        unreachable!("a map");
    };
    let index = stores
        .iter_mut()
        .find_map(|s| first_load(&mut s.value))
        .expect("a load");
    *index = f(index.clone());
}

/// The first contraction kernel's operands and output.
fn first_contraction(m: &mut Manifest) -> &mut strata_kernels::ir::Contraction {
    m.kernels
        .iter_mut()
        .find_map(|k| match &mut k.body {
            KernelBody::Contract(c) => Some(c),
            _ => None,
        })
        .expect("a contraction")
}

#[test]
fn the_untouched_artifact_loads() {
    crafted(|_| {}).expect("the MLP loads");
}

#[test]
fn a_load_one_past_the_end_is_refused_at_load() {
    let e = refused_at_load(|m| shift_first_load(m, |ix| ix.add(Index::Const(1))));
    assert!(e.contains("memory access outside a buffer"), "{e}");
    assert!(
        e.contains("at batch size 1") && e.contains("load from"),
        "{e}"
    );
}

#[test]
fn a_store_before_the_start_is_refused_at_load() {
    let e = refused_at_load(|m| {
        let k = first_map(m);
        let KernelBody::Map { stores, .. } = &mut m.kernels[k].body else {
            unreachable!("a map");
        };
        stores[0].index = stores[0].index.clone().add(Index::Const(-1));
    });
    assert!(e.contains("store to") && e.contains("[-1, "), "{e}");
}

#[test]
fn a_select_guarding_an_out_of_range_load_is_refused() {
    // The guard is false everywhere, but the CPU may evaluate both arms.
    let e = refused_at_load(|m| {
        let k = first_map(m);
        let KernelBody::Map { stores, .. } = &mut m.kernels[k].body else {
            unreachable!("a map");
        };
        let value = stores[0].value.clone();
        let mut wild = value.clone();
        *first_load(&mut wild).expect("a load") = Index::Const(1 << 40);
        stores[0].value = Expr::Select {
            cond: Box::new(Expr::Const(0.0)),
            then: Box::new(wild),
            otherwise: Box::new(value),
        };
    });
    assert!(e.contains("1099511627776"), "{e}");
}

#[test]
fn a_load_that_leaves_its_buffer_only_at_larger_batches_is_refused_before_that_run() {
    // `ix + (batch - 1) * 2^20`: the true index at batch 1, far outside at batch 7.
    let artifact = crafted(|m| {
        shift_first_load(m, |ix| {
            let offset = Index::Batch
                .add(Index::Const(-1))
                .mul(Index::Const(1 << 20));
            ix.add(offset)
        })
    })
    .expect("in range at batch 1, so it loads");
    let mut session = Session::new(&artifact).expect("a session at batch 1");
    let inputs = |batch: usize| {
        vec![(
            "x",
            HostTensor::f32(vec![batch as u64, 64], vec![0.5; batch * 64]).expect("sizes"),
        )]
    };
    session
        .run("infer", &inputs(1))
        .expect("batch 1 is in range");
    let e = session
        .run("infer", &inputs(7))
        .expect_err("refused at batch 7");
    assert!(matches!(e, RunError::OutOfBounds(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("refusing to run") && e.contains("at batch size 7"),
        "{e}"
    );
    // Refused again, not remembered as checked.
    assert!(session.run("infer", &inputs(7)).is_err());
    session
        .run("infer", &inputs(1))
        .expect("batch 1 still runs");
}

#[test]
fn a_gemm_operand_with_a_lying_column_stride_is_refused() {
    let e = refused_at_load(|m| {
        let c = first_contraction(m);
        c.a.col_stride = c.a.col_stride.clone().mul(Index::Const(2));
    });
    assert!(e.contains("the left operand"), "{e}");
}

#[test]
fn a_gemm_operand_with_a_lying_row_stride_is_refused_where_it_has_several_rows() {
    // The first dense layer's rows are the batch: one row at batch 1, so the stride
    // only matters from batch 2 on.
    let artifact = crafted(|m| {
        let c = first_contraction(m);
        assert_eq!(c.m, Dim::Batch, "the first contraction is over the batch");
        c.a.row_stride = c.a.row_stride.clone().mul(Index::Const(2));
    })
    .expect("in range at batch 1, so it loads");
    validate_bounds(&artifact.manifest, 1).expect("one row");
    let e = validate_bounds(&artifact.manifest, 7).expect_err("seven rows");
    let e = e.to_string();
    assert!(
        e.contains("at batch size 7") && e.contains("the left operand"),
        "{e}"
    );
}

#[test]
fn a_gemm_operand_with_a_lying_offset_is_refused() {
    let e = refused_at_load(|m| {
        let c = first_contraction(m);
        c.b.offset = c.b.offset.clone().add(Index::Const(1));
    });
    assert!(e.contains("the right operand"), "{e}");
}

#[test]
fn a_gemm_operand_read_backwards_from_its_start_is_refused() {
    let e = refused_at_load(|m| {
        let c = first_contraction(m);
        c.b.col_stride = Index::Const(-1);
    });
    assert!(e.contains("the right operand") && e.contains("[-"), "{e}");
}

#[test]
fn a_gemm_product_larger_than_its_output_is_refused() {
    let e = refused_at_load(|m| {
        let c = first_contraction(m);
        c.n = match c.n {
            Dim::Fixed(n) => Dim::Fixed(n + 1),
            Dim::Batch => Dim::Fixed(1 << 20),
        };
    });
    assert!(e.contains("memory access outside a buffer"), "{e}");
}

#[test]
fn two_outputs_of_one_launch_on_the_same_buffer_are_refused() {
    let e = refused_at_load(|m| {
        // A launch of a kernel writing two slots of one type (the optimizer updating a
        // parameter and its moments): both bound to the same buffer.
        let (entry, launch, first, second) = m
            .entries
            .iter()
            .enumerate()
            .flat_map(|(e, entry)| entry.launches.iter().enumerate().map(move |l| (e, l)))
            .find_map(|(e, (l, launch))| {
                let kernel = &m.kernels[launch.kernel];
                let written = kernel.body.written_slots();
                written.iter().enumerate().find_map(|(i, &a)| {
                    written[i + 1..]
                        .iter()
                        .find(|&&b| {
                            let (da, db) = (&kernel.buffers[a], &kernel.buffers[b]);
                            da.dtype == db.dtype && da.shape == db.shape
                        })
                        .map(|&b| (e, l, a, b))
                })
            })
            .expect("a launch writing two slots of one type");
        let bindings = &mut m.entries[entry].launches[launch].bindings;
        bindings[second] = bindings[first];
    });
    assert!(e.contains("which overlap"), "{e}");
}

#[test]
fn a_contraction_writing_over_its_operand_is_refused() {
    let e = refused_at_load(|m| {
        // The left operand read from the slot the product is written to.
        let c = first_contraction(m);
        c.a.buf = c.out;
    });
    assert!(e.contains("overlaps its operand"), "{e}");
}
