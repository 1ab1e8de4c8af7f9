//! The identifiers of the domain, each its own type: a hold id cannot be
//! passed where an approval id is meant, nor a call id stored as a hold's.
//! They are opaque text (UUIDs when tollgate makes them); the store writes
//! and reads them as text at its boundary, and JSON shows them as strings.

macro_rules! ids {
    ($($(#[$m:meta])* $name:ident;)+) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A fresh, random id.
            pub fn random() -> $name {
                $name(uuid::Uuid::new_v4().to_string())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text itself, for the store's encoders.
            pub fn as_string(&self) -> &String {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> $name {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> $name {
                $name(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    )+};
}

ids! {
    /// One governed call, from admission to its outcome record.
    CallId;
    /// Money and tokens reserved on budgets for one call.
    HoldId;
    /// A pending action in the approval queue.
    ApprovalId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_text_in_json_and_random_ones_differ() {
        let id = HoldId::from("h-1");
        assert_eq!(serde_json::to_value(&id).unwrap(), serde_json::json!("h-1"));
        assert_eq!(serde_json::from_value::<HoldId>(serde_json::json!("h-1")).unwrap(), id);
        assert_ne!(CallId::random(), CallId::random());
    }
}
