//! The `patroni` URL of a server: `http://HOST:PORT` with an optional path
//! prefix, checked at load so a typo is an error that says what to write.

/// Splits `http://host:port[/prefix]` into the address to connect to and the
/// path prefix (without a trailing `/`).
pub fn patroni_endpoint(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            format!("{url:?}: https is not supported; give the plain http:// address of Patroni's REST API")
        } else {
            format!("{url:?} is not an http:// URL; write it like \"http://10.0.0.1:8008\"")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !port_ok {
        return Err(format!(
            "{url:?} needs a host and a port, like \"http://10.0.0.1:8008\" (Patroni's REST API listens on 8008 by default)"
        ));
    }
    Ok((authority.to_owned(), path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::patroni_endpoint;

    #[test]
    fn accepts_host_port_and_an_optional_prefix() {
        assert_eq!(
            patroni_endpoint("http://127.0.0.1:8008").unwrap(),
            ("127.0.0.1:8008".to_owned(), String::new())
        );
        assert_eq!(
            patroni_endpoint("http://pg1.example:8008/patroni/").unwrap(),
            ("pg1.example:8008".to_owned(), "/patroni".to_owned())
        );
    }

    #[test]
    fn refuses_what_it_cannot_reach_with_a_hint() {
        for (url, hint) in [
            ("https://a:8008", "https is not supported"),
            ("a:8008", "not an http:// URL"),
            ("http://a", "needs a host and a port"),
            ("http://:8008", "needs a host and a port"),
            ("http://a:0", "needs a host and a port"),
        ] {
            let problem = patroni_endpoint(url).unwrap_err();
            assert!(problem.contains(hint), "{url}: {problem}");
        }
    }
}
