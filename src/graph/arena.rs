//! Arena allocation by liveness: tensors whose lifetimes (first..=last command that touches
//! them) do not overlap may share memory. Greedy best-offset placement, largest first, in a
//! virtual address space cut into pages no larger than one storage binding; a tensor never
//! straddles a page.

#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub bytes: u64,
    pub first: usize,
    pub last: usize,
}

/// Offsets in the virtual space (page = offset / page_size), and the used bytes per page.
pub fn allocate(blocks: &[Block], page_size: u64, align: u64) -> (Vec<u64>, Vec<u64>) {
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by(|&a, &b| blocks[b].bytes.cmp(&blocks[a].bytes).then(blocks[a].first.cmp(&blocks[b].first)));
    let pad = |b: u64| b.div_ceil(align) * align;
    let mut offsets = vec![u64::MAX; blocks.len()];
    let mut placed: Vec<usize> = Vec::new();
    for &i in &order {
        let b = blocks[i];
        let size = pad(b.bytes);
        // Blocks alive at the same time as `b`, sorted by offset.
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| blocks[j].first <= b.last && b.first <= blocks[j].last)
            .map(|&j| (offsets[j], offsets[j] + pad(blocks[j].bytes)))
            .collect();
        busy.sort();
        let mut cand = 0u64;
        loop {
            // Do not straddle a page boundary.
            let page_end = (cand / page_size + 1) * page_size;
            if cand + size > page_end {
                cand = page_end;
                continue;
            }
            match busy.iter().find(|&&(s, e)| s < cand + size && cand < e) {
                Some(&(_, e)) => cand = e,
                None => break,
            }
        }
        offsets[i] = cand;
        placed.push(i);
    }
    let pages = offsets.iter().zip(blocks).fold(Vec::<u64>::new(), |mut acc, (&o, b)| {
        let p = (o / page_size) as usize;
        if acc.len() <= p {
            acc.resize(p + 1, 0);
        }
        acc[p] = acc[p].max(o % page_size + pad(b.bytes));
        acc
    });
    (offsets, pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let blocks =
            [Block { bytes: 100, first: 0, last: 1 }, Block { bytes: 100, first: 2, last: 3 }, Block { bytes: 100, first: 1, last: 2 }];
        let (off, pages) = allocate(&blocks, 1 << 20, 256);
        assert_eq!(off[0], off[1]);
        assert_ne!(off[0], off[2]);
        assert_eq!(pages, vec![512]);
    }

    #[test]
    fn never_straddles_a_page() {
        let blocks: Vec<Block> = (0..5).map(|_| Block { bytes: 300, first: 0, last: 0 }).collect();
        let (off, pages) = allocate(&blocks, 1024, 256);
        for &o in &off {
            assert!(o % 1024 + 512 <= 1024, "offset {o}");
        }
        assert_eq!(pages.len(), 3);
    }
}
