//! Kernels that compile to the same code: they differ only in their names and their
//! buffers' names (a residual network's blocks: 1,025 `matmul_add_relu` kernels of one
//! shape in a 1,024-block model's `infer`; `eval`'s copies of `infer`'s kernels). Both
//! the JIT and the machine code of `strata build` compile each distinct kernel once.

use std::collections::HashMap;

use strata_kernels::ir::Kernel;

/// The distinct kernels of `kernels` up to names (in order of first appearance), and for
/// each kernel the index of the distinct one it equals. Two kernels are equal when their
/// bodies and their buffers' types and access modes print the same (so a constant `-0.0`
/// is not `0.0`); names never reach the generated code. A kernel's function names map
/// one to one, in order, onto those of the distinct kernel it equals.
pub(crate) fn distinct_kernels(kernels: &[Kernel]) -> (Vec<Kernel>, Vec<usize>) {
    let mut distinct: Vec<Kernel> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::with_capacity(kernels.len());
    let mut same_as = Vec::with_capacity(kernels.len());
    for kernel in kernels {
        let buffers: Vec<_> = kernel
            .buffers
            .iter()
            .map(|b| (b.dtype, &b.shape, b.access))
            .collect();
        let key = format!("{buffers:?} {:?}", kernel.body);
        let at = *index.entry(key).or_insert_with(|| {
            distinct.push(kernel.clone());
            distinct.len() - 1
        });
        same_as.push(at);
    }
    (distinct, same_as)
}
