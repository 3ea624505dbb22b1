//! Keyset pagination: a page request (`first`, `after`) and a page of results with the key of
//! each row, so a cursor never skips or repeats a row when rows are added meanwhile.

use crate::error::{AppError, AppResult};

/// The largest page.
pub const MAX_PAGE: usize = 100;
/// The page size when `first` is not given.
pub const DEFAULT_PAGE: usize = 20;

/// Where a row sorts: its sort value and its id (the tie-breaker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The sort value as text (a name, or an RFC 3339 time).
    pub sort: String,
    /// The row's id.
    pub id: String,
}

/// A validated page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    /// How many rows.
    pub first: usize,
    /// Rows after this key.
    pub after: Option<Key>,
}

impl PageRequest {
    /// Validates `first` (1..=100, default 20); nothing is silently clamped.
    pub fn new(first: Option<i32>, after: Option<Key>) -> AppResult<Self> {
        let first = match first {
            None => DEFAULT_PAGE,
            Some(n) if n >= 1 && (n as usize) <= MAX_PAGE => n as usize,
            Some(_) => {
                return Err(AppError::bad_input(
                    "first",
                    format!("must be between 1 and {MAX_PAGE}"),
                ));
            }
        };
        Ok(Self { first, after })
    }

    /// How many rows to fetch to know whether there is a next page.
    pub fn fetch(&self) -> u64 {
        self.first as u64 + 1
    }
}

/// One page of rows.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The rows with their keys.
    pub rows: Vec<(Key, T)>,
    /// Whether more rows follow.
    pub has_next: bool,
    /// How many rows match in all.
    pub total: u64,
}

impl<T> Page<T> {
    /// Builds a page from `fetch()` rows: the extra row only says that more follow.
    pub fn from_fetched(mut rows: Vec<(Key, T)>, request: &PageRequest, total: u64) -> Self {
        let has_next = rows.len() > request.first;
        rows.truncate(request.first);
        Self {
            rows,
            has_next,
            total,
        }
    }

    /// Maps the rows.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        let mut f = f;
        Page {
            rows: self.rows.into_iter().map(|(k, t)| (k, f(t))).collect(),
            has_next: self.has_next,
            total: self.total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_must_be_within_range() {
        assert_eq!(PageRequest::new(None, None).expect("default").first, 20);
        for bad in [0, -1, 101] {
            match PageRequest::new(Some(bad), None) {
                Err(AppError::BadUserInput { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("first"))
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
