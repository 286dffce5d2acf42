//! The planner and its proof against their definitions: the greedy placement that
//! compares each buffer with every placed one, the lower bound counted step by step, and
//! the safety check over every pair of buffers, on the plans of a small residual MLP's
//! entries (forward, backward and optimizer buffers, in-place maps).

use super::*;
use crate::driver::{CompileOptions, Compiled, compile};
use crate::elaborate::ElaborateOptions;
use crate::source::SourceFile;

const MODEL: &str = "
block Residual(x, width) {
    return x + (x |> dense(width) |> relu |> dense(width))
}
model ResidualMlp(width = 16) {
    input x: f32[batch, 64]
    h = x |> dense(width) |> relu |> repeat 6 Residual(width)
    output logits = h |> dense(10)
    output probs = softmax(logits)
}
train ResidualMlp {
    data = digits
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 1e-3)
}
";

fn compiled() -> Compiled {
    let source = SourceFile::new("residual.strata", MODEL);
    let options = CompileOptions {
        elaborate: ElaborateOptions {
            train: true,
            ..ElaborateOptions::default()
        },
        ..CompileOptions::default()
    };
    compile(&source, &options).unwrap_or_else(|e| panic!("{}", e.render(&source)))
}

/// Every entry's kernels: `infer`, `train_step`, `eval`.
fn entries(c: &Compiled) -> Vec<&Lowered> {
    std::iter::once(&c.lowered)
        .chain(c.training.iter().map(|e| &e.lowered))
        .collect()
}

/// Greedy by size by its definition: each buffer, largest first, at the lowest of 0 and
/// the placed buffers' ends that is valid against every placed buffer.
fn all_pairs_offsets(l: &Lowered, lifetimes: &[Option<Lifetime>]) -> Vec<Option<u64>> {
    let mut offsets = vec![None; l.buffers.len()];
    for region in [false, true] {
        let mut items: Vec<(usize, u64, Lifetime)> = (0..l.buffers.len())
            .filter_map(|b| {
                let lt = lifetimes[b]?;
                let (size, batched) = size_of(&l.buffers[b].shape);
                (batched == region).then_some((b, size, lt))
            })
            .collect();
        items.sort_by_key(|(b, size, lt)| (std::cmp::Reverse(*size), lt.first, *b));
        let mut placed: Vec<(u64, u64, Lifetime)> = Vec::new();
        for (b, size, lt) in items {
            let conflicts: Vec<(u64, u64)> = placed
                .iter()
                .filter(|p| p.2.first <= lt.last && lt.first <= p.2.last)
                .map(|p| (p.0, p.1))
                .collect();
            let in_place: Vec<(u64, u64)> = placed
                .iter()
                .filter(|p| in_place_adjacent(p.2, lt))
                .map(|p| (p.0, p.1))
                .collect();
            let clear = |o: u64, (off, sz): (u64, u64)| o + size <= off || off + sz <= o;
            let valid = |o: u64| {
                conflicts.iter().all(|c| clear(o, *c))
                    && in_place.iter().all(|c| c.0 == o || clear(o, *c))
            };
            let offset = std::iter::once(0)
                .chain(conflicts.iter().chain(&in_place).map(|(off, sz)| off + sz))
                .chain(in_place.iter().map(|(off, _)| *off))
                .filter(|o| valid(*o))
                .min()
                .expect("a valid offset");
            placed.push((offset, size, lt));
            offsets[b] = Some(offset);
        }
    }
    offsets
}

/// The raw offset of a planned buffer in its region.
fn raw(offset: Option<Extent>, batched: bool) -> Option<u64> {
    offset.map(|o| if batched { o.per_batch } else { o.fixed })
}

#[test]
fn places_every_buffer_where_the_all_pairs_greedy_does() {
    let c = compiled();
    for l in entries(&c) {
        let plan = plan_memory(l);
        let expected = all_pairs_offsets(l, &plan.lifetimes);
        let planned: Vec<Option<u64>> = (0..l.buffers.len())
            .map(|b| raw(plan.offsets[b], size_of(&l.buffers[b].shape).1))
            .collect();
        assert_eq!(planned, expected);
        assert!(plan.offsets.iter().flatten().count() > 10);
    }
}

#[test]
fn the_lower_bound_is_the_most_bytes_live_at_one_step() {
    let c = compiled();
    for l in entries(&c) {
        let plan = plan_memory(l);
        let mut best = Extent::default();
        for step in 0..2 * (l.launches.len() + 2) {
            let mut live = Extent::default();
            for (b, lt) in plan.lifetimes.iter().enumerate() {
                if let Some(lt) = lt
                    && lt.first <= step
                    && step <= lt.last
                {
                    let (size, batched) = size_of(&l.buffers[b].shape);
                    match batched {
                        true => live.per_batch += size,
                        false => live.fixed += size,
                    }
                }
            }
            best.fixed = best.fixed.max(live.fixed);
            best.per_batch = best.per_batch.max(live.per_batch);
        }
        assert_eq!(plan.lower_bound, best);
        assert!(best.per_batch > 0);
    }
}

/// Whether two planned buffers are both used over two launches or more, by the launches
/// that bind them (the check's own step ranges, without loops): such a pair never shares
/// bytes, not even as an in-place pair, which meets at one launch.
fn live_together(l: &Lowered, a: usize, b: usize) -> bool {
    let range = |x: usize| {
        let mut touched = l
            .launches
            .iter()
            .enumerate()
            .filter(|(_, launch)| launch.bindings.iter().any(|&y| l.root(y) == x))
            .map(|(i, _)| i);
        let first = touched.next()?;
        Some((first, touched.next_back().unwrap_or(first)))
    };
    match (range(a), range(b)) {
        (Some((fa, la)), Some((fb, lb))) => fa.max(fb) < la.min(lb),
        _ => false,
    }
}

#[test]
fn the_check_accepts_the_plans_and_refuses_buffers_moved_onto_live_ones() {
    let c = compiled();
    let mut refused = 0;
    for l in entries(&c) {
        let plan = plan_memory(l);
        check_plan(l, &plan).expect("the planner's plan is safe");
        let planned: Vec<usize> = (0..l.buffers.len())
            .filter(|&b| plan.offsets[b].is_some())
            .collect();
        // Move each buffer onto a larger one of its region, live with it and at another
        // offset: the check must refuse it.
        for &a in &planned {
            let Some(&b) = planned.iter().find(|&&b| {
                b != a
                    && size_of(&l.buffers[a].shape).1 == size_of(&l.buffers[b].shape).1
                    && size_of(&l.buffers[a].shape).0 <= size_of(&l.buffers[b].shape).0
                    && plan.offsets[a] != plan.offsets[b]
                    && live_together(l, a, b)
            }) else {
                continue;
            };
            let mut broken = plan.clone();
            broken.offsets[a] = plan.offsets[b];
            let e = check_plan(l, &broken).expect_err("two live buffers share bytes");
            assert!(e.contains("are live at the same time and overlap"), "{e}");
            refused += 1;
            if refused > 40 {
                return;
            }
        }
    }
    assert!(refused > 0, "no pair of live buffers to move");
}
