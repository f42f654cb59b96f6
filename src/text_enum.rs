//! `text_enum!`: the text form of the crate's small enums (states, scopes, kinds): `as_str`,
//! `ALL`, `Display`, `FromStr` (a typed `INVALID_INPUT`), and rusqlite `ToSql`/`FromSql`.

/// Implements text conversions (`as_str`, `ALL`, `Display`, `FromStr`, SQL) for a unit enum.
macro_rules! text_enum {
    ($ty:ident, $what:literal, [$($variant:ident => $text:literal),+ $(,)?]) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: [$ty; [$($text),+].len()] = [$($ty::$variant),+];

            /// The text stored in the database and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = crate::error::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| crate::error::Error::invalid($what, format!("unknown {} {s:?}", $what)))
            }
        }

        impl rusqlite::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str()?
                    .parse()
                    .map_err(|e: crate::error::Error| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

/// `Display` as the enum's serde text (`rename_all`), for the unit enums whose text form is
/// their serde form (`RecoveryPolicy`, `StageStatus`, ...): one text, no second table.
macro_rules! serde_display {
    ($($ty:ty),+ $(,)?) => {
        $(impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match serde_json::to_value(self) {
                    Ok(serde_json::Value::String(s)) => f.write_str(&s),
                    _ => Err(std::fmt::Error),
                }
            }
        })+
    };
}
