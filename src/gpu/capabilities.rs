//! `NVIDIA_DRIVER_CAPABILITIES`: which driver pieces a container gets.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One driver capability (research §1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Compute,
    Compat32,
    Graphics,
    Utility,
    Video,
    Display,
    Ngx,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Capability::Compute,
        Capability::Compat32,
        Capability::Graphics,
        Capability::Utility,
        Capability::Video,
        Capability::Display,
        Capability::Ngx,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Compute => "compute",
            Capability::Compat32 => "compat32",
            Capability::Graphics => "graphics",
            Capability::Utility => "utility",
            Capability::Video => "video",
            Capability::Display => "display",
            Capability::Ngx => "ngx",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of capabilities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);

    pub fn all() -> Capabilities {
        Capability::ALL
            .iter()
            .fold(Capabilities::NONE, |c, &x| c.with(x))
    }

    pub fn of(caps: &[Capability]) -> Capabilities {
        caps.iter().fold(Capabilities::NONE, |c, &x| c.with(x))
    }

    pub fn with(self, c: Capability) -> Capabilities {
        Capabilities(self.0 | c.bit())
    }

    pub fn contains(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }

    /// True when the two sets share a capability.
    pub fn intersects(self, other: Capabilities) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL
            .into_iter()
            .filter(move |c| self.contains(*c))
    }

    /// Parses a comma list of names or `all`. Empty entries are ignored; an unknown
    /// name is an error naming it.
    pub fn parse(s: &str) -> Result<Capabilities, String> {
        let mut caps = Capabilities::NONE;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                caps = Capabilities::all();
                continue;
            }
            let c = Capability::ALL
                .into_iter()
                .find(|c| c.name() == word)
                .ok_or_else(|| {
                    format!(
                        "unsupported capability {word:?} (supported: all, compute, compat32, \
                         graphics, utility, video, display, ngx)"
                    )
                })?;
            caps = caps.with(c);
        }
        Ok(caps)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Capability::name).collect();
        f.write_str(&names.join(","))
    }
}

impl Serialize for Capabilities {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Capabilities {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Capabilities, D::Error> {
        let s = String::deserialize(d)?;
        Capabilities::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_all() {
        let c = Capabilities::parse("utility,compute").unwrap();
        assert!(c.contains(Capability::Utility) && c.contains(Capability::Compute));
        assert!(!c.contains(Capability::Graphics));
        assert_eq!(c.to_string(), "compute,utility");
        assert_eq!(Capabilities::parse("all").unwrap(), Capabilities::all());
        assert_eq!(
            Capabilities::parse(" video , ").unwrap().to_string(),
            "video"
        );
        assert!(Capabilities::parse("").unwrap().is_empty());
    }

    #[test]
    fn unknown_name_is_an_error_naming_it() {
        let e = Capabilities::parse("compute,gaming").unwrap_err();
        assert!(e.contains("\"gaming\""), "{e}");
    }
}
