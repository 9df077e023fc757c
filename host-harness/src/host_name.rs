//! Host names as the harness compares and checks them (C12, C128, C129; C67 amended): ASCII
//! case ignored and one trailing dot removed, so the absolute name `localhost.` is `localhost`.
//! Every comparison or check of a host name in the harness goes through here: `allowedHosts`,
//! `denyPrivateNetworks` behind a proxy, `proxyBypassHosts`/`proxyOnlyHosts` and
//! `customHostSettings`. Connections still use the name as written (a resolver may treat the
//! absolute `intranet.` and the relative `intranet` differently).

/// `host` without one trailing dot. Only one goes: `localhost..` keeps an empty label and stays
/// another (invalid) name, and a lone `.` becomes the empty name, which [`same_host`] never
/// matches.
pub(crate) fn comparable(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// True when host names `a` and `b` are the same: compared as [`comparable`], ignoring ASCII
/// case. An empty name (or a lone `.`) equals nothing, not even itself.
pub(crate) fn same_host(a: &str, b: &str) -> bool {
    let (a, b) = (comparable(a), comparable(b));
    !a.is_empty() && a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c12_c67_one_trailing_dot_is_ignored() {
        assert_eq!(comparable("localhost."), "localhost");
        assert_eq!(comparable("localhost"), "localhost");
        assert_eq!(comparable("localhost.."), "localhost.");
        assert_eq!(comparable("."), "");
        assert!(same_host("localhost.", "LOCALHOST"));
        assert!(same_host("api.example.com", "api.example.com."));
        assert!(same_host("[::1]", "[::1]"));
        assert!(!same_host("localhost..", "localhost"));
        assert!(!same_host(".", "."));
        assert!(!same_host("", ""));
        assert!(!same_host("a.example", "b.example"));
    }
}
