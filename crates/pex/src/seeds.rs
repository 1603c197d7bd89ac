//! The **initial peers file**: the addresses a node with an empty peer store starts
//! from.
//!
//! One `ID@HOST:PORT` a line (`ID@[IPv6]:PORT` for IPv6); `#` starts a comment, to the
//! end of the line; blank lines are skipped. `HOST` may be a name: it is resolved when
//! dialed, not here. A bad line is an error naming the file, the 1-based line number
//! and what is wrong:
//!
//! ```
//! use std::path::Path;
//! use switchyard_pex::seeds::parse_seeds;
//!
//! let text = "# the seeds\n\
//!             66687aadf862bd776c8fc18b8e9f8e2008971485@seed.example.org:26656\n\
//!             \n\
//!             nonsense\n";
//! let err = parse_seeds(Path::new("peers.txt"), text).unwrap_err();
//! assert!(err.to_string().starts_with("peers.txt:4: "), "{err}");
//! ```

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use switchyard_proto::NodeId;

use crate::addr::NetAddr;

/// One line of the file: a node id at a host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeedAddr {
    /// The node that must answer.
    pub id: NodeId,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl SeedAddr {
    /// The address as the book holds it when `host` is an IP address; `None` for a
    /// host name, which the runtime resolves first.
    #[must_use]
    pub fn net_addr(&self) -> Option<NetAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(NetAddr::new(self.id, SocketAddr::new(ip, self.port)))
    }
}

impl fmt::Display for SeedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.id, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.id, self.host, self.port)
        }
    }
}

/// Why the initial peers file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedsError {
    /// The file could not be read: check the path and its permissions.
    #[error("cannot read the initial peers file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `ID@HOST:PORT`: fix or comment out that line.
    #[error("{}:{line}: {problem}: {text:?} (expected ID@HOST:PORT)", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The line, without its comment.
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Reads and parses the initial peers file at `path`.
///
/// # Errors
///
/// [`SeedsError::Read`] when the file cannot be read, [`SeedsError::BadLine`] for the
/// first bad line.
pub fn read_seeds(path: &Path) -> Result<Vec<SeedAddr>, SeedsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeedsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_seeds(path, &text)
}

/// Parses the text of the initial peers file; `path` only names it in errors.
///
/// # Errors
///
/// [`SeedsError::BadLine`] for the first bad line (a line that is not `ID@HOST:PORT`,
/// or a node id listed twice).
pub fn parse_seeds(path: &Path, text: &str) -> Result<Vec<SeedAddr>, SeedsError> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        let bad = |problem| SeedsError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            text: line.to_owned(),
            problem,
        };
        let seed = parse_line(line).map_err(bad)?;
        if !ids.insert(seed.id) {
            return Err(bad("this node id is already listed on an earlier line"));
        }
        out.push(seed);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<SeedAddr, &'static str> {
    let (id, rest) = line.split_once('@').ok_or("missing the node id and @")?;
    let id = id
        .parse::<NodeId>()
        .map_err(|_| "the node id is not 40 hex digits")?;
    let (host, port) = rest.rsplit_once(':').ok_or("missing :PORT")?;
    let port: u16 = port
        .parse()
        .map_err(|_| "the port is not a number from 1 to 65535")?;
    if port == 0 {
        return Err("port 0 cannot be dialed");
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or("an IPv6 address in [ has no closing ]")?,
        None if host.contains(':') => return Err("an IPv6 address must be written in [brackets]"),
        None => host,
    };
    if host.is_empty() {
        return Err("missing the host");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '@' || c == '/')
    {
        return Err("the host contains a space, @ or /");
    }
    Ok(SeedAddr {
        id,
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "66687aadf862bd776c8fc18b8e9f8e2008971485";
    const ID2: &str = "0000000000000000000000000000000000000001";

    #[test]
    fn parses_comments_blanks_names_and_ipv6() {
        let text =
            format!("# seeds\n\n{ID}@seed.example.org:26656   # the first\n  {ID2}@[2a00::1]:9\n");
        let seeds = parse_seeds(Path::new("p"), &text).unwrap();
        assert_eq!(seeds.len(), 2);
        assert_eq!(seeds[0].host, "seed.example.org");
        assert_eq!(seeds[1].host, "2a00::1");
        assert_eq!(seeds[1].to_string(), format!("{ID2}@[2a00::1]:9"));
        assert_eq!(seeds[0].net_addr(), None);
        assert_eq!(
            seeds[1].net_addr().map(|a| a.to_string()),
            Some(format!("{ID2}@[2a00::1]:9"))
        );
        assert!(parse_seeds(Path::new("p"), "").unwrap().is_empty());
    }

    #[test]
    fn bad_lines_name_file_line_and_problem() {
        let cases = [
            ("1.2.3.4:5".to_string(), "missing the node id"),
            ("abc@1.2.3.4:5".to_string(), "40 hex digits"),
            (format!("{ID}@1.2.3.4"), "missing :PORT"),
            (format!("{ID}@1.2.3.4:http"), "port is not a number"),
            (format!("{ID}@1.2.3.4:0"), "port 0"),
            (format!("{ID}@:5"), "missing the host"),
            (format!("{ID}@2a00::1:5"), "brackets"),
            (format!("{ID}@[2a00::1:5"), "no closing"),
            (format!("{ID}@a b:5"), "space"),
        ];
        for (line, want) in cases {
            let text = format!("# header\n\n{line}\n");
            let err = parse_seeds(Path::new("/home/n/peers.txt"), &text).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("/home/n/peers.txt:3: "), "{msg}");
            assert!(msg.contains(want), "{line:?}: {msg}");
            assert!(matches!(err, SeedsError::BadLine { line: 3, .. }));
        }
        let dup = format!("{ID}@a:1\n{ID}@b:2\n");
        let err = parse_seeds(Path::new("f"), &dup).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f:2: this node id is already listed"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let err = read_seeds(Path::new("/nonexistent/peers.txt")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/peers.txt"), "{err}");
    }
}
