//! UCAN commands: slash-separated lowercase paths such as `/mesh/join`.

use std::fmt;
use std::str::FromStr;

/// Longest command accepted, in bytes.
pub const MAX_COMMAND_LEN: usize = 256;

/// A validated command path: `/` or `/seg/seg…` with non-empty, lowercase
/// segments and no trailing slash.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Command(String);

/// Why a string is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Does not start with `/`.
    #[error("command `{0}` must start with `/`")]
    NoLeadingSlash(String),
    /// Ends with `/` (other than the root `/`).
    #[error("command `{0}` must not end with `/`")]
    TrailingSlash(String),
    /// Has an empty segment (`//`).
    #[error("command `{0}` has an empty segment")]
    EmptySegment(String),
    /// Has an uppercase, whitespace or control character.
    #[error("command `{0}` must be lowercase without whitespace or control characters")]
    BadCharacter(String),
    /// Longer than [`MAX_COMMAND_LEN`].
    #[error("command is longer than {MAX_COMMAND_LEN} bytes")]
    TooLong,
}

impl Command {
    /// Parses and validates a command.
    pub fn parse(s: &str) -> Result<Self, CommandError> {
        if s.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong);
        }
        let Some(rest) = s.strip_prefix('/') else {
            return Err(CommandError::NoLeadingSlash(s.to_owned()));
        };
        if rest.is_empty() {
            return Ok(Self::root());
        }
        if rest.ends_with('/') {
            return Err(CommandError::TrailingSlash(s.to_owned()));
        }
        if rest.split('/').any(str::is_empty) {
            return Err(CommandError::EmptySegment(s.to_owned()));
        }
        if s.chars()
            .any(|c| c.is_uppercase() || c.is_whitespace() || c.is_control())
        {
            return Err(CommandError::BadCharacter(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    /// The root command `/`, which covers every command.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// The command text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments (empty for `/`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// True when `other` is this command or below it, by whole segments:
    /// `/mesh` covers `/mesh` and `/mesh/join` but not `/meshes`.
    pub fn covers(&self, other: &Command) -> bool {
        self.0 == "/"
            || other.0 == self.0
            || (other.0.starts_with(&self.0) && other.0.as_bytes().get(self.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Command({})", self.0)
    }
}

impl FromStr for Command {
    type Err = CommandError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

serde_as_text!(Command);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_cover() {
        let c = |s: &str| Command::parse(s).unwrap();
        assert!(c("/").covers(&c("/mesh/join")));
        assert!(c("/mesh").covers(&c("/mesh/join")));
        assert!(c("/mesh").covers(&c("/mesh")));
        assert!(!c("/mesh").covers(&c("/meshes")));
        assert!(!c("/mesh/join").covers(&c("/mesh")));
        assert_eq!(c("/a/b").segments().collect::<Vec<_>>(), ["a", "b"]);
        assert!(matches!(
            Command::parse("mesh"),
            Err(CommandError::NoLeadingSlash(_))
        ));
        assert!(matches!(
            Command::parse("/mesh/"),
            Err(CommandError::TrailingSlash(_))
        ));
        assert!(matches!(
            Command::parse("/a//b"),
            Err(CommandError::EmptySegment(_))
        ));
        assert!(matches!(
            Command::parse("/Mesh"),
            Err(CommandError::BadCharacter(_))
        ));
        assert!(matches!(
            Command::parse("/a b"),
            Err(CommandError::BadCharacter(_))
        ));
        assert_eq!(
            Command::parse(&"/a".repeat(200)),
            Err(CommandError::TooLong)
        );
    }
}
