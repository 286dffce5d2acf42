//! The CPU backend runs kernels with denormals flushed to zero (FTZ and DAZ), on the
//! calling thread and on the launch pool's, and gives the caller its own mode back.

use std::hint::black_box;
use strata_artifact::HostTensor;
use strata_compiler::driver::{CompileOptions, compile};
use strata_compiler::source::SourceFile;
use strata_runtime::Session;

const SCALE: &str = r#"
model Scale {
    input x: f32[batch, 1024]
    output y = x * 0.5
}
"#;

fn session() -> Session {
    let source = SourceFile::new("scale.strata", SCALE);
    let compiled = compile(&source, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{}", e.render(&source)));
    Session::new(&compiled.artifact).expect("loads")
}

fn scale(session: &mut Session, rows: u64, x: f32) -> Vec<f32> {
    let input = HostTensor::f32(vec![rows, 1024], vec![x; rows as usize * 1024]).unwrap();
    let out = session.run("infer", &[("x", input)]).expect("runs");
    out[0].1.as_f32().unwrap().to_vec()
}

#[test]
fn denormal_results_and_operands_are_flushed_to_zero() {
    let mut session = session();
    // FTZ: the smallest normal halved would be a subnormal result.
    assert!(
        scale(&mut session, 3, f32::MIN_POSITIVE)
            .iter()
            .all(|&y| y == 0.0)
    );
    // DAZ: a subnormal input reads as zero.
    let subnormal = f32::MIN_POSITIVE / 4.0;
    assert!(subnormal > 0.0);
    assert!(scale(&mut session, 3, subnormal).iter().all(|&y| y == 0.0));
    // Normal values are untouched.
    assert!(scale(&mut session, 3, 3.0).iter().all(|&y| y == 1.5));
    // Enough rows for the launch to use the pool's threads as well, where there are any.
    let rows = 4096;
    let y = scale(&mut session, rows, f32::MIN_POSITIVE);
    assert_eq!(y.len(), rows as usize * 1024);
    assert!(y.iter().all(|&y| y == 0.0));
}

#[test]
fn the_callers_floating_point_mode_is_restored() {
    let mut session = session();
    scale(&mut session, 3, 1.0);
    let halved = black_box(f32::MIN_POSITIVE) * black_box(0.5f32);
    assert!(halved > 0.0, "the caller's arithmetic flushes after a run");
}
