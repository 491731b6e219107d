//! Posting lists: the shapes filed under one index key, as (slot, probe number) pairs.
//! Most keys hold a single shape, which is stored inline (no heap allocation, one cache
//! miss less per lookup).

/// A shape's slot and the number of the probe (within its plan) filed here, possibly
/// marked exact (see [`exact_field`]).
pub(super) type Posted = (u32, u32);

/// Marks a probe field as exact: its shape is TRUE exactly when a row's value in the
/// column held in bits 16..31 has one of the shape's integer keys.
const EXACT: u32 = 1 << 31;

/// The probe field of probe number `i` of a shape whose predicate an integer key hit on
/// column `col` decides (see `access::exact_int_column`); `None` when the numbers do not
/// fit the field (the probe is then filed plainly and its hits evaluated).
pub(super) fn exact_field(col: usize, i: usize) -> Option<u32> {
    (col < 1 << 15 && i < 1 << 16).then_some(EXACT | (col as u32) << 16 | i as u32)
}

/// The probe number a probe field holds.
pub(super) fn probe_index(field: u32) -> usize {
    if field & EXACT != 0 {
        (field & 0xffff) as usize
    } else {
        field as usize
    }
}

/// The column of an exact probe field.
pub(super) fn exact_column(field: u32) -> Option<usize> {
    (field & EXACT != 0).then_some(((field & !EXACT) >> 16) as usize)
}

#[derive(Debug)]
pub(super) enum Posting {
    One([Posted; 1]),
    Many(Vec<Posted>),
}

impl Default for Posting {
    fn default() -> Posting {
        Posting::Many(Vec::new())
    }
}

impl Posting {
    pub(super) fn as_slice(&self) -> &[Posted] {
        match self {
            Posting::One(one) => one,
            Posting::Many(many) => many,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Appends `item`; returns its position.
    pub(super) fn push(&mut self, item: Posted) -> u32 {
        match self {
            Posting::Many(many) if many.is_empty() => {
                *self = Posting::One([item]);
                0
            }
            Posting::One([first]) => {
                *self = Posting::Many(vec![*first, item]);
                1
            }
            Posting::Many(many) => {
                many.push(item);
                (many.len() - 1) as u32
            }
        }
    }

    /// Removes the item at `pos` by moving the last one into its place; returns the moved
    /// item (now at `pos`), whose recorded position the caller must update.
    pub(super) fn swap_remove(&mut self, pos: u32) -> Option<Posted> {
        let pos = pos as usize;
        match self {
            Posting::One(_) => {
                *self = Posting::default();
                None
            }
            Posting::Many(many) => {
                many.swap_remove(pos);
                let moved = many.get(pos).copied();
                if let [only] = many[..] {
                    *self = Posting::One([only]);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_stay_valid_through_pushes_and_removals() {
        let mut p = Posting::default();
        assert_eq!(p.push((7, 0)), 0);
        assert_eq!(p.push((8, 1)), 1);
        assert_eq!(p.push((9, 0)), 2);
        assert_eq!(p.swap_remove(0), Some((9, 0)));
        assert_eq!(p.as_slice(), &[(9, 0), (8, 1)]);
        assert_eq!(p.swap_remove(1), None);
        assert!(matches!(p, Posting::One([(9, 0)])));
        assert_eq!(p.swap_remove(0), None);
        assert!(p.is_empty());
        assert!(std::mem::size_of::<Posting>() <= 32);
    }

    #[test]
    fn exact_fields_keep_their_probe_number_and_column() {
        let field = exact_field(7, 3).expect("fits");
        assert_eq!((probe_index(field), exact_column(field)), (3, Some(7)));
        assert_eq!((probe_index(70_000), exact_column(70_000)), (70_000, None));
        assert_eq!(exact_field(1 << 15, 0), None);
        assert_eq!(exact_field(0, 1 << 16), None);
    }
}
