use std::time::Instant;
use strata_kernels::cpu::emit_clif;
use strata_kernels::ir::*;
use strata_runtime::cpu::{JitCode, LaunchOptions, launch_with};

fn buf(name: &str, shape: &[Dim], access: Access) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        dtype: ScalarType::F32,
        shape: shape.to_vec(),
        access,
    }
}
fn rm(c: &[Index], s: &[Dim]) -> Index {
    Index::row_major(c, s)
}

#[test]
fn bench() {
    let (r, c) = (Dim::Fixed(2048), Dim::Fixed(2048));
    let sh = [r, c];
    let id = || rm(&[Index::Var(0), Index::Var(1)], &sh);
    let mut ks = vec![];
    for (name, op) in [
        ("exp", UnaryOp::Exp),
        ("tanh", UnaryOp::Tanh),
        ("log", UnaryOp::Log),
    ] {
        ks.push(Kernel {
            name: name.into(),
            buffers: vec![buf("x", &sh, Access::Read), buf("o", &sh, Access::Write)],
            body: KernelBody::Map {
                space: sh.to_vec(),
                stores: vec![Store {
                    buf: 1,
                    index: id(),
                    value: Expr::unary(op, Expr::load(0, id())),
                }],
            },
        });
    }
    ks.push(Kernel {
        name: "add".into(),
        buffers: vec![
            buf("x", &sh, Access::Read),
            buf("b", &[c], Access::Read),
            buf("o", &sh, Access::Write),
        ],
        body: KernelBody::Map {
            space: sh.to_vec(),
            stores: vec![Store {
                buf: 2,
                index: id(),
                value: Expr::binary(
                    BinaryOp::Add,
                    Expr::load(0, id()),
                    Expr::load(1, Index::Var(1)),
                ),
            }],
        },
    });
    ks.push(Kernel {
        name: "transpose".into(),
        buffers: vec![buf("x", &sh, Access::Read), buf("o", &sh, Access::Write)],
        body: KernelBody::Map {
            space: sh.to_vec(),
            stores: vec![Store {
                buf: 1,
                index: rm(&[Index::Var(1), Index::Var(0)], &sh),
                value: Expr::load(0, id()),
            }],
        },
    });
    ks.push(Kernel {
        name: "lse".into(),
        buffers: vec![
            buf("x", &sh, Access::Read),
            buf("m", &[r], Access::Read),
            buf("o", &[r], Access::Write),
        ],
        body: KernelBody::Reduce {
            space: vec![r],
            reduce: vec![c],
            op: ReduceOp::Sum,
            value: Expr::unary(
                UnaryOp::Exp,
                Expr::binary(
                    BinaryOp::Sub,
                    Expr::load(0, id()),
                    Expr::load(1, Index::Var(0)),
                ),
            ),
            out: Store {
                buf: 2,
                index: Index::Var(0),
                value: Expr::unary(UnaryOp::Log, Expr::Acc),
            },
        },
    });
    ks.push(Kernel {
        name: "mm".into(),
        buffers: vec![
            buf("a", &sh, Access::Read),
            buf("b", &sh, Access::Read),
            buf("bias", &[c], Access::Read),
            buf("o", &sh, Access::Write),
        ],
        body: KernelBody::Contract(Contraction {
            batch: vec![],
            m: r,
            n: c,
            k: Dim::Fixed(512),
            a: MatrixOperand {
                buf: 0,
                offset: Index::Const(0),
                row_stride: Index::Const(512),
                col_stride: Index::Const(1),
            },
            b: MatrixOperand {
                buf: 1,
                offset: Index::Const(0),
                row_stride: Index::Const(2048),
                col_stride: Index::Const(1),
            },
            out: 3,
            epilogue: Expr::unary(
                UnaryOp::Relu,
                Expr::binary(BinaryOp::Add, Expr::Acc, Expr::load(2, Index::Var(1))),
            ),
        }),
    });
    let text = emit_clif(&ks).unwrap();
    let t = Instant::now();
    let code = JitCode::compile(&text).unwrap();
    eprintln!("compile {:?}", t.elapsed());
    let n = 2048 * 2048;
    let mut bufs: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            (0..n)
                .map(|j| ((j * 7 + i) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        })
        .collect();
    for threads in [1, 2] {
        let opts = LaunchOptions {
            threads,
            min_work_per_thread: 1 << 16,
        };
        for k in &ks {
            let f = code.get(&k.name).unwrap();
            let ptrs: Vec<*mut u8> = bufs.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                unsafe { launch_with(k, f, &ptrs[..k.buffers.len()], 1, &opts) };
                best = best.min(t.elapsed().as_secs_f64());
            }
            let work = if k.name == "mm" {
                2.0 * 2048.0 * 2048.0 * 512.0 / 1e9
            } else {
                n as f64 / 1e6
            };
            eprintln!(
                "threads {threads} {:10} {:8.3} ms  {:8.1} {}",
                k.name,
                best * 1e3,
                work / best,
                if k.name == "mm" { "GFLOP/s" } else { "Melem/s" }
            );
        }
    }
}
