//! The words stored rows are made of, typed. Each is written to a text
//! column as its word and read back through [`Word::parse`]: an unknown
//! word in a row is an error at the store's boundary, never a string
//! compared somewhere above it.

/// An enum stored as one of a fixed set of words.
pub trait Word: Sized + Copy + 'static {
    /// Every value, in order.
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl Word for $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                Word::as_str(self)
            }

            pub fn parse(s: &str) -> Option<$name> {
                <$name as Word>::parse(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

words! {
    /// Where a pending action stands. It leaves `Pending` once.
    Status {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        Expired = "expired",
        Cancelled = "cancelled",
    }
}

words! {
    /// Whether an approved action has run: claimed by exactly one caller
    /// (`Running`), then `Done` with its result stored.
    Execution {
        None = "none",
        Running = "running",
        Done = "done",
    }
}

words! {
    /// How the caller waits on an action: its call waits or is repeated
    /// (`Wait`), or it polls a task (`Task`, SEP-2663).
    Mode {
        Wait = "wait",
        Task = "task",
    }
}

words! {
    /// Where a hold stands. It leaves `Held` once.
    HoldState {
        Held = "held",
        /// Charged what the call cost (at most what was held).
        Settled = "settled",
        /// Given back: the call did not run or cost nothing.
        Released = "released",
        /// Given back by the sweep: its call's process died or its time ran out.
        Expired = "expired",
    }
}

/// The domain's ids are stored as text: bound as their text, read back
/// through their `From<String>` at the store's boundary.
macro_rules! text_ids {
    ($($id:ty),+) => {$(
        impl<DB: sqlx::Database> sqlx::Type<DB> for $id
        where
            String: sqlx::Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as sqlx::Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as sqlx::Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: sqlx::Database> sqlx::Encode<'q, DB> for $id
        where
            String: sqlx::Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<'q, DB>>::encode_by_ref(self.as_string(), buf)
            }
        }
    )+};
}

text_ids!(crate::ids::CallId, crate::ids::HoldId, crate::ids::ApprovalId);

/// How hard a commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives a crash of the process (SQLite `synchronous = NORMAL` in WAL mode).
    #[default]
    Normal,
    /// Survives power loss too (`synchronous = FULL`: an fsync per commit).
    Full,
}

words! {
    /// What a budget counts: money (micro-units) or tokens.
    Unit {
        Money = "money",
        Tokens = "tokens",
    }
}

impl Unit {
    /// Parses an amount of this unit: a decimal for money, an integer for tokens.
    pub fn amount(self, text: &str) -> Result<i64, String> {
        match self {
            Unit::Money => crate::money::Micros::parse(text).map(|m| m.0),
            Unit::Tokens => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| format!("`{text}` is not a whole number of tokens")),
        }
    }

    pub fn show(self, amount: i64) -> String {
        match self {
            Unit::Money => crate::money::Micros(amount).to_string(),
            Unit::Tokens => format!("{amount} tokens"),
        }
    }
}

/// A budget's period, stored as its name.
impl Word for crate::calendar::Period {
    const ALL: &'static [Self] = &crate::calendar::Period::ALL;
    fn as_str(self) -> &'static str {
        crate::calendar::Period::as_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(*s));
        }
        for e in Execution::ALL {
            assert_eq!(Execution::parse(e.as_str()), Some(*e));
        }
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.as_str()), Some(*m));
        }
        for h in HoldState::ALL {
            assert_eq!(HoldState::parse(h.as_str()), Some(*h));
        }
        assert_eq!(Status::parse("Approved"), None);
        assert_eq!(serde_json::to_value(Status::Expired).unwrap(), "expired");
    }
}
