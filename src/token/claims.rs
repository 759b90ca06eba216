//! Claims copied out of the JWT the gateway forwards, into request headers
//! (`claims_to_headers`) and Envoy filter state (`claims_to_filter_state`), as `jwt_authn`'s
//! `claim_to_headers` does.
//!
//! A claim is named by a path: a top-level name (`sub`, or a namespaced
//! `https://example.com/roles`), else a dotted path into objects (`realm_access.roles`). A value
//! is copied as text: a string as it is, an integer or a boolean as its JSON text, an array of
//! strings joined with `,`. Anything else is refused, never copied: an object, `null`, a float,
//! a mixed array, a value with a control character (a header injection), a value over
//! [`MAX_VALUE_LEN`] bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

/// Longest value copied.
pub const MAX_VALUE_LEN: usize = 8 * 1024;
const MAX_PATH_LEN: usize = 256;

/// A claim's name, and its dotted parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    name: String,
    parts: Vec<String>,
}

impl ClaimPath {
    /// `None` for an empty name, an empty part, or anything but visible ASCII.
    pub fn parse(name: &str) -> Option<Self> {
        if name.is_empty()
            || name.len() > MAX_PATH_LEN
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return None;
        }
        let parts: Vec<String> = name.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return None;
        }
        Some(Self {
            name: name.to_owned(),
            parts,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether [`Self::lookup`] may read the top-level member `member`.
    pub fn reads(&self, member: &str) -> bool {
        self.name == member || self.parts.first().is_some_and(|p| p == member)
    }

    /// The value in `claims`: the whole name as a top-level member first (namespaced claims
    /// are URLs, with dots), else the dotted path.
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(v) = claims.get(&self.name) {
            return Some(v);
        }
        let (first, rest) = self.parts.split_first()?;
        if rest.is_empty() {
            return None;
        }
        let mut value = claims.get(first)?;
        for part in rest {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }
}

/// One claim of one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Value(String),
    /// The token has no such claim.
    Absent,
    /// The token has it, but it cannot be copied (see the module).
    Refused,
}

/// A claim value as header text.
pub fn text(value: &Value) -> Claim {
    let out = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => parts.push(s.as_str()),
                    _ => return Claim::Refused,
                }
            }
            parts.join(",")
        }
        _ => return Claim::Refused,
    };
    if out.len() > MAX_VALUE_LEN || out.chars().any(char::is_control) {
        return Claim::Refused;
    }
    Claim::Value(out)
}

/// What a token is bound to (RFC 7800 `cnf`): a DPoP key's thumbprint (RFC 9449 `jkt`), a
/// client certificate's SHA-256 (RFC 8705 `x5t#S256`), both base64url. A token bound to
/// either is only honoured with its proof.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    pub jkt: Option<String>,
    pub x5t: Option<String>,
}

impl Binding {
    /// The binding a claims object (a JWT payload, an introspection answer) states. A `cnf`
    /// that is there but not an object, or a member of the wrong type, binds to nothing that
    /// can be proven: it is kept as an impossible value, so the token is refused, never taken
    /// for an unbound one.
    pub fn of(claims: &Map<String, Value>) -> Self {
        let Some(cnf) = claims.get("cnf") else {
            return Self::default();
        };
        let member = |name: &str| match cnf.get(name) {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => Some(String::new()),
        };
        if !cnf.is_object() {
            return Self {
                jkt: Some(String::new()),
                x5t: None,
            };
        }
        Self {
            jkt: member("jkt"),
            x5t: member("x5t#S256"),
        }
    }

    pub fn is_bound(&self) -> bool {
        self.jkt.is_some() || self.x5t.is_some()
    }
}

/// The JWT's payload as a claims object (`None` when it cannot be read: a forwarded JWT always
/// can).
pub fn payload_of(jwt: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The members of a JWT's payload that the gateway reads from every token it forwards: its
/// times, its identity (revocation) and its binding.
pub const READ: [&str; 5] = ["exp", "iat", "sub", "sid", "cnf"];

/// [`payload_of`] with only the members `keep` accepts: the others are checked as JSON and
/// skipped, never built (a miss reads a handful of members, not a map of every claim). A
/// member named twice is read as [`payload_of`] reads it: the last one.
pub fn payload_members(jwt: &str, keep: &dyn Fn(&str) -> bool) -> Option<Map<String, Value>> {
    use serde::de::DeserializeSeed as _;
    let bytes = URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1)?).ok()?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let members = Members(keep).deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(members)
}

/// The object's members that `.0` keeps.
struct Members<'a>(&'a dyn Fn(&str) -> bool);

impl<'de> serde::de::DeserializeSeed<'de> for Members<'_> {
    type Value = Map<String, Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Members<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut access: A,
    ) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(name) = access.next_key_seed(Name(self.0))? {
            match name {
                Some(name) => {
                    let value: Value = access.next_value()?;
                    out.insert(name, value);
                }
                None => {
                    access.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// A member's name: `Some` (owned) when kept, `None` when skipped (never copied).
struct Name<'a>(&'a dyn Fn(&str) -> bool);

impl<'de> serde::de::DeserializeSeed<'de> for Name<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl serde::de::Visitor<'_> for Name<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
        Ok((self.0)(name).then(|| name.to_owned()))
    }
}

/// The claims `paths` of the JWT `jwt` (its payload decoded), each [`Claim::Absent`] when the
/// payload cannot be read.
pub fn of_jwt(jwt: &str, paths: &[ClaimPath]) -> Vec<Claim> {
    match payload_of(jwt) {
        Some(claims) => of(&claims, paths),
        None => vec![Claim::Absent; paths.len()],
    }
}

/// The claims `paths` of a claims object.
pub fn of(claims: &Map<String, Value>, paths: &[ClaimPath]) -> Vec<Claim> {
    paths
        .iter()
        .map(|p| p.lookup(claims).map_or(Claim::Absent, text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn jwt_of(payload: &str) -> String {
        format!(
            "eyJhbGciOiJFUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn payload_members_reads_what_payload_of_reads_of_the_kept_members() {
        let keep = |m: &str| READ.contains(&m);
        for payload in [
            r#"{"sub":"alice","scope":"a b","exp":1,"iat":2.5,"sid":"s","cnf":{"jkt":"k"},"x":[1,{"y":null}]}"#,
            // Named twice: the last, as a map reads it.
            r#"{"cnf":{"jkt":"first"},"cnf":{"jkt":"last"},"sub":1}"#,
            // Escaped names are the names they spell.
            r#"{"sub":"escaped","cnf":"not an object","é":"x"}"#,
            r#"{}"#,
        ] {
            let jwt = jwt_of(payload);
            let mut whole = payload_of(&jwt).unwrap();
            whole.retain(|k, _| keep(k));
            assert_eq!(payload_members(&jwt, &keep), Some(whole), "{payload}");
        }
        // What payload_of cannot read, neither can this.
        for payload in [
            r#"[1,2]"#,
            r#"{"sub":"a"} x"#,
            r#"{"sub":"a","big":[1,}"#,
            r#""s""#,
            "",
        ] {
            let jwt = jwt_of(payload);
            assert_eq!(payload_of(&jwt), None, "{payload}");
            assert_eq!(payload_members(&jwt, &keep), None, "{payload}");
        }
        assert_eq!(payload_members("not a jwt", &keep), None);
        assert_eq!(payload_members("a.!!!.c", &keep), None);
    }

    #[test]
    fn a_path_reads_its_first_part_or_its_whole_name() {
        let dotted = ClaimPath::parse("realm_access.roles").unwrap();
        assert!(dotted.reads("realm_access") && dotted.reads("realm_access.roles"));
        assert!(!dotted.reads("roles") && !dotted.reads("realm"));
    }

    #[test]
    fn paths_reach_into_objects_and_namespaced_names_win() {
        let c = claims(json!({
            "sub": "alice", "realm_access": {"roles": ["a", "b"]},
            "https://example.com/roles": ["x"], "a": {"b.c": 1}
        }));
        let get = |p: &str| ClaimPath::parse(p).unwrap().lookup(&c).cloned();
        assert_eq!(get("sub"), Some(json!("alice")));
        assert_eq!(get("realm_access.roles"), Some(json!(["a", "b"])));
        assert_eq!(get("https://example.com/roles"), Some(json!(["x"])));
        assert_eq!(get("realm_access.missing"), None);
        assert_eq!(get("sub.x"), None, "not an object");
        for bad in ["", ".", "a..b", "a.", " sub", "é"] {
            assert!(ClaimPath::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn values_become_text_or_are_refused() {
        let cases = [
            (json!("alice"), Claim::Value("alice".into())),
            (json!(42), Claim::Value("42".into())),
            (json!(-7), Claim::Value("-7".into())),
            (json!(true), Claim::Value("true".into())),
            (json!(["a", "b"]), Claim::Value("a,b".into())),
            (json!([]), Claim::Value(String::new())),
            (json!({"a": 1}), Claim::Refused),
            (json!(null), Claim::Refused),
            (json!(1.5), Claim::Refused),
            (json!(["a", 1]), Claim::Refused),
            (json!("a\r\nx-injected: 1"), Claim::Refused),
            (json!("tab\there"), Claim::Refused),
            (json!("x".repeat(MAX_VALUE_LEN + 1)), Claim::Refused),
            (
                json!("x".repeat(MAX_VALUE_LEN)),
                Claim::Value("x".repeat(MAX_VALUE_LEN)),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(text(&value), want, "{value}");
        }
    }

    #[test]
    fn of_a_jwt() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"bob","scope":"read write"}"#);
        let jwt = format!("eyJhbGciOiJFUzI1NiJ9.{payload}.c2ln");
        let paths: Vec<ClaimPath> = ["sub", "scope", "client_id"]
            .iter()
            .map(|p| ClaimPath::parse(p).unwrap())
            .collect();
        assert_eq!(
            of_jwt(&jwt, &paths),
            vec![
                Claim::Value("bob".into()),
                Claim::Value("read write".into()),
                Claim::Absent
            ]
        );
        assert_eq!(of_jwt("garbage", &paths), vec![Claim::Absent; 3]);
    }

    #[test]
    fn bindings() {
        let of = |v: Value| Binding::of(v.as_object().unwrap());
        assert_eq!(of(json!({"sub": "a"})), Binding::default());
        assert_eq!(
            of(json!({"cnf": {"jkt": "abc"}})),
            Binding {
                jkt: Some("abc".into()),
                x5t: None
            }
        );
        assert_eq!(
            of(json!({"cnf": {"x5t#S256": "def"}})),
            Binding {
                jkt: None,
                x5t: Some("def".into())
            }
        );
        // Unusable bindings bind to what nobody can prove.
        for odd in [
            json!({"cnf": "abc"}),
            json!({"cnf": {"jkt": 5}}),
            json!({"cnf": {"jkt": ""}}),
        ] {
            let b = of(odd.clone());
            assert!(b.is_bound() && b.jkt.as_deref() == Some(""), "{odd}");
        }
        assert!(!of(json!({"cnf": {}})).is_bound());
    }
}
