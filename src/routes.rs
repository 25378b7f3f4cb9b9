//! The HTTP surface as data: every (method, path) the router serves. A leaf module, so the
//! configuration (which refuses an echo path that shadows a route) and the OpenAPI document can
//! read it without importing the server.

/// Every (method, path) the router serves; the OpenAPI test checks each is documented.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/ws"),
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("POST", "/register"),
    ("POST", "/login"),
    ("POST", "/token/refresh"),
    ("POST", "/logout"),
    ("POST", "/change-password"),
    ("POST", "/forgot-password"),
    ("POST", "/reset-password"),
    ("GET", "/api/devices"),
    ("DELETE", "/api/devices/{id}"),
    ("PUT", "/api/devices/{id}/key"),
    ("POST", "/api/pairing"),
    ("POST", "/api/pairing/claim"),
    ("GET", "/api/users/search"),
    ("GET", "/api/history"),
    ("GET", "/api/conversation"),
    ("GET", "/api/conversations"),
    ("POST", "/api/publish"),
    ("GET", "/api/presence"),
    ("GET", "/api/channels"),
    ("POST", "/api/disconnect"),
    ("GET", "/api/status"),
    ("GET", "/api/server-key"),
    ("GET", "/api/openapi.json"),
    ("GET", "/login-client"),
    ("POST", "/login-client"),
    ("POST", "/login-client/token"),
];
