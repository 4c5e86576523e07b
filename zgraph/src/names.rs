//! The lexical rules for names, sizes, images and selectors.
//!
//! Each function returns `Err(reason)` with a short human explanation.

use crate::bounds::{MAX_BRANE_NAME, MAX_DNS_NAME, MAX_EVENT_TYPE, MAX_PEERS_GLOB};
use crate::error::is_unsafe;
use crate::plan::ImageRef;

/// Brane names (also mesh and resolver names): `[a-z][a-z0-9-]{0,62}`.
pub(crate) fn check_brane_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("it is empty".into()),
        Some(c) if !c.is_ascii_lowercase() => {
            return Err("it must start with a lowercase letter `a`-`z`".into());
        }
        _ => {}
    }
    if s.len() > MAX_BRANE_NAME {
        return Err(format!("it is longer than {MAX_BRANE_NAME} characters"));
    }
    if let Some(c) = chars.find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-')) {
        return Err(format!(
            "`{c}` is not allowed (only `a`-`z`, `0`-`9` and `-`)"
        ));
    }
    Ok(())
}

/// Event types: dot-separated non-empty segments of `[a-z0-9_-]`, at most
/// 255 characters (`raw.batch`, `model.checkpoint`).
pub(crate) fn check_event_type(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > MAX_EVENT_TYPE {
        return Err(format!("it is longer than {MAX_EVENT_TYPE} characters"));
    }
    for seg in s.split('.') {
        if seg.is_empty() {
            return Err("it has an empty segment (`..`, or a leading or trailing `.`)".into());
        }
        if let Some(c) = seg
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        {
            return Err(format!(
                "`{c}` is not allowed (segments use `a`-`z`, `0`-`9`, `_`, `-`)"
            ));
        }
    }
    Ok(())
}

/// DNS names: dot-separated labels of 1–63 characters of `[a-z0-9-]`, not
/// starting or ending with `-`; at most 253 characters in total.
pub(crate) fn check_dns_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > MAX_DNS_NAME {
        return Err(format!("it is longer than {MAX_DNS_NAME} characters"));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("it has an empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label `{label}` is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-'))
        {
            return Err(format!(
                "`{c}` is not allowed (labels use `a`-`z`, `0`-`9`, `-`)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label `{label}` starts or ends with `-`"));
        }
    }
    Ok(())
}

/// Node names: an optional DNS-name prefix and `/`, then a DNS name
/// (`nas-01`, `lab.lan/nas-01`); at most 253 characters in total.
pub(crate) fn check_node_name(s: &str) -> Result<(), String> {
    if s.len() > MAX_DNS_NAME {
        return Err(format!("it is longer than {MAX_DNS_NAME} characters"));
    }
    match s.split_once('/') {
        Some((prefix, host)) => {
            check_dns_name(prefix).map_err(|e| format!("prefix `{prefix}`: {e}"))?;
            if host.contains('/') {
                return Err("it has more than one `/`".into());
            }
            check_dns_name(host).map_err(|e| format!("host `{host}`: {e}"))
        }
        None => check_dns_name(s),
    }
}

/// Compile a `peers` glob: `*` and `?` do not cross `/`; `**` does.
/// Node names are ASCII, so a glob is printable ASCII too.
pub(crate) fn compile_glob(s: &str) -> Result<globset::GlobMatcher, String> {
    if s.is_empty() {
        return Err("the glob is empty".into());
    }
    if s.len() > MAX_PEERS_GLOB {
        return Err(format!(
            "it is {} bytes long, the longest allowed is {MAX_PEERS_GLOB}",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| !matches!(c, ' '..='~')) {
        let what = if is_unsafe(c) { "control " } else { "" };
        return Err(format!(
            "it contains the {what}character U+{:04X}; node names, and so globs, are printable ASCII",
            u32::from(c)
        ));
    }
    let glob = globset::GlobBuilder::new(s)
        .literal_separator(true)
        .build()
        .map_err(|e| e.kind().to_string())?;
    // `compile_matcher` panics when the regex engine refuses the pattern;
    // the length bound above keeps every glob far below that size, and this
    // turns a refusal it did not foresee into an error instead of a crash.
    std::panic::catch_unwind(|| glob.compile_matcher())
        .map_err(|_| "the glob is too complex to compile".to_owned())
}

/// Length of the text form of a CIDv1 raw BLAKE3 id: `b` + base32 of 36 bytes.
const CID_TEXT_LEN: usize = 59;

/// Images: `name:tag` or a BLAKE3 content id (`bafkr4i…`, 59 characters of
/// lowercase base32).
pub(crate) fn parse_image(s: &str) -> Result<ImageRef, String> {
    if s.starts_with("bafkr4i") {
        if s.len() != CID_TEXT_LEN {
            return Err(format!(
                "a BLAKE3 content id is {CID_TEXT_LEN} characters, this one is {}",
                s.len()
            ));
        }
        if let Some(c) = s.chars().find(|c| !matches!(c, 'a'..='z' | '2'..='7')) {
            return Err(format!("`{c}` is not base32 (`a`-`z`, `2`-`7`)"));
        }
        return Ok(ImageRef::Content(s.to_owned()));
    }
    let Some((name, tag)) = s.rsplit_once(':') else {
        return Err("expected `name:tag` or a content id starting with `bafkr4i`".into());
    };
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-'));
    if !name_ok {
        return Err(format!(
            "image name `{name}` must be lowercase `a`-`z`, `0`-`9`, `.`, `_`, `/`, `-`"
        ));
    }
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !tag_ok {
        return Err(format!(
            "tag `{tag}` must be 1-128 characters of `A`-`Z`, `a`-`z`, `0`-`9`, `.`, `_`, `-`"
        ));
    }
    Ok(ImageRef::Tagged {
        name: name.to_owned(),
        tag: tag.to_owned(),
    })
}

/// Sizes: an integer and an optional unit, spaces allowed between:
/// `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000), `KiB`/`MiB`/`GiB`/`TiB`
/// (powers of 1024). Must be at least one byte.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    let unit = unit.trim_start();
    let bad = || {
        format!(
            "`{s}` is not a size (expected e.g. `128MiB`, `2GB`, `4096`; units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{s}` does not fit in 64 bits"))?;
    if bytes == 0 {
        return Err("a size of zero bytes".into());
    }
    Ok(bytes)
}

/// Routing key selectors: one or more `.field` steps, fields of
/// `[A-Za-z_][A-Za-z0-9_-]*` (`.sensor`, `.meta.region`).
pub(crate) fn check_key_selector(s: &str) -> Result<(), String> {
    let Some(rest) = s.strip_prefix('.') else {
        return Err("a key selector starts with `.` (like `.sensor`)".into());
    };
    for field in rest.split('.') {
        let ok = field
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
        if !ok {
            return Err(format!(
                "`{field}` is not a field name (`[A-Za-z_][A-Za-z0-9_-]*`)"
            ));
        }
    }
    Ok(())
}

/// The closest candidate to `name`, if it is close enough to suggest.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// A compiled `peers` glob over node names, with the manifest's rule: `*`
/// and `?` do not cross `/`; `**` does. Placement uses it so that a node
/// matches at run time exactly when the validator would say it matches.
#[derive(Debug, Clone)]
pub struct PeersGlob(globset::GlobMatcher);

impl PeersGlob {
    /// Compiles `glob`, or says why it is not a valid `peers` glob.
    pub fn new(glob: &str) -> Result<Self, String> {
        compile_glob(glob).map(Self)
    }

    /// Whether `node_name` matches.
    pub fn is_match(&self, node_name: &str) -> bool {
        self.0.is_match(node_name)
    }
}
