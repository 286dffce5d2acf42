//! Which buffers' lifetimes overlap a given one, found without comparing it with every
//! buffer: the index memory planning queries for each buffer it places.
//!
//! A lifetime `[first, last]` overlaps `[f, l]` if and only if it contains `f` or starts
//! in `(f, l]`, and never both. The first set is a stabbing query, answered by a segment
//! tree over the half-steps (each lifetime stored at the O(log T) nodes whose ranges tile
//! it; the nodes on the path from the root to leaf `f` hold exactly the lifetimes that
//! contain `f`, each once), the second a range of the lifetimes sorted by start. A query
//! costs O(log T + answers), so planning costs what the overlaps themselves are, not the
//! square of the buffer count (de Berg et al., *Computational Geometry*, ch. 10).

use super::memory_plan::Lifetime;

/// The lifetimes of a fixed set of items (numbered from 0), indexed for overlap queries.
pub struct LifetimeIndex {
    /// `(first, item)`, sorted.
    by_first: Vec<(usize, usize)>,
    /// `(last, item)`, sorted.
    by_last: Vec<(usize, usize)>,
    /// The segment tree: node `i` has children `2i` and `2i + 1`, leaf `leaves + s` is
    /// half-step `s`; a node holds the items whose lifetime covers its range but not its
    /// parent's.
    nodes: Vec<Vec<usize>>,
    leaves: usize,
}

impl LifetimeIndex {
    pub fn new(lifetimes: &[Lifetime]) -> LifetimeIndex {
        let span = lifetimes.iter().map(|lt| lt.last + 1).max().unwrap_or(0);
        let leaves = span.next_power_of_two().max(1);
        let mut nodes = vec![Vec::new(); 2 * leaves];
        for (item, lt) in lifetimes.iter().enumerate() {
            let (mut lo, mut hi) = (lt.first + leaves, lt.last + 1 + leaves);
            while lo < hi {
                if lo & 1 == 1 {
                    nodes[lo].push(item);
                    lo += 1;
                }
                if hi & 1 == 1 {
                    hi -= 1;
                    nodes[hi].push(item);
                }
                lo >>= 1;
                hi >>= 1;
            }
        }
        let mut by_first: Vec<(usize, usize)> = lifetimes
            .iter()
            .enumerate()
            .map(|(item, lt)| (lt.first, item))
            .collect();
        by_first.sort_unstable();
        let mut by_last: Vec<(usize, usize)> = lifetimes
            .iter()
            .enumerate()
            .map(|(item, lt)| (lt.last, item))
            .collect();
        by_last.sort_unstable();
        LifetimeIndex {
            by_first,
            by_last,
            nodes,
            leaves,
        }
    }

    /// Calls `f` once with every item whose lifetime overlaps `lt`.
    pub fn overlapping(&self, lt: Lifetime, mut f: impl FnMut(usize)) {
        if lt.first < self.leaves {
            let mut node = lt.first + self.leaves;
            while node >= 1 {
                self.nodes[node].iter().for_each(|&item| f(item));
                node >>= 1;
            }
        }
        let from = self.by_first.partition_point(|(s, _)| *s <= lt.first);
        let to = self.by_first.partition_point(|(s, _)| *s <= lt.last);
        self.by_first[from..to.max(from)]
            .iter()
            .for_each(|&(_, item)| f(item));
    }

    /// The items whose lifetime starts at half-step `first`.
    pub fn starting_at(&self, first: usize) -> impl Iterator<Item = usize> + '_ {
        items_at(&self.by_first, first)
    }

    /// The items whose lifetime ends at half-step `last`.
    pub fn ending_at(&self, last: usize) -> impl Iterator<Item = usize> + '_ {
        items_at(&self.by_last, last)
    }
}

fn items_at(sorted: &[(usize, usize)], step: usize) -> impl Iterator<Item = usize> + '_ {
    let from = sorted.partition_point(|(s, _)| *s < step);
    let to = sorted.partition_point(|(s, _)| *s <= step);
    sorted[from..to].iter().map(|&(_, item)| item)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(first: usize, last: usize) -> Lifetime {
        Lifetime { first, last }
    }

    /// The items `overlapping` reports, sorted, against the definition.
    fn check(lifetimes: &[Lifetime], query: Lifetime) {
        let index = LifetimeIndex::new(lifetimes);
        let mut found = Vec::new();
        index.overlapping(query, |i| found.push(i));
        found.sort();
        let expected: Vec<usize> = (0..lifetimes.len())
            .filter(|&i| lifetimes[i].first <= query.last && query.first <= lifetimes[i].last)
            .collect();
        assert_eq!(found, expected, "query {query:?} over {lifetimes:?}");
    }

    #[test]
    fn reports_each_overlapping_lifetime_once() {
        let lifetimes = [lt(0, 9), lt(2, 3), lt(3, 3), lt(4, 7), lt(8, 8), lt(1, 5)];
        for first in 0..12 {
            for last in first..12 {
                check(&lifetimes, lt(first, last));
            }
        }
    }

    #[test]
    fn matches_the_definition_on_pseudo_random_lifetimes() {
        // A fixed linear congruential sequence: reproducible, no dependency.
        let mut state = 12345u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % n) as usize
        };
        let lifetimes: Vec<Lifetime> = (0..200)
            .map(|_| {
                let first = next(300);
                lt(first, first + next(60))
            })
            .collect();
        for _ in 0..300 {
            let first = next(380);
            check(&lifetimes, lt(first, first + next(40)));
        }
    }

    #[test]
    fn finds_lifetimes_by_their_ends() {
        let index = LifetimeIndex::new(&[lt(1, 4), lt(5, 6), lt(1, 2), lt(3, 4)]);
        let mut starting: Vec<usize> = index.starting_at(1).collect();
        starting.sort();
        assert_eq!(starting, [0, 2]);
        let mut ending: Vec<usize> = index.ending_at(4).collect();
        ending.sort();
        assert_eq!(ending, [0, 3]);
        assert_eq!(index.starting_at(2).count(), 0);
    }
}
