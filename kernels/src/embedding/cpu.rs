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
