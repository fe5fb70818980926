//! Credentials: carried in a type whose Debug/Display never show the value, and scrubbed from any text that may
//! reach a log, report or error message.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// A random 24-hex-digit password from the kernel's generator.
    pub fn generate() -> std::io::Result<Self> {
        Self::generate_bytes(12)
    }

    /// `n` random bytes, hex-encoded (a repository cipher passphrase wants 32).
    pub fn generate_bytes(n: usize) -> std::io::Result<Self> {
        let mut buf = vec![0u8; n];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
        Ok(Secret(buf.iter().map(|b| format!("{b:02x}")).collect()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the secret in `text`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "[redacted]")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.redact("pw=hunter2hunter2;"), "pw=[redacted];");
        assert_eq!(Secret::generate().unwrap().expose().len(), 24);
    }
}
