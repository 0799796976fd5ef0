//! ListVolumes pages. Volumes are listed in name order; a page's `next_token` names the last
//! volume it returned (`v1:<volume-id>`), so a volume created or deleted between two pages
//! neither shifts nor repeats the others. A token of another form is refused (ABORTED).

use super::names::is_volume_id;

const PREFIX: &str = "v1:";

/// A starting token the driver did not hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("starting_token {0:?} was not returned by ListVolumes (expected v1:<volume-id>)")]
pub struct BadToken(pub String);

/// The token continuing after volume `id`.
pub fn token_after(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The volume a token continues after; None for the empty token (the first page).
pub fn parse_token(token: &str) -> Result<Option<&str>, BadToken> {
    if token.is_empty() {
        return Ok(None);
    }
    match token.strip_prefix(PREFIX) {
        Some(id) if is_volume_id(id) => Ok(Some(id)),
        _ => Err(BadToken(token.to_owned())),
    }
}

/// The page of `sorted` (volume IDs in ascending order) starting after `after`, at most
/// `max_entries` long (0 or less: all), and the next page's token ("" on the last page).
pub fn page<'a>(
    sorted: &'a [String],
    after: Option<&str>,
    max_entries: i32,
) -> (&'a [String], String) {
    let start = after.map_or(0, |a| sorted.partition_point(|id| id.as_str() <= a));
    let rest = &sorted[start..];
    let n = usize::try_from(max_entries)
        .ok()
        .filter(|n| *n > 0)
        .map_or(rest.len(), |n| n.min(rest.len()));
    let page = &rest[..n];
    let next = if n < rest.len() {
        page.last().map(|id| token_after(id)).unwrap_or_default()
    } else {
        String::new()
    };
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn tokens_round_trip_and_strangers_are_refused() {
        assert_eq!(parse_token(""), Ok(None));
        assert_eq!(parse_token(&token_after("pvc-1")), Ok(Some("pvc-1")));
        for bad in ["invalid-token", "v1:", "v1:Bad_Name", "v2:pvc-1", "12"] {
            assert_eq!(parse_token(bad), Err(BadToken(bad.into())), "{bad}");
        }
    }

    #[test]
    fn pages_walk_the_list_once() {
        let all = ids(&["a", "b", "c", "d", "e"]);
        let (p1, t1) = page(&all, None, 2);
        assert_eq!(p1, &all[..2]);
        let (p2, t2) = page(&all, parse_token(&t1).unwrap(), 2);
        assert_eq!(p2, &all[2..4]);
        let (p3, t3) = page(&all, parse_token(&t2).unwrap(), 2);
        assert_eq!(p3, &all[4..]);
        assert_eq!(t3, "");
        let (every, t) = page(&all, None, 0);
        assert_eq!((every.len(), t.as_str()), (5, ""));
        let (exact, t) = page(&all, None, 5);
        assert_eq!((exact.len(), t.as_str()), (5, ""));
    }

    #[test]
    fn a_deleted_or_added_volume_does_not_shift_the_next_page() {
        let before = ids(&["a", "b", "c", "d"]);
        let (_, t) = page(&before, None, 2);
        // "b", the last of the first page, is deleted and "aa" is added before the next page.
        let after = ids(&["a", "aa", "c", "d"]);
        let (p2, _) = page(&after, parse_token(&t).unwrap(), 2);
        assert_eq!(p2, &ids(&["c", "d"])[..]);
    }
}
