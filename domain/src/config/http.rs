//! The HTTP API's own settings: where it listens, which browser origins may call it, which
//! proxies in front of it are believed about the client's address, and the per-key rate limits.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSettings {
    pub addr: String,
    /// Origins allowed to call the API from a browser (CORS); empty = none.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted by routes that do not set their own.
    pub body_limit_bytes: usize,
    /// The proxies in front of voxline whose `X-Forwarded-For` entries are believed; the
    /// client (for per-IP rate limits) is the nearest address no trusted proxy added.
    #[serde(default)]
    pub trusted_proxies: TrustedProxies,
    /// The key `trusted_proxies` replaced; only read to refuse it with directions.
    #[serde(default, rename = "trust_forwarded_for", skip_serializing)]
    pub(super) retired_trust_forwarded_for: Option<bool>,
}

/// `http.trusted_proxies`: a count of proxy hops (`1`: one load balancer in front), or the
/// networks proxies connect from (`["10.0.0.0/8", "::1/128"]`). `0` or `[]`: none, the client
/// is the connection's peer and `X-Forwarded-For` is ignored, since any client can write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrustedProxies {
    Hops(u32),
    Networks(Vec<ipnet::IpNet>),
}

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies::Hops(0)
    }
}

impl TrustedProxies {
    /// The client's address, from the connection's `peer` and the `X-Forwarded-For` header
    /// (entries in the order proxies appended them). Read from the right, the addresses
    /// trusted proxies added are skipped; the first one left was written by the nearest
    /// trusted proxy about its own peer, so no client can choose it. When every address is a
    /// trusted proxy's, the leftmost is taken.
    pub fn client(&self, peer: std::net::IpAddr, forwarded_for: Option<&str>) -> String {
        let forwarded: Vec<&str> = forwarded_for
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let peer_text = peer.to_string();
        // The whole chain, nearest last: the connection's peer is the nearest hop.
        let chain: Vec<&str> = forwarded.into_iter().chain([peer_text.as_str()]).collect();
        let client = match self {
            TrustedProxies::Hops(hops) => {
                let trusted = (*hops as usize).min(chain.len() - 1);
                chain[chain.len() - 1 - trusted]
            }
            TrustedProxies::Networks(networks) => chain
                .iter()
                .rev()
                .find(|entry| {
                    !entry
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| networks.iter().any(|n| n.contains(&ip)))
                })
                .copied()
                .unwrap_or(chain[0]),
        };
        client.to_string()
    }
}

/// Requests per minute per key (a burst of the same size is allowed); 0 = no limit. Shared
/// across API processes through Redis when `redis.url` is set, per process otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateLimitSettings {
    /// `POST /api/sessions` per profile.
    pub intake_per_profile: u32,
    /// `POST /api/sessions` per client IP.
    pub intake_per_ip: u32,
    /// Provider webhooks per client IP.
    pub webhooks_per_ip: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Settings;

    fn client(proxies: &TrustedProxies, peer: &str, forwarded: Option<&str>) -> String {
        proxies.client(peer.parse().expect("an IP"), forwarded)
    }

    #[test]
    fn with_no_trusted_proxy_the_client_is_the_peer_whatever_the_header_says() {
        let none = TrustedProxies::default();
        assert_eq!(
            client(&none, "198.51.100.9", Some("1.2.3.4")),
            "198.51.100.9"
        );
    }

    #[test]
    fn behind_one_proxy_the_client_is_the_address_that_proxy_appended() {
        let one = TrustedProxies::Hops(1);
        // The client wrote "1.2.3.4" itself; the load balancer (the peer) appended the real one.
        assert_eq!(
            client(&one, "10.0.0.5", Some("1.2.3.4, 203.0.113.7")),
            "203.0.113.7"
        );
        assert_eq!(client(&one, "10.0.0.5", Some("203.0.113.7")), "203.0.113.7");
        // No header: the proxy added nothing, so the peer is all there is.
        assert_eq!(client(&one, "10.0.0.5", None), "10.0.0.5");
        let two = TrustedProxies::Hops(2);
        assert_eq!(
            client(&two, "10.0.0.5", Some("1.2.3.4, 203.0.113.7, 10.0.0.4")),
            "203.0.113.7"
        );
    }

    #[test]
    fn with_proxy_networks_the_client_is_the_rightmost_address_outside_them() {
        let nets = Settings::from_toml_overrides(
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1/128\"]",
        )
        .expect("valid")
        .http
        .trusted_proxies;
        assert_eq!(
            client(&nets, "10.0.0.5", Some("1.2.3.4, 203.0.113.7, 10.1.2.3")),
            "203.0.113.7"
        );
        // A peer outside the networks is the client: its header is not believed.
        assert_eq!(
            client(&nets, "198.51.100.9", Some("1.2.3.4")),
            "198.51.100.9"
        );
        // Only proxies all the way: the leftmost address.
        assert_eq!(client(&nets, "::1", Some("10.9.9.9")), "10.9.9.9");
    }

    #[test]
    fn trusted_proxies_take_a_hop_count_or_networks_and_the_old_key_is_refused() {
        let hops = Settings::from_toml_overrides("[http]\ntrusted_proxies = 1").expect("valid");
        assert_eq!(hops.http.trusted_proxies, TrustedProxies::Hops(1));
        let err = Settings::from_toml_overrides("[http]\ntrusted_proxies = [\"10.0.0.0/33\"]")
            .unwrap_err();
        assert!(err.to_string().contains("trusted_proxies"), "{err}");
        let err = Settings::from_toml_overrides("[http]\ntrust_forwarded_for = true").unwrap_err();
        assert!(
            err.to_string().starts_with("http.trust_forwarded_for:"),
            "{err}"
        );
    }
}
