//! What one row change does to one shape: the move classification of invariant 3, in
//! one place. The matcher, the server's log replay and the tests all call [`classify`].
//! Pure: no IO, no dependency on the index.

/// What a change does to one shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Effect {
    /// The row entered the shape (move in, or a new row).
    Insert,
    /// The row was and stays in the shape.
    Update,
    /// The row left the shape.
    Delete(MoveOutReason),
}

/// Why a row left a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MoveOutReason {
    /// The row was deleted: the change has no new image.
    Deleted,
    /// The row still exists but no longer matches the predicate.
    MovedOut,
}

/// Classifies one change for one shape from three facts: whether the old image matched
/// (`was`; false when there is no old image), whether the new image matched (`is`; false
/// when there is none) and whether the row is gone (`deleted`: the change has no new
/// image).
///
/// | was | is | deleted | effect |
/// |---|---|---|---|
/// | no | no | any | `None` |
/// | no | yes | no | [`Effect::Insert`] |
/// | yes | yes | no | [`Effect::Update`] |
/// | yes | no | no | [`Effect::Delete`]`(`[`MoveOutReason::MovedOut`]`)` |
/// | yes | any | yes | [`Effect::Delete`]`(`[`MoveOutReason::Deleted`]`)` |
///
/// A deleted row is in no shape afterwards, so `is` is ignored when `deleted` holds.
/// "No longer permitted" is a refinement of `MovedOut` that only the caller can make (it
/// needs the subscription without its permission rule). Constant time, never fails.
pub fn classify(was: bool, is: bool, deleted: bool) -> Option<Effect> {
    match (was, is && !deleted) {
        (false, false) => None,
        (false, true) => Some(Effect::Insert),
        (true, true) => Some(Effect::Update),
        (true, false) if deleted => Some(Effect::Delete(MoveOutReason::Deleted)),
        (true, false) => Some(Effect::Delete(MoveOutReason::MovedOut)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_combination_of_old_new_and_deleted() {
        let moved = Some(Effect::Delete(MoveOutReason::MovedOut));
        let deleted = Some(Effect::Delete(MoveOutReason::Deleted));
        let cases = [
            // (was, is, deleted) -> effect
            ((false, false, false), None),
            ((false, true, false), Some(Effect::Insert)),
            ((true, true, false), Some(Effect::Update)),
            ((true, false, false), moved),
            ((true, false, true), deleted),
            ((false, false, true), None),
            // A deleted row has no new image, so it cannot match; should a caller say it
            // does, the row is still gone.
            ((true, true, true), deleted),
            ((false, true, true), None),
        ];
        for ((was, is, gone), want) in cases {
            assert_eq!(
                classify(was, is, gone),
                want,
                "was={was} is={is} deleted={gone}"
            );
        }
    }
}
