//! The server's Ed25519 identity (issue 14, first part): `SYNCGATE_SERVER_KEY` or a key generated
//! once in the data directory, published at `GET /api/server-key`.

use crate::common::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn a_configured_key_is_published_with_its_id() {
    // Written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1); its public key and the first
    // 16 hex characters of SHA-256 of it, computed with openssl and sha256sum.
    let pem = fixture("server_ed25519.pem");
    let want_pk = "ICgFkNzs4IKDVAn8Iwba3FrJ_ndgBunBbuxy0DTGyPY";
    let want_id = "276270eb5001f1f2";
    for value in [pem.clone(), pem.replace('\n', "\\n")] {
        let s = Server::start(&[("SYNCGATE_SERVER_KEY", value.as_str())]).await;
        let (status, body) = http_json(s.addr, "GET", "/api/server-key", None, "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, serde_json::json!({"alg":"Ed25519","key_id":want_id,"public_key":want_pk}));
        s.stop().await;
    }
    // Standard base64 of the DER works too.
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let s = Server::start(&[("SYNCGATE_SERVER_KEY", b64.as_str())]).await;
    assert_eq!(http_json(s.addr, "GET", "/api/server-key", None, "").await.1["public_key"], want_pk);
    s.stop().await;
}

#[tokio::test]
async fn without_a_key_one_is_generated_once_and_kept() {
    let dir = temp_dir().display().to_string();
    let s = Server::start(&[("SYNCGATE_DATA_DIR", dir.as_str())]).await;
    let (status, first) = http_json(s.addr, "GET", "/api/server-key", None, "").await;
    assert_eq!(status, 200);
    assert_eq!(first["public_key"].as_str().unwrap().len(), 43, "{first}");
    s.stop().await;
    let s = Server::start(&[("SYNCGATE_DATA_DIR", dir.as_str())]).await;
    assert_eq!(http_json(s.addr, "GET", "/api/server-key", None, "").await.1, first, "kept across restarts");
    // Only GET.
    assert_eq!(http_json(s.addr, "POST", "/api/server-key", None, "").await.0, 405);
    s.stop().await;
}

#[test]
fn a_bad_server_key_stops_start_up_naming_the_variable() {
    let rsa = fixture("rsa1.key.pem");
    for bad in ["not a key", "AAAA", rsa.as_str()] {
        let vars = [("SYNCGATE_SERVER_KEY".to_string(), bad.to_string())].into_iter().collect();
        let e = syncgate::config::Config::from_map(&vars).expect_err(bad).to_string();
        assert!(e.contains("SYNCGATE_SERVER_KEY must be an Ed25519 private key"), "{e}");
    }
}
