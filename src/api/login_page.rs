//! `GET /login-client?redirect_uri=…`: an HTML login page for desktop tray apps. On success the
//! browser is sent to `redirect_uri` with the tokens in the URL fragment (never in a query
//! string or a log). Only loopback redirect URIs or those in `SYNCGATE_REDIRECT_ALLOWLIST` are
//! accepted — no open redirects. Everything is escaped; the page carries a strict CSP.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::server::AppState;

/// `&<>"'` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The origin (`scheme://host:port`) of an acceptable redirect URI, or `None`.
pub fn allowed_redirect(uri: &str, allowlist: &[String]) -> Option<String> {
    if uri.len() > 2048 || uri.contains('#') || uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let parsed: http::Uri = uri.parse().ok()?;
    let scheme = parsed.scheme_str()?;
    let authority = parsed.authority()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let origin = format!("{scheme}://{}", authority.as_str());
    let loopback = scheme == "http"
        && matches!(authority.host(), "127.0.0.1" | "localhost" | "[::1]")
        && authority.port_u16().is_some();
    let without_query = uri.split('?').next().unwrap_or(uri);
    let listed = allowlist.iter().any(|a| a == without_query);
    (loopback || listed).then_some(origin)
}

fn page(status: StatusCode, body: String, form_origin: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let form_action = match form_origin {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{STYLE_HASH}'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

const STYLE: &str = "body{font-family:sans-serif;max-width:22rem;margin:4rem auto}label,input,button{display:block;width:100%;margin:.4rem 0}.err{color:#b00}";
/// base64(SHA-256(STYLE)), computed at first use.
static STYLE_HASH_CELL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
struct StyleHash;
impl std::fmt::Display for StyleHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = STYLE_HASH_CELL.get_or_init(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .encode(ring::digest::digest(&ring::digest::SHA256, STYLE.as_bytes()))
        });
        f.write_str(h)
    }
}
const STYLE_HASH: StyleHash = StyleHash;

fn form(redirect_uri: &str, error: Option<&str>) -> String {
    let err = error.map(|e| format!("<p class=\"err\">{}</p>", escape(e))).unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title><style>{STYLE}</style></head><body>\
         <h1>Sign in</h1>{err}<form method=\"post\" action=\"/login-client\">\
         <input type=\"hidden\" name=\"redirect_uri\" value=\"{}\">\
         <label for=\"login\">Email or username</label><input id=\"login\" name=\"login\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button id=\"submit\" type=\"submit\">Sign in</button></form></body></html>",
        escape(redirect_uri)
    )
}

fn bad_request(message: &str) -> Response<Full<Bytes>> {
    page(
        StatusCode::BAD_REQUEST,
        format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>Error</title></head><body><h1>Cannot sign in</h1><p>{}</p></body></html>", escape(message)),
        None,
    )
}

/// `GET /login-client?redirect_uri=…`.
pub fn show(state: &AppState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let redirect = crate::util::query_pairs(req.uri().query().unwrap_or(""))
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v)
        .unwrap_or_default();
    match allowed_redirect(&redirect, &state.config.redirect_allowlist) {
        Some(origin) if state.verifier.can_sign() => page(StatusCode::OK, form(&redirect, None), Some(&origin)),
        Some(_) => bad_request("accounts are not enabled on this gateway"),
        None => bad_request("redirect_uri must be a loopback address (http://127.0.0.1:PORT/…) or an allowed URI"),
    }
}

/// `POST /login-client` (form): 303 to `redirect_uri#access_token=…` on success.
pub async fn submit(state: Arc<AppState>, req: Request<Incoming>, peer: IpAddr) -> Response<Full<Bytes>> {
    let body = match crate::api::read_body(&state, req, 16 * 1024).await {
        Ok(b) => b,
        Err(crate::error::HttpError::RequestTimeout) => return bad_request("form not received in time"),
        Err(_) => return bad_request("form too large"),
    };
    let text = String::from_utf8_lossy(&body);
    let (mut login, mut password, mut redirect) = (String::new(), String::new(), String::new());
    for (k, v) in crate::util::query_pairs(&text) {
        match k.as_str() {
            "login" => login = v,
            "password" => password = v,
            "redirect_uri" => redirect = v,
            _ => {}
        }
    }
    let Some(origin) = allowed_redirect(&redirect, &state.config.redirect_allowlist) else {
        return bad_request("redirect_uri must be a loopback address (http://127.0.0.1:PORT/…) or an allowed URI");
    };
    let login = login.trim().to_lowercase();
    let retry = |msg: &str, status: StatusCode| page(status, form(&redirect, Some(msg)), Some(&origin));
    if super::accounts::limit_auth(&state, peer, &login).is_err() {
        return retry("Too many attempts; try again later.", StatusCode::TOO_MANY_REQUESTS);
    }
    match super::accounts::password_login(&state, &login, password).await {
        Ok(tokens) => {
            let fragment = format!(
                "access_token={}&refresh_token={}&token_type=Bearer&expires_in={}",
                tokens.access, tokens.refresh, tokens.expires_in
            );
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SEE_OTHER;
            match HeaderValue::from_str(&format!("{redirect}#{fragment}")) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
                    r
                }
                Err(_) => bad_request("invalid redirect_uri"),
            }
        }
        Err(_) => retry("Wrong email, username or password.", StatusCode::UNAUTHORIZED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_and_escaping() {
        let none: Vec<String> = vec![];
        assert_eq!(allowed_redirect("http://127.0.0.1:5000/cb", &none).as_deref(), Some("http://127.0.0.1:5000"));
        assert!(allowed_redirect("http://localhost:8123/x?y=1", &none).is_some());
        for bad in [
            "http://evil.example.com/cb",
            "http://127.0.0.1/cb",
            "https://127.0.0.1:5000/cb",
            "http://127.0.0.1:5000@evil.com/",
            "http://127.0.0.1.evil.com:80/",
            "javascript:alert(1)",
            "//evil.com/",
            "",
            "http://127.0.0.1:5000/cb#frag",
        ] {
            assert!(allowed_redirect(bad, &none).is_none(), "{bad}");
        }
        let list = vec!["https://app.example.com/callback".to_string()];
        assert!(allowed_redirect("https://app.example.com/callback?state=1", &list).is_some());
        assert!(allowed_redirect("https://app.example.com/callback2", &list).is_none());
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
