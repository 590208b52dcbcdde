//! The operating-system limits a run of many connections meets: open files for this process,
//! the kernel's ceiling on them, and the ephemeral ports per source address.

use std::net::Ipv4Addr;

use anyhow::{Context, bail};

/// File descriptors the tool keeps for itself beyond one per connection (epoll, stdio, the
/// publisher, /proc reads).
const SPARE_FDS: u64 = 64;

/// Raises the soft limit on open files to what `connections` need, up to the hard limit; fails
/// with the commands that would help when the hard limit is too low.
pub fn raise_open_files(connections: usize) -> anyhow::Result<u64> {
    let needed = connections as u64 + SPARE_FDS;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit struct for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    if lim.rlim_max < needed {
        let nr_open = read_sysctl("fs/nr_open").unwrap_or_default();
        bail!(
            "{connections} connections need {needed} open files, but this process may open at \
             most {} (hard limit; fs.nr_open = {nr_open}). As root: `ulimit -Hn {needed}` in the \
             shell that starts both this tool and the broker (or LimitNOFILE= for a service), and \
             `sysctl fs.nr_open={}` if that is lower",
            lim.rlim_max,
            needed.max(1 << 20),
        );
    }
    lim.rlim_cur = needed;
    // SAFETY: `lim` is a valid rlimit struct; the new soft limit does not exceed the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(needed)
}

/// A value under /proc/sys, e.g. `fs/nr_open`, trimmed.
pub fn read_sysctl(name: &str) -> anyhow::Result<String> {
    let path = format!("/proc/sys/{name}");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// How many ephemeral ports one source address offers (`net.ipv4.ip_local_port_range`).
pub fn ephemeral_ports() -> anyhow::Result<u32> {
    let range = read_sysctl("net/ipv4/ip_local_port_range")?;
    let mut it = range.split(' ').map(str::parse::<u32>);
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if hi >= lo => Ok(hi - lo + 1),
        _ => bail!("cannot read net.ipv4.ip_local_port_range: {range:?}"),
    }
}

/// The source addresses connections are spread over: `per_source` connections each, taken
/// from 127.1.0.1 upwards (never leaving 127.0.0.0/8).
#[derive(Debug, Clone, Copy)]
pub struct SourceAddresses {
    per_source: usize,
}

/// The first source address: 127.1.0.1.
const FIRST_SOURCE: u32 = u32::from_be_bytes([127, 1, 0, 1]);
/// The last address of 127.0.0.0/8 usable as a source.
const LAST_SOURCE: u32 = u32::from_be_bytes([127, 255, 255, 254]);

impl SourceAddresses {
    /// Spreads connections `per_source` to an address; fails if 127.0.0.0/8 cannot hold them.
    pub fn new(per_source: usize, connections: usize) -> anyhow::Result<SourceAddresses> {
        if per_source == 0 {
            bail!("--per-source must be at least 1");
        }
        let needed = connections.div_ceil(per_source) as u64;
        if needed > u64::from(LAST_SOURCE - FIRST_SOURCE + 1) {
            bail!("{connections} connections at {per_source} per source do not fit in 127.0.0.0/8");
        }
        Ok(SourceAddresses { per_source })
    }

    /// The source address of connection `i`.
    pub fn of(&self, i: usize) -> Ipv4Addr {
        // `new` checked that every index maps inside 127.0.0.0/8.
        Ipv4Addr::from(FIRST_SOURCE + (i / self.per_source) as u32)
    }

    /// How many addresses `connections` use.
    pub fn count(&self, connections: usize) -> usize {
        connections.div_ceil(self.per_source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_on_loopback_and_spread() {
        let s = SourceAddresses::new(1000, 200_000).unwrap();
        assert_eq!(s.of(0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(s.of(999), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(s.of(1000), Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(s.of(199_999), Ipv4Addr::new(127, 1, 0, 200));
        assert_eq!(s.count(200_000), 200);
        assert!(s.of(199_999).is_loopback());
    }

    #[test]
    fn too_many_for_the_block_is_refused() {
        assert!(SourceAddresses::new(0, 10).is_err());
        assert!(SourceAddresses::new(1, 1 << 25).is_err());
        let last = SourceAddresses::new(1, (LAST_SOURCE - FIRST_SOURCE + 1) as usize).unwrap();
        assert_eq!(
            last.of((LAST_SOURCE - FIRST_SOURCE) as usize),
            Ipv4Addr::new(127, 255, 255, 254)
        );
    }

    #[test]
    fn port_range_is_read() {
        assert!(ephemeral_ports().unwrap() > 0);
    }
}
