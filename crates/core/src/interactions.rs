//! The user × item interaction matrix that retrieval models train on and evaluation protocols
//! build: dense `u32` indices for string ids, and a compressed sparse row matrix.

use std::collections::HashMap;

/// A bijection between string ids and dense indices `0..len`, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ids: Vec<String>,
    index: HashMap<String, u32>,
}

impl IdMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `id`, assigning the next one if it is new.
    pub fn get_or_insert(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = u32::try_from(self.ids.len()).expect("fewer than 2^32 ids");
        self.ids.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }

    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The id of index `i`. Panics if out of range.
    pub fn id(&self, i: u32) -> &str {
        &self.ids[i as usize]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }
}

/// A sparse matrix in compressed sparse row form; column indices are sorted within each row
/// and unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    /// `indptr[r]..indptr[r + 1]` are row `r`'s entries; `len = rows + 1`.
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    /// Builds a matrix from `(row, col, value)` triplets; duplicates are summed.
    pub fn from_triplets(rows: usize, cols: usize, mut triplets: Vec<(u32, u32, f32)>) -> Csr {
        triplets.sort_unstable_by_key(|&(r, c, _)| (r, c));
        let mut indptr = vec![0usize; rows + 1];
        let mut indices = Vec::with_capacity(triplets.len());
        let mut values: Vec<f32> = Vec::with_capacity(triplets.len());
        let mut last = None;
        for (r, c, v) in triplets {
            assert!((r as usize) < rows && (c as usize) < cols, "triplet ({r}, {c}) outside {rows}x{cols}");
            if last == Some((r, c)) {
                *values.last_mut().expect("a previous entry") += v;
                continue;
            }
            last = Some((r, c));
            indptr[r as usize + 1] += 1;
            indices.push(c);
            values.push(v);
        }
        for r in 0..rows {
            indptr[r + 1] += indptr[r];
        }
        Csr { rows, cols, indptr, indices, values }
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// Column indices and values of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let span = self.indptr[r]..self.indptr[r + 1];
        (&self.indices[span.clone()], &self.values[span])
    }

    /// The transpose (item × user from user × item), in O(nnz).
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for c in 0..self.cols {
            counts[c + 1] += counts[c];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for r in 0..self.rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let slot = next[c as usize];
                indices[slot] = u32::try_from(r).expect("fewer than 2^32 rows");
                values[slot] = v;
                next[c as usize] += 1;
            }
        }
        Csr { rows: self.cols, cols: self.rows, indptr, indices, values }
    }
}

/// Interactions with their ids: rows are users, columns items.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interactions {
    pub users: IdMap,
    pub items: IdMap,
    pub matrix: Csr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplets_sum_duplicates_and_transpose_round_trips() {
        let m = Csr::from_triplets(3, 4, vec![(2, 1, 1.0), (0, 3, 2.0), (0, 0, 1.0), (2, 1, 0.5)]);
        assert_eq!(m.indptr, [0, 2, 2, 3]);
        assert_eq!(m.row(0), (&[0u32, 3][..], &[1.0f32, 2.0][..]));
        assert_eq!(m.row(2), (&[1u32][..], &[1.5f32][..]));
        let t = m.transpose();
        assert_eq!((t.rows, t.cols), (4, 3));
        assert_eq!(t.row(1), (&[2u32][..], &[1.5f32][..]));
        assert_eq!(t.transpose(), m);
    }

    #[test]
    fn id_map_is_a_bijection() {
        let mut ids = IdMap::new();
        assert_eq!((ids.get_or_insert("b"), ids.get_or_insert("a"), ids.get_or_insert("b")), (0, 1, 0));
        assert_eq!((ids.id(1), ids.get("a"), ids.get("z"), ids.len()), ("a", Some(1), None, 2));
    }
}
