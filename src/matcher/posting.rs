//! Posting lists: the shapes filed under one index key, as (slot, probe number) pairs.
//! Most keys hold a single shape, which is stored inline (no heap allocation, one cache
//! miss less per lookup).

/// A shape's slot and the number of the probe (within its plan) filed here, possibly
/// marked exact (see `exact::exact_field`).
pub(super) type Posted = (u32, u32);

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
}
