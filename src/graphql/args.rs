//! Argument checks every feature module shares: bounded lists and lists of ids.

use async_graphql::ID;

use crate::error::AppError;

/// The most items a list argument takes (each costs queries; a request stays bounded).
pub const MAX_LIST: usize = 50;

/// Refuses a list argument longer than [`MAX_LIST`].
pub fn check_len(len: usize, field: &str) -> Result<(), AppError> {
    if len > MAX_LIST {
        return Err(AppError::bad_input(
            field,
            format!("at most {MAX_LIST} items"),
        ));
    }
    Ok(())
}

/// Parses a list of ids (at most [`MAX_LIST`]), naming the element at fault (`field.3`).
pub fn parse_ids<T>(
    ids: &[ID],
    field: &str,
    parse: impl Fn(&str, &str) -> Result<T, AppError>,
) -> Result<Vec<T>, AppError> {
    check_len(ids.len(), field)?;
    ids.iter()
        .enumerate()
        .map(|(i, id)| parse(id, &format!("{field}.{i}")))
        .collect()
}
