//! What a `redis_url` names: one server (`redis://`, `rediss://`, a Unix socket), a
//! master found through Sentinel (`redis-sentinel://...#MASTER`, Lettuce's form), or a
//! Redis Cluster (`redis-cluster://`). Parsed here once, for `check-config` and for the
//! store, so both refuse the same URLs with the same words.

/// Default port of a Sentinel, when a host of a `redis-sentinel://` URL has none.
const SENTINEL_PORT: u16 = 26379;
/// Default port of a Redis node.
const REDIS_PORT: u16 = 6379;

/// A parsed `redis_url`.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// One server, the URL as the redis crate reads it.
    Single { url: String, tls: bool },
    /// The master named `master`, found through `sentinels`.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        password: Option<String>,
        db: i64,
    },
    /// A Redis Cluster reached through any of `nodes`.
    Cluster {
        nodes: Vec<(String, u16)>,
        password: Option<String>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        match self {
            Target::Single { tls, .. } => write!(f, "Single {{ tls: {tls} }}"),
            Target::Sentinel {
                sentinels, master, ..
            } => write!(f, "Sentinel {{ {sentinels:?}, master: {master:?} }}"),
            Target::Cluster { nodes, .. } => write!(f, "Cluster {{ {nodes:?} }}"),
        }
    }
}

impl Target {
    /// The mode's name, for logs and the README's words.
    pub fn mode(&self) -> &'static str {
        match self {
            Target::Single { tls: false, .. } => "single",
            Target::Single { tls: true, .. } => "tls",
            Target::Sentinel { .. } => "sentinel",
            Target::Cluster { .. } => "cluster",
        }
    }
}

/// Parses `url`. The error never repeats the URL: it may carry a password.
///
/// # Errors
/// A message naming what is wrong with the URL.
pub fn parse(url: &str) -> Result<Target, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must be a URL such as redis://127.0.0.1:6379/0".into());
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis-sentinel" => sentinel(rest),
        "redis-cluster" => cluster(rest),
        "rediss-sentinel" | "rediss-cluster" => Err(format!(
            "{scheme}:// is not supported: Sentinel and Cluster are spoken over plain TCP by this version (use rediss:// for one server over TLS)"
        )),
        scheme @ ("redis" | "rediss" | "redis+unix" | "unix") => {
            redis::Client::open(url).map_err(|e| format!("not a usable Redis URL: {e}"))?;
            Ok(Target::Single {
                url: url.to_owned(),
                tls: scheme == "rediss",
            })
        }
        other => Err(format!("scheme {other:?} is not a Redis scheme")),
    }
}

/// `[:PASSWORD@]HOST1:26379,HOST2:26379[/DB]#MASTER`
fn sentinel(rest: &str) -> Result<Target, String> {
    let (rest, master) = rest
        .rsplit_once('#')
        .ok_or("redis-sentinel:// needs the master's name after '#', as in redis-sentinel://h1:26379,h2:26379#mymaster")?;
    if master.is_empty() {
        return Err("redis-sentinel://: the master's name after '#' is empty".into());
    }
    let (password, rest) = credentials(rest)?;
    let (hosts, db) = match rest.split_once('/') {
        Some((hosts, "")) => (hosts, 0),
        Some((hosts, db)) => (
            hosts,
            db.parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or("redis-sentinel://: the database after '/' must be a number")?,
        ),
        None => (rest, 0),
    };
    Ok(Target::Sentinel {
        sentinels: host_list(hosts, SENTINEL_PORT)?,
        master: master.to_owned(),
        password,
        db,
    })
}

/// `[:PASSWORD@]HOST1:7000,HOST2:7001`
fn cluster(rest: &str) -> Result<Target, String> {
    let (password, rest) = credentials(rest)?;
    let hosts = match rest.split_once('/') {
        Some((hosts, "" | "0")) => hosts,
        Some(_) => {
            return Err("redis-cluster://: a Redis Cluster has database 0 only".into());
        }
        None => rest,
    };
    if hosts.contains('#') || hosts.contains('?') {
        return Err("redis-cluster:// takes no '#' or '?' part".into());
    }
    Ok(Target::Cluster {
        nodes: host_list(hosts, REDIS_PORT)?,
        password,
    })
}

/// Splits `[[USER]:PASSWORD@]REST`; only the password is kept (Lettuce's form has no
/// user name).
fn credentials(rest: &str) -> Result<(Option<String>, &str), String> {
    let Some((userinfo, rest)) = rest.rsplit_once('@') else {
        return Ok((None, rest));
    };
    let password = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
    let password = percent_decode(password).ok_or("the password is not valid percent-encoding")?;
    Ok(((!password.is_empty()).then_some(password), rest))
}

/// `HOST[:PORT],...`, with `[v6]:PORT` for IPv6 addresses.
fn host_list(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let list: Vec<(String, u16)> = hosts
        .split(',')
        .map(|host| host_port(host.trim(), default_port))
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err("names no host".into());
    }
    Ok(list)
}

fn host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("{text:?} is not HOST:PORT");
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = match port {
        Some(port) => port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        None => default_port,
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_take_lettuces_form() {
        let target = parse("redis-sentinel://:p%40ss@h1:26380,h2,[::1]:26381/2#mymaster").unwrap();
        assert_eq!(
            target,
            Target::Sentinel {
                sentinels: vec![
                    ("h1".into(), 26380),
                    ("h2".into(), 26379),
                    ("::1".into(), 26381)
                ],
                master: "mymaster".into(),
                password: Some("p@ss".into()),
                db: 2,
            }
        );
        assert!(!format!("{target:?}").contains("p@ss"));
        for (url, words) in [
            ("redis-sentinel://h1:26379", "after '#'"),
            ("redis-sentinel://h1:26379#", "empty"),
            ("redis-sentinel://h1:x#m", "HOST:PORT"),
            ("redis-sentinel://h1/x#m", "database"),
            ("redis-sentinel://#m", "HOST:PORT"),
        ] {
            let e = parse(url).unwrap_err();
            assert!(e.contains(words), "{url}: {e}");
        }
    }

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert_eq!(
            parse("redis-cluster://:pw@10.0.0.1:7000,10.0.0.2:7001").unwrap(),
            Target::Cluster {
                nodes: vec![("10.0.0.1".into(), 7000), ("10.0.0.2".into(), 7001)],
                password: Some("pw".into()),
            }
        );
        assert_eq!(parse("redis-cluster://h").unwrap().mode(), "cluster");
        assert!(
            parse("redis-cluster://h:7000/3")
                .unwrap_err()
                .contains("database 0")
        );
        assert!(
            parse("rediss-cluster://h:7000")
                .unwrap_err()
                .contains("not supported")
        );
    }

    #[test]
    fn single_server_urls_go_to_the_redis_crate() {
        assert_eq!(parse("rediss://h:6380").unwrap().mode(), "tls");
        assert_eq!(parse("redis://h").unwrap().mode(), "single");
        assert!(parse("http://h").unwrap_err().contains("\"http\""));
        let e = parse("redis://:s3cret@[::1").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
