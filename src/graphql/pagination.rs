//! Relay connections: opaque cursors over the services' keyset pages, `pageInfo`, `totalCount`.

use async_graphql::{
    SimpleObject,
    connection::{Connection, ConnectionNameType, CursorType, Edge, EdgeNameType, EmptyFields},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{
    domain::pagination::{Key, Page, PageRequest},
    error::{AppError, AppResult},
};

/// The connection fields every list has.
#[derive(SimpleObject)]
pub struct ConnectionTotal {
    /// How many items match in all (not only this page).
    pub total_count: i64,
}

/// A Relay connection with `totalCount`.
pub type Conn<N> = Connection<PageCursor, N, ConnectionTotal, EmptyFields>;

/// A row's place in its list, encoded as an opaque cursor only when a client asks for it
/// (`cursor`, `pageInfo`): a page of 50 asked for `pageInfo` alone encodes two, not 50.
pub struct PageCursor(Key);

impl CursorType for PageCursor {
    type Error = &'static str;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        decode(s)
            .map(Self)
            .map_err(|_| "not a cursor from this list")
    }

    fn encode_cursor(&self) -> String {
        encode(&self.0)
    }
}

fn encode(key: &Key) -> String {
    let json = serde_json::json!([key.sort, key.id]).to_string();
    URL_SAFE_NO_PAD.encode(json)
}

fn decode(cursor: &str) -> AppResult<Key> {
    let bad = || AppError::bad_input("after", "not a cursor from this list");
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let (sort, id): (String, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(Key { sort, id })
}

/// Validates `first` and `after`.
pub fn request(first: Option<i32>, after: Option<String>) -> AppResult<PageRequest> {
    let after = after.as_deref().map(decode).transpose()?;
    PageRequest::new(first, after)
}

/// Turns a page into a connection.
pub fn connection<T, N: async_graphql::OutputType>(
    page: Page<T>,
    has_previous: bool,
    node: impl Fn(T) -> N,
) -> Conn<N> {
    connection_named(page, has_previous, node)
}

/// Turns a page into a connection whose type names are `Name` and `EdgeName` (not derived from
/// the node's type name).
pub fn connection_named<T, N, Name, EdgeName>(
    page: Page<T>,
    has_previous: bool,
    node: impl Fn(T) -> N,
) -> Connection<PageCursor, N, ConnectionTotal, EmptyFields, Name, EdgeName>
where
    N: async_graphql::OutputType,
    Name: ConnectionNameType,
    EdgeName: EdgeNameType,
{
    let mut conn = Connection::with_additional_fields(
        has_previous,
        page.has_next,
        ConnectionTotal {
            total_count: i64::try_from(page.total).unwrap_or(i64::MAX),
        },
    );
    conn.edges.extend(
        page.rows
            .into_iter()
            .map(|(key, item)| Edge::new(PageCursor(key), node(item))),
    );
    conn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let key = Key {
            sort: "ada lovelace".into(),
            id: "01".into(),
        };
        assert_eq!(decode(&encode(&key)).expect("decodes"), key);
        let cursor = PageCursor(key.clone()).encode_cursor();
        assert_eq!(PageCursor::decode_cursor(&cursor).expect("decodes").0, key);
        assert!(decode("%%%").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("{}")).is_err());
    }
}
