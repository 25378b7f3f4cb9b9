//! `tuning/compose.yaml` (docs/deploy.md): parsed with a real YAML parser, its merge keys applied,
//! and checked against what it must agree with — the README's configuration table (every variable
//! it sets exists), the Dockerfile it builds and `tuning/haproxy.cfg` (the servers' addresses, the
//! health-check port, PROXY protocol v2). No container engine is needed.

use serde_norway::Value;

fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("compose.yaml: missing `{key}` in {v:?}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    get(v, key).as_str().unwrap_or_else(|| panic!("compose.yaml: `{key}` is not a string"))
}

#[test]
fn compose_file_parses_and_matches_readme_dockerfile_and_haproxy() {
    let source = repo_file("tuning/compose.yaml");
    let mut doc: Value = serde_norway::from_str(&source).expect("tuning/compose.yaml is not valid YAML");
    doc.apply_merge().expect("tuning/compose.yaml: a merge key (<<) does not merge");

    let services = get(&doc, "services").as_mapping().expect("services is a mapping");
    let mut names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["gw1", "gw2", "gw3", "haproxy", "postgres", "redis"]);

    let services = get(&doc, "services");
    for official in ["redis", "postgres", "haproxy"] {
        let image = text(get(services, official), "image");
        assert!(image.starts_with(&format!("{official}:")), "{official} runs the official image, not {image}");
    }

    // The three instances: built from the project's Dockerfile, with one shared environment.
    let readme = repo_file("README.md");
    let haproxy = repo_file("tuning/haproxy.cfg");
    let first_env = get(get(services, "gw1"), "environment");
    for gw in ["gw1", "gw2", "gw3"] {
        let svc = get(services, gw);
        let build = get(svc, "build");
        let context = text(build, "context");
        let dockerfile = text(build, "dockerfile");
        assert!(repo_file(&format!("tuning/{context}/{dockerfile}")).contains("ENTRYPOINT"), "{gw}: no Dockerfile");
        let env = get(svc, "environment");
        assert_eq!(env, first_env, "{gw} must share gw1's environment");

        // HAProxy's server line for this instance names the address compose gives it.
        let address = text(get(get(svc, "networks"), "syncgate"), "ipv4_address");
        let server = haproxy
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&format!("server {gw} ")))
            .unwrap_or_else(|| panic!("tuning/haproxy.cfg has no `server {gw}` line"));
        assert!(server.contains(&format!(" {address}:8080 ")), "haproxy.cfg `{server}` is not {address}:8080");
        assert!(server.contains("send-proxy-v2"), "`{server}` sends no PROXY v2 header");
    }

    let env = first_env.as_mapping().expect("environment is a mapping");
    for name in env.keys().filter_map(Value::as_str) {
        assert!(readme.contains(&format!("| `{name}` |")), "{name} is not a row of README.md's configuration table");
    }
    let var = |name: &str| text(first_env, name);
    assert_eq!(var("SYNCGATE_PROXY_PROTOCOL"), "v2");
    assert_eq!(var("SYNCGATE_LISTEN"), "0.0.0.0:8080");
    let admin_port = var("SYNCGATE_ADMIN_LISTEN").rsplit(':').next().unwrap_or_default();
    assert!(haproxy.contains(&format!("check port {admin_port} ")), "haproxy.cfg does not check port {admin_port}");
    assert!(var("REDIS_URL").starts_with("redis://redis:"));
    assert!(var("DATABASE_URL").starts_with("postgres://") && var("DATABASE_URL").contains("@postgres:5432/"));
    // The shared secrets come from tuning/.env and stop `docker compose up` when missing.
    for secret in ["SYNCGATE_JWT_SECRET", "SYNCGATE_SERVER_KEY", "SYNCGATE_API_KEY"] {
        assert_eq!(var(secret), format!("${{{secret}:?set {secret} in tuning/.env}}"));
    }

    // HAProxy refuses to start when it cannot get about two descriptors per `maxconn`.
    let maxconn: u64 = haproxy
        .lines()
        .find_map(|l| l.trim().strip_prefix("maxconn "))
        .and_then(|n| n.trim().parse().ok())
        .expect("tuning/haproxy.cfg sets a global maxconn");
    let nofile = get(get(get(services, "haproxy"), "ulimits"), "nofile");
    for limit in ["soft", "hard"] {
        let n = get(nofile, limit).as_u64().unwrap_or_default();
        assert!(n > 2 * maxconn, "haproxy nofile {limit} {n} is too low for maxconn {maxconn}");
    }

    // HAProxy runs tuning/haproxy.cfg itself, and only the balancer publishes a port.
    let volumes = get(get(services, "haproxy"), "volumes").as_sequence().expect("haproxy volumes");
    assert!(volumes.iter().any(|v| v.as_str() == Some("./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro")));
    for name in ["gw1", "gw2", "gw3", "redis", "postgres"] {
        assert!(get(services, name).get("ports").is_none(), "{name} must not publish a port");
    }
}
