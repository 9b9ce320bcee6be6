//! Redaction of secrets in payloads and states, the one rule for every reader of the
//! log (GraphQL audit payloads, `hms-replay` exports and state dumps). Password hashes are stored in events
//! (login needs them) but an audit export or a state dump is read by people and
//! systems that must never see them, whatever the format.

use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Keys whose values are secrets, at any depth: `password_hash` today; fields named
/// like a password, secret or token tomorrow. Event names (`PasswordChanged`) are not
/// secrets: only the fields inside them.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "password"
        || key.ends_with("_password")
        || key.contains("password_hash")
        || key.contains("secret")
        || key == "token"
        || key.ends_with("_token")
}

/// Replaces every secret value in `value`, in place.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_secret_key(key) {
                    *item = Value::String(REDACTED.to_owned());
                } else {
                    redact(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn password_hashes_are_redacted_at_any_depth() {
        let mut v = json!({"UserCreated": {"username": "a", "password_hash": "$argon2id$x"},
                           "list": [{"PASSWORD": 1}],
                           "PasswordChanged": {"password_hash": "h", "changed_at": "t"}});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"UserCreated": {"username": "a", "password_hash": REDACTED},
                   "list": [{"PASSWORD": REDACTED}],
                   "PasswordChanged": {"password_hash": REDACTED, "changed_at": "t"}})
        );
    }
}
