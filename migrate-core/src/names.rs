//! Enums spelled the same in configuration, plans and reports.

/// Declares a fieldless enum whose values are written as fixed strings (`"callers-first"`), with
/// `VALUES` (every spelling, for errors and docs), `as_str`, `Display`, and serde through those strings.
/// An unknown string is refused with the list of accepted ones, which is what the configuration loader
/// shows the user; the same enum then serves the settings, the plan and the reports, so no layer keeps
/// its own copy to map.
#[macro_export]
macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name { $($(#[$vm])* $var),+ }

        impl $name {
            /// Every accepted spelling, for error messages and docs.
            pub const VALUES: &'static [&'static str] = &[$($s),+];
            /// The spelling used in configuration files and reports.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($s => Ok($name::$var),)+
                    other => Err(format!(
                        "invalid value {other:?}: expected one of {}",
                        $crate::names::quoted_list($name::VALUES)
                    )),
                }
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> &'static str { v.as_str() }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

/// `"a", "b", "c"`: the accepted values as an error message lists them.
pub fn quoted_list(values: &[&str]) -> String {
    values
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
