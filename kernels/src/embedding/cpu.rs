//! The embedding oracle: one row copy per id, and the adjoint as a plain accumulation in f64.
//!
//! Panics on an id outside `0..vocab` (the tensor op returns an error instead).

fn row_of(id: i64, vocab: usize) -> usize {
    assert!((0..vocab as i64).contains(&id), "embedding oracle: id {id} is out of range for vocab {vocab}");
    id as usize
}

/// `y[j] = table[ids[j]]`, `table` is `vocab` x `dim` row-major.
pub fn embedding(table: &[f64], vocab: usize, dim: usize, ids: &[i64]) -> Vec<f64> {
    assert_eq!(table.len(), vocab * dim, "embedding oracle: table holds {} values, not {vocab} x {dim}", table.len());
    let mut y = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        let r = row_of(id, vocab);
        y.extend_from_slice(&table[r * dim..(r + 1) * dim]);
    }
    y
}

/// `dW[v] = sum_{j : ids[j] = v} dy[j]` in increasing `j`; `dy` is `ids.len()` x `dim`.
pub fn embedding_adjoint(dy: &[f64], vocab: usize, dim: usize, ids: &[i64]) -> Vec<f64> {
    assert_eq!(dy.len(), ids.len() * dim, "embedding oracle: dy holds {} values, not {} x {dim}", dy.len(), ids.len());
    let mut dw = vec![0.0; vocab * dim];
    for (j, &id) in ids.iter().enumerate() {
        let r = row_of(id, vocab);
        for c in 0..dim {
            dw[r * dim + c] += dy[j * dim + c];
        }
    }
    dw
}

/// The positions of a list of ids grouped by row, for a deterministic scatter without float
/// atomics: `rows` holds the distinct rows in increasing order, `pos[starts[u]..starts[u + 1]]`
/// the positions holding `rows[u]` in increasing order (`starts` has one more entry than `rows`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Groups {
    pub rows: Vec<u32>,
    pub starts: Vec<u32>,
    pub pos: Vec<u32>,
}

/// Groups `ids` by row (see [`Groups`]). Errors (naming the first bad position) on an id outside
/// `0..vocab`, or when `ids.len()` or `vocab` does not fit in `u32`.
pub fn group_positions(ids: &[i64], vocab: usize) -> Result<Groups, String> {
    if ids.len() > u32::MAX as usize || vocab > u32::MAX as usize {
        return Err(format!("{} ids or vocab {vocab} exceed u32", ids.len()));
    }
    if let Some(j) = ids.iter().position(|&id| !(0..vocab as i64).contains(&id)) {
        return Err(format!("ids[{j}] = {} is out of range for vocab {vocab}", ids[j]));
    }
    let mut pos: Vec<u32> = (0..ids.len() as u32).collect();
    pos.sort_by_key(|&j| ids[j as usize]); // stable: equal ids keep increasing j
    let mut rows = Vec::new();
    let mut starts = Vec::new();
    for (k, &j) in pos.iter().enumerate() {
        let id = ids[j as usize] as u32;
        if rows.last() != Some(&id) {
            rows.push(id);
            starts.push(k as u32);
        }
    }
    starts.push(pos.len() as u32);
    Ok(Groups { rows, starts, pos })
}

#[cfg(test)]
mod tests {
    use super::group_positions;

    #[test]
    fn grouping_is_stable_and_checks_range() {
        let g = group_positions(&[3, 1, 3, 0, 1, 3], 4).unwrap();
        assert_eq!(g.rows, vec![0, 1, 3]);
        assert_eq!(g.starts, vec![0, 1, 3, 6]);
        assert_eq!(g.pos, vec![3, 1, 4, 0, 2, 5]);
        assert!(group_positions(&[0, 4], 4).unwrap_err().contains("ids[1] = 4"));
        assert!(group_positions(&[-1], 4).is_err());
        let e = group_positions(&[], 4).unwrap();
        assert_eq!((e.rows.len(), e.starts, e.pos.len()), (0, vec![0], 0));
    }
}
