//! Channel names and who may use them: `user:<id>`, `dm:<a>:<b>`, public namespaces,
//! server-publish namespaces and the token's `channels`, `subscribe` and `publish` globs.

use crate::identity::Identity;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a channel request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelError {
    /// The name is not a valid channel name (`bad_request`).
    Invalid(&'static str),
    /// Valid, but this identity may not use it (`forbidden`).
    Forbidden,
    /// Valid, outside `user:` and `dm:`, not public and granted by no claim: `forbidden`, unless
    /// the authorization hook governs its namespace and allows it.
    NotGranted,
}

/// What a client asks to do on a channel. Typing, presence, history, `ack` and `unsubscribe`
/// need subscribe rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Subscribe,
    Publish,
}

impl Action {
    /// The name used on the wire (the authorization hook's `action`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
        }
    }
}

/// The namespace rules from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Namespaces<'a> {
    /// Anyone may subscribe and publish (`SYNCGATE_PUBLIC_NAMESPACES`).
    pub public: &'a [String],
    /// No client may publish, whatever its rights (`SYNCGATE_SERVER_PUBLISH_NAMESPACES`).
    pub server_publish: &'a [String],
}

/// The namespace of a channel name (`""` when it has none).
pub fn namespace(channel: &str) -> &str {
    channel.split_once(':').map_or("", |(ns, _)| ns)
}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'@' | b'=' | b'-')
}

/// `[A-Za-z0-9:_.@=-]{1,128}`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_CHANNEL_LEN && name.bytes().all(name_byte)
}

/// A namespace: channel-name characters without `:`.
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty() && ns.len() < MAX_CHANNEL_LEN && ns.bytes().all(|b| b != b':' && name_byte(b))
}

/// A user id usable inside `user:<id>` and `dm:<a>:<b>`: channel characters without `:`.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CHANNEL_LEN - 5 && id.bytes().all(|b| b != b':' && name_byte(b))
}

/// Glob match where `*` matches any run of characters (including none).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// `user:<id>`: every connection of the user is a member (the user's devices stay in sync).
pub fn user_channel(user: &str) -> String {
    format!("user:{user}")
}

/// Whether `channel` is a user channel (`user:<id>`).
pub fn is_user_channel(channel: &str) -> bool {
    channel.starts_with("user:")
}

/// `dm:<a>:<b>` for two users, whichever order they come in (the smaller id first).
pub fn dm_channel(one: &str, other: &str) -> String {
    if one < other {
        format!("dm:{one}:{other}")
    } else {
        format!("dm:{other}:{one}")
    }
}

/// Whether `channel` is in the direct-channel namespace (`dm:`), well-formed or not.
pub fn is_dm_namespace(channel: &str) -> bool {
    channel.starts_with("dm:")
}

/// What a malformed direct channel name gets told.
pub const DM_RULE: &str = "direct channels are dm:<a>:<b> with a < b";

/// The two users of a well-formed `dm:<a>:<b>` (`a < b`, byte order); `None` for anything else.
pub fn dm_members(channel: &str) -> Option<(&str, &str)> {
    let (a, b) = channel.strip_prefix("dm:")?.split_once(':')?;
    (!a.is_empty() && !b.is_empty() && !b.contains(':') && a < b).then_some((a, b))
}

/// Calls `f` with each registry/bus channel whose members receive an event published to
/// `channel`: a direct channel reaches both users' channels (implicit membership, so every
/// connection of either user gets it once, subscribed or not), any other channel its own members.
pub fn for_each_route(channel: &str, mut f: impl FnMut(&str)) {
    match dm_members(channel) {
        Some((a, b)) => {
            f(&user_channel(a));
            f(&user_channel(b));
        }
        None => f(channel),
    }
}

/// Whether the token's claims grant `action` on `channel`: a `channels` glob grants both
/// actions, a `subscribe` or `publish` glob its own.
pub fn granted(identity: &Identity, action: Action, channel: &str) -> bool {
    let r = &*identity.rights;
    let own = match action {
        Action::Subscribe => &r.subscribe,
        Action::Publish => &r.publish,
    };
    r.channels.iter().chain(own).any(|g| glob_match(g, channel))
}

/// Resolves the `"user"` alias to the caller's own user channel and checks that `identity` may
/// do `action` on the channel. Returns the canonical name.
pub fn authorize(
    requested: &str,
    identity: &Identity,
    rules: Namespaces<'_>,
    action: Action,
) -> Result<String, ChannelError> {
    let canonical = if requested == "user" {
        user_channel(&identity.user_id)
    } else if valid_name(requested) {
        requested.to_string()
    } else {
        return Err(ChannelError::Invalid("channel names are 1-128 bytes of [A-Za-z0-9:_.@=-]"));
    };
    let ns = namespace(&canonical);
    if action == Action::Publish && !ns.is_empty() && rules.server_publish.iter().any(|p| p == ns) {
        return Err(ChannelError::Forbidden);
    }
    match ns {
        "user" => match canonical["user:".len()..] == *identity.user_id {
            true => Ok(canonical),
            false => Err(ChannelError::Forbidden),
        },
        "dm" => {
            let Some((a, b)) = dm_members(&canonical) else {
                return Err(ChannelError::Invalid(DM_RULE));
            };
            match a == &*identity.user_id || b == &*identity.user_id {
                true => Ok(canonical),
                false => Err(ChannelError::Forbidden),
            }
        }
        _ => {
            let public = !ns.is_empty() && rules.public.iter().any(|p| p == ns);
            match public || granted(identity, action, &canonical) {
                true => Ok(canonical),
                false => Err(ChannelError::NotGranted),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn strings(globs: &[&str]) -> Vec<String> {
        globs.iter().map(|s| s.to_string()).collect()
    }

    fn who(user: &str, globs: &[&str]) -> Identity {
        Identity {
            user_id: Arc::from(user),
            device_id: Arc::from("d1"),
            rights: crate::identity::Rights::channels(strings(globs)),
            exp: u64::MAX,
            gen: 0,
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("room:*", "room:a"));
        assert!(glob_match("room:*", "room:"));
        assert!(!glob_match("room:*", "rooms:a"));
        assert!(glob_match("note:abc", "note:abc"));
        assert!(!glob_match("note:abc", "note:abcd"));
        assert!(glob_match("*:x*y", "a:xzzy"));
        assert!(!glob_match("*:x*y", "a:xzz"));
        assert!(glob_match("*", "anything"));
    }

    #[test]
    fn rules() {
        let pubs = strings(&["public"]);
        let srv = strings(&["news", "public"]);
        let rules = Namespaces { public: &pubs, server_publish: &srv };
        let authorize = |ch: &str, who: &Identity, _: &[String]| authorize(ch, who, rules, Action::Subscribe);
        let alice = who("alice", &["room:*", "note:abc"]);
        assert_eq!(authorize("user", &alice, &pubs).unwrap(), "user:alice");
        assert_eq!(authorize("user:alice", &alice, &pubs).unwrap(), "user:alice");
        assert_eq!(authorize("user:bob", &alice, &pubs), Err(ChannelError::Forbidden));
        assert!(authorize("dm:alice:bob", &alice, &pubs).is_ok());
        assert_eq!(authorize("dm:bob:carol", &alice, &pubs), Err(ChannelError::Forbidden));
        assert!(matches!(authorize("dm:bob:alice", &alice, &pubs), Err(ChannelError::Invalid(_))));
        assert_eq!(dm_members("dm:a:b"), Some(("a", "b")));
        for bad in ["dm:b:a", "dm:a:a", "dm:a", "dm::b", "dm:a:b:c", "room:a:b"] {
            assert_eq!(dm_members(bad), None, "{bad}");
        }
        let mut routes = Vec::new();
        for_each_route("dm:a:b", |r| routes.push(r.to_string()));
        for_each_route("room:x", |r| routes.push(r.to_string()));
        assert_eq!(routes, ["user:a", "user:b", "room:x"]);
        assert!(authorize("public:lobby", &alice, &pubs).is_ok());
        assert!(authorize("room:1", &alice, &pubs).is_ok());
        assert!(authorize("note:abc", &alice, &pubs).is_ok());
        assert_eq!(authorize("note:abd", &alice, &pubs), Err(ChannelError::NotGranted));
        assert_eq!(authorize("secret:x", &alice, &pubs), Err(ChannelError::NotGranted));
        assert!(matches!(authorize("bad channel", &alice, &pubs), Err(ChannelError::Invalid(_))));
        assert!(matches!(authorize(&"a".repeat(129), &alice, &pubs), Err(ChannelError::Invalid(_))));
    }

    #[test]
    fn rights_and_server_publish() {
        let pubs = strings(&["public"]);
        let srv = strings(&["news", "public"]);
        let rules = Namespaces { public: &pubs, server_publish: &srv };
        let mut bob = who("bob", &["room:*", "news:*"]);
        bob.rights = Arc::new(crate::identity::Rights {
            channels: strings(&["room:*", "news:*"]),
            subscribe: strings(&["feed:*"]),
            publish: strings(&["inbox:*"]),
        });
        let az = |ch: &str, a: Action| authorize(ch, &bob, rules, a);
        assert!(az("room:1", Action::Subscribe).is_ok() && az("room:1", Action::Publish).is_ok());
        assert!(az("feed:1", Action::Subscribe).is_ok());
        assert_eq!(az("feed:1", Action::Publish), Err(ChannelError::NotGranted));
        assert!(az("inbox:1", Action::Publish).is_ok());
        assert_eq!(az("inbox:1", Action::Subscribe), Err(ChannelError::NotGranted));
        // Server-publish namespaces: subscribe under the usual rules, never publish.
        assert!(az("news:1", Action::Subscribe).is_ok());
        assert_eq!(az("news:1", Action::Publish), Err(ChannelError::Forbidden));
        assert!(az("public:1", Action::Subscribe).is_ok());
        assert_eq!(az("public:1", Action::Publish), Err(ChannelError::Forbidden));
        assert_eq!(az("other:1", Action::Subscribe), Err(ChannelError::NotGranted));
        assert_eq!(namespace("a:b:c"), "a");
        assert_eq!(namespace("lobby"), "");
    }
}
