//! Sub-commands other than serving: `syncgate token`.

use crate::auth::Verifier;
use crate::config::Config;

pub const TOKEN_USAGE: &str =
    "usage: syncgate token --user ID [--device ID] [--ttl 1h] [--channel GLOB ...]   (ttl: N, Ns, Nm, Nh, Nd)";

/// Parses `90`, `90s`, `15m`, `1h`, `7d` into seconds.
pub fn parse_ttl(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b's' => (&s[..s.len() - 1], 1),
        b'm' => (&s[..s.len() - 1], 60),
        b'h' => (&s[..s.len() - 1], 3600),
        b'd' => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().filter(|n| *n > 0).map(|n| n * mult)
}

/// `syncgate token …`: a token signed with the configured or persisted HS256 secret.
pub fn token(config: &Config, args: &[String]) -> Result<String, String> {
    let mut user = None;
    let mut device = None;
    let mut ttl = 3600;
    let mut channels = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--user" => user = Some(value()?),
            "--device" => device = Some(value()?),
            "--ttl" => {
                let v = value()?;
                ttl = parse_ttl(&v).ok_or_else(|| format!("bad --ttl {v:?}"))?;
            }
            "--channel" => channels.push(value()?),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    let user = user.ok_or("--user is required")?;
    if !crate::channel::valid_user_id(&user) {
        return Err("user ids are 1-123 characters of [A-Za-z0-9_.@=-]".into());
    }
    if let Some(d) = &device {
        if !crate::identity::valid_device_id(d) {
            return Err("device ids are 1-64 characters of [A-Za-z0-9._:-]".into());
        }
    }
    let verifier = Verifier::new(config).map_err(|e| e.to_string())?;
    verifier.sign(&user, device.as_deref(), 0, ttl, &channels).ok_or_else(|| {
        "tokens can only be minted with an HS256 secret (SYNCGATE_JWT_SECRET or the development secret)".into()
    })
}

/// `syncgate check-config`: the effective configuration (secrets masked) and the OS limits that
/// matter, against what the configuration needs. Contacts no backend. Invalid values never get
/// here (main exits 1 naming the variable); limit problems are warnings (exit 0).
pub fn check_config(config: &Config) -> std::process::ExitCode {
    println!("# effective configuration");
    for (k, v) in config.describe() {
        println!("{k}={v}");
    }
    println!("\n# OS limits");
    match crate::oslimits::nofile() {
        Some((soft, hard)) => {
            println!("open files: soft {soft}, hard {hard} (raised to the hard limit at start)")
        }
        None => println!("open files: unknown"),
    }
    match crate::oslimits::somaxconn() {
        Some(m) => println!("net.core.somaxconn: {m} (listen backlog asked: {})", config.listener.listen_backlog),
        None => println!("net.core.somaxconn: unknown"),
    }
    match crate::oslimits::port_range() {
        Some((lo, hi)) => println!(
            "net.ipv4.ip_local_port_range: {lo}-{hi} ({} ports per source address for clients and load balancers)",
            hi - lo + 1
        ),
        None => println!("net.ipv4.ip_local_port_range: unknown"),
    }
    let warnings = crate::oslimits::warnings(config);
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "\nconfiguration OK{}",
        if warnings.is_empty() { String::new() } else { format!(" ({} warnings)", warnings.len()) }
    );
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("1h"), Some(3600));
        assert_eq!(parse_ttl("90"), Some(90));
        assert_eq!(parse_ttl("15m"), Some(900));
        assert_eq!(parse_ttl("2d"), Some(172_800));
        assert_eq!(parse_ttl("0"), None);
        assert_eq!(parse_ttl("h"), None);
        assert_eq!(parse_ttl(""), None);
    }
}
