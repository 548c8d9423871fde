//! Validated ids. Parsed once at the edge of the program (config, spec, API); everything past
//! that point holds a type that cannot carry SQL, whitespace or surprises.
//!
//! An id is lowercase ASCII letters, digits and single hyphens, starts with a letter, does not
//! end with a hyphen: `facility-la-001`, `tenant-foo-inc`, `us-east`.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: {reason} (expected lowercase letters, digits and single hyphens, starting with a letter, at most {max} characters, e.g. {example})")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
    pub max: usize,
    pub example: &'static str,
}

fn check(kind: &'static str, max: usize, example: &'static str, s: &str) -> Result<(), IdError> {
    let err = |reason| IdError {
        kind,
        value: s.chars().take(80).collect(),
        reason,
        max,
        example,
    };
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.len() > max {
        return Err(err("it is too long"));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(err("it must start with a lowercase letter"));
    }
    if let Some(_bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(err(
            "it contains a character that is not a lowercase letter, digit or hyphen",
        ));
    }
    if s.ends_with('-') || s.contains("--") {
        return Err(err("hyphens must separate words"));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $example:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const KIND: &'static str = $kind;

            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, $max, $example, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as a fragment of a PostgreSQL identifier (`facility-la-001` -> `facility_la_001`).
            /// Injective, because ids never contain `_`.
            pub fn ident_part(&self) -> String {
                self.0.replace('-', "_")
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A facility, the unit an edge box serves: `facility-la-001`.
    FacilityId, "facility", 48, "facility-la-001"
);
id_type!(
    /// A customer tenant: `tenant-foo-inc`.
    TenantId, "tenant", 48, "tenant-foo-inc"
);
id_type!(
    /// A region: `us-east`.
    RegionId, "region", 24, "us-east"
);
id_type!(
    /// A node of the topology (one PostgreSQL database). Short, because subscription and slot
    /// names are built from two of them and PostgreSQL cuts identifiers at 63 bytes.
    NodeName, "node", 24, "la-edge"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_ids_parse() {
        assert_eq!(
            FacilityId::parse("facility-la-001").unwrap().as_str(),
            "facility-la-001"
        );
        assert_eq!(RegionId::parse("us-east").unwrap().ident_part(), "us_east");
        assert!(TenantId::parse("tenant-foo-inc").is_ok());
        assert!(NodeName::parse("la").is_ok());
    }

    #[test]
    fn injection_is_refused_with_a_clear_message() {
        let e = FacilityId::parse("x'; drop table orders; --").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("invalid facility id"), "{msg}");
        assert!(msg.contains("lowercase letter, digit or hyphen"), "{msg}");
    }

    #[test]
    fn edge_cases_are_refused() {
        for bad in ["", "La", "1abc", "a_b", "a-", "a--b", "a b", "ä", "a\"b"] {
            assert!(FacilityId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(NodeName::parse(&"a".repeat(25)).is_err());
        assert!(NodeName::parse(&"a".repeat(24)).is_ok());
    }

    #[test]
    fn serde_validates() {
        #[derive(Deserialize)]
        struct T {
            #[allow(dead_code)]
            f: FacilityId,
        }
        let e = toml::from_str::<T>("f = \"bad id\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("invalid facility id"), "{e}");
    }
}
