//! The JavaScript client (`clients/js`) in a real headless Chromium: the example page
//! `clients/js/examples/clipboard.html` loads the module from a local static server, two tabs
//! (two devices of one user) sync a text area through the real gateway binary, a Node client
//! (the same module under `node`) publishes to both, and after the gateway restarts on the same
//! port both tabs reconnect by themselves and keep syncing. The test saves a screenshot. A tab
//! without a device id keeps its generated one across a reload.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use crate::login_page::Browser;

fn js_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/js")
}

/// Serves `clients/js` (GET only, no directory listing, nothing outside it) on 127.0.0.1:0.
async fn static_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path =
                    req.split_whitespace().nth(1).unwrap_or("/").split(['?', '#']).next().unwrap_or("/").to_string();
                let file = (!path.contains("..")).then(|| js_root().join(path.trim_start_matches('/')));
                let (status, kind, body) = match file.and_then(|f| std::fs::read(&f).ok().map(|b| (f, b))) {
                    Some((f, b)) => {
                        let kind = match f.extension().and_then(|e| e.to_str()) {
                            Some("js") => "text/javascript",
                            Some("html") => "text/html; charset=utf-8",
                            _ => "application/octet-stream",
                        };
                        ("200 OK", kind, b)
                    }
                    None => ("404 Not Found", "text/plain", b"not found".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    port
}

/// The gateway binary on `port` with data in `dir` (the same on a restart), and its log lines
/// (kept: the process logs to a pipe that must stay open).
fn gateway(port: u16, dir: &std::path::Path) -> (Reap, std::sync::mpsc::Receiver<String>) {
    let (child, addr, logs) = spawn_binary(&[
        ("SYNCGATE_LISTEN", &format!("127.0.0.1:{port}")),
        ("SYNCGATE_DATA_DIR", &dir.display().to_string()),
        ("SYNCGATE_JWT_SECRET", SECRET),
    ]);
    assert_eq!(addr, format!("127.0.0.1:{port}"));
    (Reap(child), logs)
}

/// Publishes `text` to alice's user channel from Node, with the client module itself.
fn node_publish(port: u16, text: &str) {
    let module = js_root().join("src/index.js");
    let script = format!(
        "import {{ SyncgateClient }} from {module:?};\n\
         const c = new SyncgateClient('ws://127.0.0.1:{port}/ws', {{ getToken: async () => {token:?}, deviceId: 'node' }});\n\
         c.connect();\n\
         const ack = await c.publish('user:alice', 'clip', {{ text: {text:?} }});\n\
         c.close();\n\
         console.log(JSON.stringify(ack));\n",
        module = module.display().to_string(),
        token = token("alice"),
    );
    let out = std::process::Command::new("node")
        .args(["--experimental-websocket", "--no-warnings", "--input-type=module", "-e", &script])
        .output()
        .expect("node (the machine's Node.js >= 20)");
    assert!(out.status.success(), "node publish failed: {}", String::from_utf8_lossy(&out.stderr));
}

async fn open_tab(page: &str) -> Browser {
    let mut b = Browser::launch().await;
    b.call("Page.enable", json!({})).await;
    b.call("Page.navigate", json!({"url": page})).await;
    b
}

#[tokio::test]
async fn clipboard_example_syncs_two_tabs_and_survives_a_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = temp_dir();
    let (server, _logs) = gateway(port, &dir);
    let web = static_server().await;
    let page = |device: &str| {
        format!(
            "http://127.0.0.1:{web}/examples/clipboard.html#ws=ws://127.0.0.1:{port}/ws&token={}&user=alice&device={device}",
            token("alice")
        )
    };
    let mut a = open_tab(&page("tab-a")).await;
    let mut b = open_tab(&page("tab-b")).await;
    for tab in [&mut a, &mut b] {
        tab.wait_for("window.syncgate?.state === 'connected'").await;
    }

    // Typing in one tab reaches the other (a user's devices share the user channel).
    a.eval("(() => { const t = document.getElementById('clip'); t.value = 'hello from tab a'; t.dispatchEvent(new Event('input')); return true })()").await;
    b.wait_for("document.getElementById('clip').value === 'hello from tab a'").await;

    // A Node client (the same module) publishes: both tabs receive it.
    node_publish(port, "from node");
    for tab in [&mut a, &mut b] {
        tab.wait_for("window.syncgate.received.includes('from node')").await;
    }

    // The gateway restarts on the same port: both tabs reconnect by themselves.
    drop(server);
    for tab in [&mut a, &mut b] {
        tab.wait_for("window.syncgate.state !== 'connected'").await;
    }
    let restarted = Instant::now();
    let (server, _logs2) = gateway(port, &dir);
    for tab in [&mut a, &mut b] {
        tab.wait_for("window.syncgate.state === 'connected' && window.syncgate.connects >= 2").await;
    }
    assert!(restarted.elapsed() < Duration::from_secs(15), "{:?}", restarted.elapsed());
    node_publish(port, "after the restart");
    for tab in [&mut a, &mut b] {
        tab.wait_for("window.syncgate.received.includes('after the restart')").await;
    }
    b.eval("(() => { const t = document.getElementById('clip'); t.value = 'typed after the restart'; t.dispatchEvent(new Event('input')); return true })()").await;
    a.wait_for("document.getElementById('clip').value === 'typed after the restart'").await;

    // The screenshot of tab a, for the README.
    let shot = a.call("Page.captureScreenshot", json!({"format": "png"})).await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["result"]["data"].as_str().expect("screenshot data"),
    )
    .unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2000, "{} bytes", png.len());
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("clipboard.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {}", out.display());

    // Without a device id the client generates one, keeps it in localStorage, and after a reload
    // the page connects as the same device (msg_id de-duplication is per device).
    let anon = format!(
        "http://127.0.0.1:{web}/examples/clipboard.html#ws=ws://127.0.0.1:{port}/ws&token={}&user=alice",
        token("alice")
    );
    let mut c = open_tab(&anon).await;
    c.wait_for("window.syncgate?.state === 'connected'").await;
    let first = c.eval("window.syncgate.client.welcome.device_id").await;
    assert!(first.as_str().is_some_and(|d| d.starts_with("d-") && d.len() > 10), "{first}");
    assert_eq!(c.eval("localStorage.getItem('syncgate-device-id')").await, first);
    c.eval("window.beforeReload = true").await;
    c.call("Page.reload", json!({})).await;
    c.wait_for("window.beforeReload === undefined && window.syncgate?.state === 'connected'").await;
    assert_eq!(c.eval("window.syncgate.client.welcome.device_id").await, first);
    drop(server);
}
