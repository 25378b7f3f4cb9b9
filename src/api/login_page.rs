//! The browser login for desktop and tray apps, as RFC 8252 (OAuth for native apps) with PKCE
//! (RFC 7636). `GET /login-client?redirect_uri=…&state=…&code_challenge=…&code_challenge_method=S256`
//! shows a form; a right password sends the browser (303) to `redirect_uri?code=…&state=…` with a
//! one-time code (SHA-256 hashed in the database, so any instance redeems it); the app trades it
//! at `POST /login-client/token` with its `code_verifier` for the usual token JSON. No token ever
//! appears in a URL. Only loopback redirect URIs or those in `SYNCGATE_REDIRECT_ALLOWLIST` are
//! accepted — no open redirects; an invalid request is a 400 page, never a redirect. Everything
//! is escaped; the page carries a strict CSP.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::app::AppState;
use crate::error::HttpError;
use crate::store::login_codes::{CodeRedeemed, LoginCode};

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

/// `[A-Za-z0-9._~-]` (RFC 3986 unreserved), `len` bytes long.
fn unreserved(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
}

/// BASE64URL-NOPAD(SHA-256(verifier)): the S256 code challenge (RFC 7636 §4.2).
pub fn s256(verifier: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()))
}

/// What the page carries from the app's URL through the form to the redirect; validated on GET
/// and on POST alike.
struct Authorization {
    redirect_uri: String,
    /// `scheme://host:port` of `redirect_uri` (the CSP `form-action` must allow it).
    origin: String,
    state: String,
    code_challenge: String,
    device_id: Option<String>,
}

const REDIRECT_HELP: &str = "redirect_uri must be a loopback address (http://127.0.0.1:PORT/…) or an allowed URI";

/// The authorization parameters among `pairs` (other names are ignored), or why they are refused.
fn authorization(pairs: impl Iterator<Item = (String, String)>, allowlist: &[String]) -> Result<Authorization, String> {
    let mut fields: [Option<String>; 5] = Default::default();
    const NAMES: [&str; 5] = ["redirect_uri", "state", "code_challenge", "code_challenge_method", "device_id"];
    for (k, v) in pairs {
        if let Some(i) = NAMES.iter().position(|n| *n == k) {
            if fields[i].replace(v).is_some() {
                return Err(format!("{k} is given more than once"));
            }
        }
    }
    let [redirect_uri, state, challenge, method, device_id] = fields;
    let redirect_uri = redirect_uri.unwrap_or_default();
    let origin = allowed_redirect(&redirect_uri, allowlist).ok_or(REDIRECT_HELP)?;
    let state = state.filter(|s| unreserved(s, 16..=128));
    let state = state.ok_or("state is required: 16-128 characters of [A-Za-z0-9._~-]")?;
    if method.as_deref() != Some("S256") {
        return Err("code_challenge_method must be S256 (plain is not accepted)".into());
    }
    // S256 challenges are 43 characters of base64url; anything else can never match a verifier.
    let code_challenge = challenge.filter(|c| unreserved(c, 43..=43) && !c.contains(['.', '~']));
    let code_challenge =
        code_challenge.ok_or("code_challenge is required: BASE64URL(SHA-256(code_verifier)), 43 characters")?;
    if device_id.as_deref().is_some_and(|d| !crate::identity::valid_device_id(d)) {
        return Err(crate::identity::DEVICE_ID_RULE.into());
    }
    Ok(Authorization { redirect_uri, origin, state, code_challenge, device_id })
}

fn form(a: &Authorization, error: Option<&str>) -> String {
    let err = error.map(|e| format!("<p class=\"err\">{}</p>", escape(e))).unwrap_or_default();
    let hidden =
        |name: &str, value: &str| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", escape(value));
    let mut fields = hidden("redirect_uri", &a.redirect_uri)
        + &hidden("state", &a.state)
        + &hidden("code_challenge", &a.code_challenge)
        + &hidden("code_challenge_method", "S256");
    if let Some(d) = &a.device_id {
        fields += &hidden("device_id", d);
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sign in</title><style>{STYLE}</style></head><body>\
         <h1>Sign in</h1>{err}<form method=\"post\" action=\"/login-client\">{fields}\
         <label for=\"login\">Email or username</label><input id=\"login\" name=\"login\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button id=\"submit\" type=\"submit\">Sign in</button></form></body></html>"
    )
}

fn error_page(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    page(
        status,
        format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>Error</title></head><body><h1>Cannot sign in</h1><p>{}</p></body></html>", escape(message)),
        None,
    )
}

fn bad_request(message: &str) -> Response<Full<Bytes>> {
    error_page(StatusCode::BAD_REQUEST, message)
}

/// `GET /login-client?redirect_uri=…&state=…&code_challenge=…&code_challenge_method=S256[&device_id=…]`.
pub fn show(state: &AppState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let pairs = crate::util::query_pairs(req.uri().query().unwrap_or(""));
    match authorization(pairs, &state.config.accounts.redirect_allowlist) {
        Ok(a) if state.verifier.can_sign() => page(StatusCode::OK, form(&a, None), Some(&a.origin)),
        Ok(_) => bad_request("accounts are not enabled on this gateway"),
        Err(why) => bad_request(&why),
    }
}

/// `POST /login-client` (form): 303 to `redirect_uri?code=…&state=…` on success.
pub async fn submit(state: Arc<AppState>, req: Request<Incoming>, peer: IpAddr) -> Response<Full<Bytes>> {
    let body = match crate::api::read_body(&state, req, 16 * 1024).await {
        Ok(b) => b,
        Err(crate::error::HttpError::RequestTimeout) => return bad_request("form not received in time"),
        Err(_) => return bad_request("form too large"),
    };
    let text = String::from_utf8_lossy(&body);
    let a = match authorization(crate::util::query_pairs(&text), &state.config.accounts.redirect_allowlist) {
        Ok(a) => a,
        Err(why) => return bad_request(&why),
    };
    if !state.verifier.can_sign() {
        return bad_request("accounts are not enabled on this gateway");
    }
    let (mut login, mut password) = (String::new(), String::new());
    for (k, v) in crate::util::query_pairs(&text) {
        match k.as_str() {
            "login" => login = v,
            "password" => password = v,
            _ => {}
        }
    }
    let login = login.trim().to_lowercase();
    let retry = |msg: &str, status: StatusCode| page(status, form(&a, Some(msg)), Some(&a.origin));
    if super::accounts::limit_auth(&state, peer, &login).is_err() {
        return retry("Too many attempts; try again later.", StatusCode::TOO_MANY_REQUESTS);
    }
    let user = match super::accounts::password_login(&state, &login, password).await {
        Ok(u) => u,
        Err(_) => return retry("Wrong email, username or password.", StatusCode::UNAUTHORIZED),
    };
    let code = crate::util::random_hex(32);
    let grant = LoginCode {
        user_id: user.id,
        device_id: a.device_id.clone(),
        redirect_uri: a.redirect_uri.clone(),
        code_challenge: a.code_challenge.clone(),
        family: crate::util::random_hex(16),
    };
    let ttl_ms = (state.config.accounts.login_code_ttl_secs as i64) * 1000;
    if let Err(e) = state.store.insert_login_code(&code, &grant, ttl_ms).await {
        tracing::error!(error = %e, "storing a login code");
        return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Sign-in failed; please try again.");
    }
    // Both values are [A-Za-z0-9._~-]: nothing to encode.
    let separator = if a.redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{}{separator}code={code}&state={}", a.redirect_uri, a.state);
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SEE_OTHER;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(_) => bad_request("invalid redirect_uri"),
    }
}

/// The body of `POST /login-client/token` (RFC 6749 §4.1.3), as JSON or as a form.
#[derive(Deserialize, Default)]
struct TokenRequest {
    #[serde(default)]
    grant_type: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

impl TokenRequest {
    fn from_form(text: &str) -> Result<TokenRequest, HttpError> {
        let mut t = TokenRequest::default();
        for (k, v) in crate::util::query_pairs(text) {
            let slot = match k.as_str() {
                "grant_type" => &mut t.grant_type,
                "code" => &mut t.code,
                "code_verifier" => &mut t.code_verifier,
                "redirect_uri" => &mut t.redirect_uri,
                _ => continue,
            };
            if slot.replace(v).is_some() {
                return Err(HttpError::BadRequest(format!("{k} is given more than once")));
            }
        }
        Ok(t)
    }
}

/// `POST /login-client/token {code, code_verifier, redirect_uri}` (JSON or form): the token JSON
/// of `POST /login`, once per code. A wrong verifier, an unknown, expired or used code, or another
/// `redirect_uri` → 400 `invalid_grant`; a code presented again also revokes the login it issued.
pub async fn token(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: IpAddr,
) -> Result<Response<Full<Bytes>>, HttpError> {
    if !state.verifier.can_sign() {
        return Err(HttpError::NotFound);
    }
    // Per address: the "account" is the address itself, so no address shares a budget with another.
    let per_address = format!("\0login-code:{peer}");
    if !state.auth_attempts.allow(peer, Some(&per_address), std::time::Instant::now()) {
        return Err(HttpError::TooManyAttempts);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let body = crate::api::read_body(&state, req, 16 * 1024).await?;
    let t = if is_form {
        let text = std::str::from_utf8(&body).map_err(|_| HttpError::BadRequest("form is not UTF-8".into()))?;
        TokenRequest::from_form(text)?
    } else {
        crate::api::parse_json::<TokenRequest>(&body, state.config.limits.max_json_depth)?
    };
    if t.grant_type.as_deref().is_some_and(|g| g != "authorization_code") {
        return Err(HttpError::BadRequest("grant_type must be authorization_code".into()));
    }
    let (Some(code), Some(verifier), Some(redirect_uri)) = (t.code, t.code_verifier, t.redirect_uri) else {
        return Err(HttpError::BadRequest("code, code_verifier and redirect_uri are required".into()));
    };
    // A verifier outside RFC 7636's shape can never have produced a challenge this page took.
    if !unreserved(&verifier, 43..=128) || code.len() > 128 {
        return Err(HttpError::InvalidGrant);
    }
    let grant = match state.store.redeem_login_code(&code).await? {
        CodeRedeemed::Valid(g) => g,
        CodeRedeemed::Reused { family } => {
            tracing::warn!("a used login code was presented again; the login it issued is revoked");
            state.store.revoke_family(&family).await?;
            return Err(HttpError::InvalidGrant);
        }
        CodeRedeemed::Invalid => return Err(HttpError::InvalidGrant),
    };
    // The code is spent whatever follows: a wrong guess cannot be retried.
    let pkce_ok = super::same_secret(s256(&verifier).as_bytes(), grant.code_challenge.as_bytes());
    if !pkce_ok || redirect_uri != grant.redirect_uri {
        return Err(HttpError::InvalidGrant);
    }
    let mut r = super::accounts::issue_login(&state, &grant.user_id, &grant.family, grant.device_id.as_deref()).await?;
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(r)
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

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn authorization_parameters() {
        let pairs = |q: &str| crate::util::query_pairs(q).collect::<Vec<_>>().into_iter();
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let ok = format!(
            "redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2Fcb&state=0123456789abcdef&code_challenge={challenge}&code_challenge_method=S256"
        );
        let a = authorization(pairs(&ok), &[]).expect("valid");
        assert_eq!(
            (a.origin.as_str(), a.state.as_str(), a.device_id),
            ("http://127.0.0.1:5000", "0123456789abcdef", None)
        );
        for bad in [
            ok.replace("state=0123456789abcdef", "state=0123456789abcde"),
            ok.replace("state=0123456789abcdef", "state=0123456789abcde%20"),
            ok.replace("S256", "plain"),
            ok.replace(challenge, &challenge[1..]),
            ok.replace(challenge, &format!("{}.", &challenge[1..])),
            format!("{ok}&code_challenge={challenge}"),
            format!("{ok}&device_id=a%20b"),
        ] {
            assert!(authorization(pairs(&bad), &[]).is_err(), "{bad}");
        }
        assert!(authorization(pairs(&format!("{ok}&device_id=laptop-1")), &[]).is_ok_and(|a| a.device_id.is_some()));
    }
}
