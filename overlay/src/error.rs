//! Rendering an error with its chain of causes on one line, for logs and API answers (the binary
//! uses anyhow's `{:#}` for the same).

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, separated by `": "`.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn shows_every_cause_once() {
        let e = Outer(std::io::Error::other("in use"));
        assert_eq!(Chain(&e).to_string(), "cannot bind: in use");
    }
}
