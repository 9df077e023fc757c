//! Server-side request forgery guards: the `allowedHosts` list (C11, C12, C66) and, with
//! `denyPrivateNetworks`, the refusal of non-public addresses.

use crate::host_name;
use std::net::IpAddr;
use wasmtime_wasi_http::Error;

/// True when `host` (a URL host, IPv6 in brackets) may be called under `allowed_hosts` (C12:
/// case-insensitive, one trailing dot ignored on both sides ([`host_name::same_host`], C67
/// amended), ports play no part; `*` allows all, an empty list denies all).
pub(super) fn host_allowed(allowed_hosts: &[String], host: &str) -> bool {
    allowed_hosts
        .iter()
        .any(|entry| entry == "*" || host_name::same_host(entry, host))
}

/// Every address in `addrs` is public, or the error that names the first that is not.
pub(super) fn refuse_non_public_addresses(
    host: &str,
    addrs: impl IntoIterator<Item = IpAddr>,
) -> Result<(), Error> {
    match addrs
        .into_iter()
        .find_map(|ip| non_public_class(ip).map(|class| (ip, class)))
    {
        Some((ip, class)) => {
            tracing::warn!(%host, %ip, class, "refused: denyPrivateNetworks");
            Err(non_public_error(host, ip, class))
        }
        None => Ok(()),
    }
}

/// `denyPrivateNetworks` through a proxy: the proxy resolves names, so only what the URL
/// itself says can be judged here: an IP address, or a `localhost` name (RFC 6761). `host` is
/// bare (IPv6 without brackets) and judged as [`host_name::comparable`] gives it, so the
/// absolute `localhost.` is `localhost` (C67 amended). A name with an empty label (`a..b`,
/// `localhost..`, `.`) cannot be judged and is refused: the proxy's resolver might read it as
/// a name this check would refuse.
pub(super) fn refuse_non_public_name(host: &str) -> Result<(), Error> {
    let name = host_name::comparable(host).to_ascii_lowercase();
    if let Ok(ip) = name.parse::<IpAddr>() {
        if let Some(class) = non_public_class(ip) {
            return Err(non_public_error(&name, ip, class));
        }
    } else if name.split('.').any(str::is_empty) {
        return Err(Error::InternalError(Some(format!(
            "ERR_DENIED_PRIVATE_NETWORK - {host} is not a valid host name; denyPrivateNetworks is set"
        ))));
    } else if name == "localhost" || name.ends_with(".localhost") {
        return Err(Error::InternalError(Some(format!(
            "ERR_DENIED_PRIVATE_NETWORK - {host} is a loopback name; denyPrivateNetworks is set"
        ))));
    }
    Ok(())
}

fn non_public_error(host: &str, ip: IpAddr, class: &str) -> Error {
    let text = if host.parse::<IpAddr>().is_ok() {
        format!("{ip} is a non-public address ({class}); denyPrivateNetworks is set")
    } else {
        format!(
            "{host} resolves to a non-public address ({ip}: {class}); denyPrivateNetworks is set"
        )
    };
    Error::InternalError(Some(format!("ERR_DENIED_PRIVATE_NETWORK - {text}")))
}

/// The kind of non-public address `ip` is, or `None` for a public one. What
/// `denyPrivateNetworks` refuses: loopback, private (RFC 1918), link-local, unique-local,
/// site-local, unspecified, shared (CGNAT, RFC 6598), multicast, broadcast and reserved
/// addresses; IPv4 addresses inside IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 IPv6 addresses
/// are judged as IPv4.
fn non_public_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if a == 0 {
                Some("unspecified")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (CGNAT)")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if a >= 240 {
                Some("reserved")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                non_public_class(IpAddr::V4(v4))
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                non_public_class(IpAddr::V4([a, b, c, d].into()))
            } else if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                non_public_class(IpAddr::V4([a, b, c, d].into()))
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (deprecated).
                Some("reserved")
            } else if s[0] & 0xfe00 == 0xfc00 {
                Some("unique-local")
            } else if s[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if s[0] & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str) -> Option<&'static str> {
        non_public_class(ip.parse().unwrap())
    }

    /// Classification only: nothing here connects anywhere.
    #[test]
    fn non_public_addresses_are_classified() {
        for (ip, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.254", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.255", "shared (CGNAT)"),
            ("224.0.0.251", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("::127.0.0.1", "reserved"),
        ] {
            assert_eq!(class(ip), Some(expected), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn denied_messages_name_host_address_and_setting() {
        let Error::InternalError(Some(text)) =
            non_public_error("internal.example", "10.0.0.7".parse().unwrap(), "private")
        else {
            panic!("an internal error with text")
        };
        assert_eq!(
            text,
            "ERR_DENIED_PRIVATE_NETWORK - internal.example resolves to a non-public address (10.0.0.7: private); denyPrivateNetworks is set"
        );
        let Error::InternalError(Some(text)) =
            non_public_error("::1", "::1".parse().unwrap(), "loopback")
        else {
            panic!("an internal error with text")
        };
        assert_eq!(
            text,
            "ERR_DENIED_PRIVATE_NETWORK - ::1 is a non-public address (loopback); denyPrivateNetworks is set"
        );
        assert!(refuse_non_public_name("api.openai.com").is_ok());
        assert!(refuse_non_public_name("8.8.8.8").is_ok());
        assert!(refuse_non_public_name("169.254.169.254").is_err());
        assert!(refuse_non_public_name("app.localhost").is_err());
    }

    /// C67 (amended): names are judged without one trailing dot; names with an empty label
    /// cannot be judged and are refused.
    #[test]
    fn c67_deny_private_networks_names_ignore_one_trailing_dot() {
        let text = |host: &str| match refuse_non_public_name(host) {
            Err(Error::InternalError(Some(text))) => text,
            other => panic!("{host}: expected a refusal, got {other:?}"),
        };
        for host in ["localhost.", "LOCALHOST.", "x.localhost.", "a.b.localhost."] {
            assert_eq!(
                text(host),
                format!(
                    "ERR_DENIED_PRIVATE_NETWORK - {host} is a loopback name; denyPrivateNetworks is set"
                )
            );
        }
        assert_eq!(
            text("127.0.0.1."),
            "ERR_DENIED_PRIVATE_NETWORK - 127.0.0.1 is a non-public address (loopback); denyPrivateNetworks is set"
        );
        for host in ["localhost..", ".localhost", "a..localhost", ".", "..", ""] {
            assert_eq!(
                text(host),
                format!(
                    "ERR_DENIED_PRIVATE_NETWORK - {host} is not a valid host name; denyPrivateNetworks is set"
                )
            );
        }
        assert!(refuse_non_public_name("api.openai.com.").is_ok());
        assert!(refuse_non_public_name("localhost.example").is_ok());
        assert!(refuse_non_public_name("8.8.8.8.").is_ok());
    }

    #[test]
    fn c12_c67_allowed_hosts_ignore_one_trailing_dot() {
        let list = |entries: &[&str]| entries.iter().map(|e| (*e).to_owned()).collect::<Vec<_>>();
        assert!(host_allowed(&list(&["localhost"]), "localhost."));
        assert!(host_allowed(&list(&["localhost."]), "localhost"));
        assert!(host_allowed(
            &list(&["API.example.com"]),
            "api.example.com."
        ));
        assert!(!host_allowed(&list(&["localhost"]), "localhost.."));
        assert!(!host_allowed(&list(&["."]), "."));
        assert!(!host_allowed(&list(&[""]), ""));
        assert!(host_allowed(&list(&["*"]), "anything."));
    }
}
