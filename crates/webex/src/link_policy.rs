//! Where a capture's media link may point.
//!
//! The `filePath` of a capture comes from the API and is fetched without further checks by
//! design (it is pre-signed). So a wrong or hostile answer could make wxvault fetch — and
//! archive — anything its network can reach. [`LinkPolicy::Public`] requires `https` and
//! refuses every address that is not globally routable. The check runs inside the DNS resolver
//! reqwest connects with ([`PolicyResolver`]), so the addresses checked are the addresses used
//! and a second, different DNS answer (rebinding) cannot slip past. IP-literal hosts, which
//! reqwest never resolves, are checked before sending. [`LinkPolicy::Local`] is for an API base
//! on loopback (the simulator), whose links point back at loopback over plain `http`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::Url;

/// What media links are allowed to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkPolicy {
    /// `https` only, and only to globally routable addresses.
    Public {
        /// Fixed DNS answers used instead of the system resolver (still checked), for split
        /// DNS setups and tests.
        pinned: HashMap<String, Vec<IpAddr>>,
    },
    /// Anything `http(s)`: the API base itself is on loopback (the simulator, a local proxy).
    Local,
}

impl LinkPolicy {
    /// The policy for media links handed out by the API at `api_base`: [`LinkPolicy::Local`]
    /// when it is loopback, [`LinkPolicy::Public`] otherwise.
    pub fn for_api_base(api_base: &Url) -> Self {
        if crate::http::is_loopback_url(api_base) {
            LinkPolicy::Local
        } else {
            LinkPolicy::public()
        }
    }

    /// [`LinkPolicy::Public`] with the system resolver.
    pub fn public() -> Self {
        LinkPolicy::Public {
            pinned: HashMap::new(),
        }
    }

    /// The same policy, answering DNS for `host` with `addrs` (checked like any answer).
    #[must_use]
    pub fn with_pinned_host(mut self, host: &str, addrs: Vec<IpAddr>) -> Self {
        if let LinkPolicy::Public { pinned } = &mut self {
            pinned.insert(host.to_ascii_lowercase(), addrs);
        }
        self
    }

    /// Checks what can be checked before connecting: the scheme and an IP-literal host.
    ///
    /// # Errors
    ///
    /// [`LinkRefused`] naming the host.
    pub fn check_url(&self, url: &Url) -> Result<(), LinkRefused> {
        let host = url.host_str().unwrap_or("(no host)").to_owned();
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LinkRefused {
                host,
                reason: "the link is not an http(s) URL".to_owned(),
            });
        }
        let LinkPolicy::Public { .. } = self else {
            return Ok(());
        };
        if url.scheme() != "https" {
            return Err(LinkRefused {
                host,
                reason: "the link uses plain http; media links must use https".to_owned(),
            });
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        match ip {
            Some(ip) => check_addrs(&host, &[ip]),
            None => Ok(()),
        }
    }

    /// The DNS resolver that enforces this policy on every address reqwest connects to. The
    /// hosts of the proxies reqwest takes from the environment (`HTTPS_PROXY`, `ALL_PROXY`, …)
    /// are let through: a corporate proxy usually has a private address, and behind it the
    /// proxy, not this process, resolves and reaches the media host.
    pub fn resolver(&self) -> PolicyResolver {
        self.resolver_with_proxies(env_proxy_hosts())
    }

    /// [`LinkPolicy::resolver`] with the proxy hosts given instead of read from the environment.
    pub fn resolver_with_proxies(&self, proxies: Vec<String>) -> PolicyResolver {
        PolicyResolver {
            policy: Arc::new(self.clone()),
            proxies: Arc::new(
                proxies
                    .into_iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
            ),
        }
    }
}

/// Host names of the proxies named in the environment variables reqwest reads.
fn env_proxy_hosts() -> Vec<String> {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok())
    .filter_map(|v| {
        let v = v.trim();
        let with_scheme = if v.contains("://") {
            v.to_string()
        } else {
            format!("http://{v}")
        };
        Url::parse(&with_scheme).ok()?.host_str().map(str::to_owned)
    })
    .collect()
}

/// A link the policy refused: which host and why (never the link's query string).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host}: {reason}")]
pub struct LinkRefused {
    /// The link's host.
    pub host: String,
    /// What was wrong.
    pub reason: String,
}

fn check_addrs(host: &str, addrs: &[IpAddr]) -> Result<(), LinkRefused> {
    if addrs.is_empty() {
        return Err(LinkRefused {
            host: host.to_owned(),
            reason: "the host resolves to no address".to_owned(),
        });
    }
    match addrs.iter().find(|ip| !is_public(**ip)) {
        Some(ip) => Err(LinkRefused {
            host: host.to_owned(),
            reason: format!(
                "the host resolves to {ip}, a private, loopback, link-local or otherwise \
                 non-public address; media links must point at public hosts"
            ),
        }),
        None => Ok(()),
    }
}

/// Whether `ip` is globally routable (not private, loopback, link-local, shared, multicast,
/// documentation, unspecified or reserved).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg0 = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg0 & 0xfe00) == 0xfc00 // unique local
        || (seg0 & 0xffc0) == 0xfe80 // link-local
        || (seg0 & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg0 == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        || (seg0 == 0x0064 && ip.segments()[1] == 0xff9b)) // NAT64, may map to private v4
}

/// reqwest DNS resolver applying a [`LinkPolicy`] to every answer.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<LinkPolicy>,
    proxies: Arc<std::collections::HashSet<String>>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_ascii_lowercase();
        let is_proxy = self.proxies.contains(&host);
        Box::pin(async move {
            let pinned = match policy.as_ref() {
                LinkPolicy::Public { pinned } => pinned.get(&host).cloned(),
                LinkPolicy::Local => None,
            };
            let addrs: Vec<IpAddr> = match pinned {
                Some(addrs) => addrs,
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await?
                    .map(|sa| sa.ip())
                    .collect(),
            };
            if matches!(policy.as_ref(), LinkPolicy::Public { .. }) && !is_proxy {
                check_addrs(&host, &addrs)?;
            }
            let out: reqwest::dns::Addrs =
                Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(out)
        })
    }
}

/// The [`LinkRefused`] inside a reqwest error, if the resolver refused the link.
pub(crate) fn refusal_in(e: &reqwest::Error) -> Option<LinkRefused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<LinkRefused>() {
            return Some(r.clone());
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_and_non_public_addresses() {
        for a in ["52.216.0.1", "8.8.8.8", "2600:1f18::1", "::ffff:52.216.0.1"] {
            assert!(is_public(ip(a)), "{a}");
        }
        for a in [
            "127.0.0.1",
            "127.0.0.2",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip(a)), "{a}");
        }
    }

    #[test]
    fn policy_for_api_base() {
        for local in ["http://127.0.0.1:9/", "http://localhost/", "http://[::1]/"] {
            assert_eq!(
                LinkPolicy::for_api_base(&Url::parse(local).unwrap()),
                LinkPolicy::Local
            );
        }
        assert_eq!(
            LinkPolicy::for_api_base(&Url::parse("https://api.wxcc-us1.cisco.com/").unwrap()),
            LinkPolicy::public()
        );
    }

    #[test]
    fn url_checks_scheme_and_ip_literals() {
        let p = LinkPolicy::public();
        let check = |u: &str| p.check_url(&Url::parse(u).unwrap());
        assert!(check("https://bucket.s3.amazonaws.com/a.wav?sig=1").is_ok());
        assert!(check("https://52.216.0.1/a.wav").is_ok());
        let http = check("http://bucket.s3.amazonaws.com/a.wav?sig=SECRET").unwrap_err();
        assert_eq!(http.host, "bucket.s3.amazonaws.com");
        assert!(http.reason.contains("https"));
        assert!(!http.to_string().contains("SECRET"));
        for u in [
            "https://127.0.0.1/a.wav",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/x",
            "https://10.0.0.8/x",
        ] {
            assert!(check(u).is_err(), "{u}");
        }
        assert!(check("ftp://h/x").is_err());
        let local = LinkPolicy::Local;
        assert!(
            local
                .check_url(&Url::parse("http://127.0.0.1:9/x").unwrap())
                .is_ok()
        );
        assert!(
            local
                .check_url(&Url::parse("file:///etc/passwd").unwrap())
                .is_err()
        );
    }

    #[tokio::test]
    async fn resolver_checks_every_answer() {
        let p = LinkPolicy::public()
            .with_pinned_host("good.example", vec![ip("52.216.0.1")])
            .with_pinned_host("rebind.example", vec![ip("52.216.0.1"), ip("10.0.0.1")])
            .with_pinned_host("meta.example", vec![ip("169.254.169.254")])
            .with_pinned_host("nothing.example", vec![]);
        let r = p.resolver();
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        let good: Vec<SocketAddr> = r.resolve(name("good.example")).await.unwrap().collect();
        assert_eq!(good, vec![SocketAddr::new(ip("52.216.0.1"), 0)]);
        for host in ["rebind.example", "meta.example", "nothing.example"] {
            let err = match r.resolve(name(host)).await {
                Ok(_) => panic!("{host} resolved"),
                Err(e) => e,
            };
            let refused = err.downcast_ref::<LinkRefused>().expect("a LinkRefused");
            assert_eq!(refused.host, host);
        }
        // The system resolver's answer is checked too: localhost is loopback.
        assert!(r.resolve(name("localhost")).await.is_err());
        // The configured proxy may be private; the media host behind it is the proxy's to reach.
        let via_proxy = LinkPolicy::public()
            .with_pinned_host("proxy.corp", vec![ip("10.1.2.3")])
            .with_pinned_host("rebind.example", vec![ip("10.0.0.1")])
            .resolver_with_proxies(vec!["PROXY.corp".into()]);
        assert!(via_proxy.resolve(name("proxy.corp")).await.is_ok());
        assert!(via_proxy.resolve(name("rebind.example")).await.is_err());
        // Local mode passes loopback answers through.
        let local = LinkPolicy::Local.resolver();
        assert!(local.resolve(name("localhost")).await.is_ok());
    }
}
