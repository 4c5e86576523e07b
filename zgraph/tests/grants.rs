//! `[brane.NAME.grants]`: valid grants in every syntax, and one test per
//! invalid class with the exact kind and `line:col`.

mod common;

use common::check_fmt;
use omega_zgraph::{DirGrant, ErrorKind, Format, ManifestError, Plan, load};

const TOML: &str = r#"[brane.archive]
substrate = "habitat"

[brane.archive.grants]
dirs = [
  { host = "/srv/archive", guest = "/archive", mode = "rw" },
  { host = "/etc/ssl", guest = "/ssl" },
]
env = { LOG_FORMAT = "json", "A.B" = "x y" }
http = ["api.example.com", "127.0.0.1:8080", "[::1]:80", "api.example.com"]
clocks = true
"#;

const JSON: &str = r#"{ "brane": { "archive": { "substrate": "habitat", "grants": {
  "clocks": true,
  "http": ["127.0.0.1:8080", "api.example.com", "[::1]:80"],
  "env": { "A.B": "x y", "LOG_FORMAT": "json" },
  "dirs": [
    { "guest": "/archive", "host": "/srv/archive", "mode": "rw" },
    { "host": "/etc/ssl", "guest": "/ssl", "mode": "ro" }
  ] } } } }
"#;

const YAML: &str = r#"brane:
  archive:
    grants:
      dirs:
        - host: /srv/archive
          guest: /archive
          mode: rw
        - { host: /etc/ssl, guest: /ssl }
      env:
        LOG_FORMAT: json
        A.B: x y
      http: [api.example.com, "127.0.0.1:8080", "[::1]:80"]
      clocks: true
    substrate: habitat
"#;

fn plan(source: &str, format: Format) -> Plan {
    load(source, "test.zgraph", format).unwrap_or_else(|d| panic!("{d}"))
}

#[test]
fn grants_load_in_every_syntax_with_the_same_hash() {
    let toml = plan(TOML, Format::Toml);
    let json = plan(JSON, Format::Json);
    let yaml = plan(YAML, Format::Yaml);
    assert_eq!(toml.hash(), json.hash());
    assert_eq!(toml.hash(), yaml.hash());
    let g = &toml.brane("archive").unwrap().grants;
    assert_eq!(
        g.dirs,
        vec![
            DirGrant {
                host: "/srv/archive".into(),
                guest: "/archive".into(),
                writable: true
            },
            DirGrant {
                host: "/etc/ssl".into(),
                guest: "/ssl".into(),
                writable: false
            },
        ]
    );
    assert_eq!(g.env["LOG_FORMAT"], "json");
    assert_eq!(g.env["A.B"], "x y");
    assert_eq!(g.http, ["127.0.0.1:8080", "[::1]:80", "api.example.com"]);
    assert!(g.clocks);
    assert!(toml.canonical_json().contains(r#""grants":{"clocks":true,"dirs":[{"guest":"/archive","host":"/srv/archive","writable":true}"#));
    for format in Format::ALL {
        let again = plan(&toml.to_format(format), format);
        assert_eq!(again, toml, "{format:?}");
        assert_eq!(again.hash(), toml.hash());
    }
}

#[test]
fn no_grants_grant_nothing_and_do_not_change_the_hash() {
    let bare = plan("[brane.a]\nsubstrate = \"gaia\"\n", Format::Toml);
    let empty = plan(
        "[brane.a]\nsubstrate = \"gaia\"\n[brane.a.grants]\nclocks = false\ndirs = []\n",
        Format::Toml,
    );
    assert!(bare.brane("a").unwrap().grants.is_empty());
    assert_eq!(bare.hash(), empty.hash());
    assert!(!bare.canonical_json().contains("grants"));
    assert!(!bare.to_format(Format::Toml).contains("grants"));
}

// ------------------------------------------------------------ errors

const HEAD: &str = "[brane.a]\nsubstrate = \"gaia\"\n[brane.a.grants]\n";

#[track_caller]
fn check(body: &str, kind: ErrorKind, line: usize, column: usize) -> ManifestError {
    check_fmt(&format!("{HEAD}{body}"), Format::Toml, kind, line, column)
}

#[test]
fn unknown_grant_key_with_suggestion() {
    let e = check("clock = true\n", ErrorKind::UnknownKey, 4, 1);
    assert_eq!(e.help.as_deref(), Some("did you mean `clocks`?"));
}

#[test]
fn unknown_directory_grant_key_with_suggestion() {
    let e = check(
        "dirs = [{ host = \"/a\", guest = \"/b\", mod = \"rw\" }]\n",
        ErrorKind::UnknownKey,
        4,
        38,
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `mode`?"));
}

#[test]
fn grants_must_be_a_table() {
    check_fmt(
        "[brane.a]\nsubstrate = \"gaia\"\ngrants = [\"all\"]\n",
        Format::Toml,
        ErrorKind::WrongType,
        3,
        10,
    );
}

#[test]
fn wrong_types_in_grants() {
    check("clocks = \"yes\"\n", ErrorKind::WrongType, 4, 10);
    check("env = { A = 1 }\n", ErrorKind::WrongType, 4, 13);
    check("http = \"api.example.com\"\n", ErrorKind::WrongType, 4, 8);
    check("http = [80]\n", ErrorKind::WrongType, 4, 9);
    check("dirs = { host = \"/a\" }\n", ErrorKind::WrongType, 4, 8);
    check(
        "dirs = [{ host = 1, guest = \"/b\" }]\n",
        ErrorKind::WrongType,
        4,
        18,
    );
}

#[test]
fn directory_grant_needs_host_and_guest() {
    let e = check("dirs = [{ host = \"/a\" }]\n", ErrorKind::MissingKey, 4, 9);
    assert_eq!(e.message, "this directory grant has no `guest`");
}

#[test]
fn relative_host_path_is_refused() {
    let e = check(
        "dirs = [{ host = \"data\", guest = \"/data\" }]\n",
        ErrorKind::InvalidGrant,
        4,
        18,
    );
    assert_eq!(
        e.message,
        "directory grant `host` `data` is not an absolute path"
    );
}

#[test]
fn relative_guest_path_is_refused() {
    check(
        "dirs = [{ host = \"/srv/data\", guest = \"data\" }]\n",
        ErrorKind::InvalidGrant,
        4,
        39,
    );
}

#[test]
fn unknown_mode_is_refused() {
    let e = check(
        "dirs = [{ host = \"/a\", guest = \"/b\", mode = \"wo\" }]\n",
        ErrorKind::InvalidGrant,
        4,
        45,
    );
    assert_eq!(e.message, "unknown directory grant mode `wo`");
}

#[test]
fn duplicate_guest_path_is_refused() {
    check(
        "dirs = [\n  { host = \"/a\", guest = \"/d\" },\n  { host = \"/b\", guest = \"/d\" },\n]\n",
        ErrorKind::InvalidGrant,
        6,
        3,
    );
}

#[test]
fn bad_http_hosts_are_refused() {
    check(
        "http = [\"api.example.com:0\"]\n",
        ErrorKind::InvalidGrant,
        4,
        9,
    );
    check(
        "http = [\"https://api.example.com\"]\n",
        ErrorKind::InvalidGrant,
        4,
        9,
    );
    check(
        "http = [\"ok.example.com\", \"Bad_Host\"]\n",
        ErrorKind::InvalidGrant,
        4,
        27,
    );
    check("http = [\"::1\"]\n", ErrorKind::InvalidGrant, 4, 9);
}

#[test]
fn bad_env_names_are_refused() {
    check("env = { \"A=B\" = \"x\" }\n", ErrorKind::InvalidGrant, 4, 9);
    check("env = { \"\" = \"x\" }\n", ErrorKind::InvalidGrant, 4, 9);
}

#[test]
fn grant_errors_are_located_in_json() {
    check_fmt(
        "{ \"brane\": { \"a\": { \"substrate\": \"gaia\",\n  \"grants\": { \"dirs\": [{ \"host\": \"rel\", \"guest\": \"/g\" }] } } } }\n",
        Format::Json,
        ErrorKind::InvalidGrant,
        2,
        34,
    );
}

#[test]
fn grant_errors_are_located_in_yaml() {
    check_fmt(
        "brane:\n  a:\n    substrate: gaia\n    grants:\n      http: [ok.example.com]\n      clocks: \"true\"\n",
        Format::Yaml,
        ErrorKind::WrongType,
        6,
        15,
    );
    check_fmt(
        "brane:\n  a:\n    substrate: gaia\n    grants:\n      dirs:\n        - host: /a\n          guest: /b\n          mode: rx\n",
        Format::Yaml,
        ErrorKind::InvalidGrant,
        8,
        17,
    );
}

// ------------------------------------------------------------ call grants

const CALLS: &str = r#"[brane.web]
substrate = "gaia"
http = true
image = "web:1"
[brane.web.grants]
call = ["api", "billing/invoices", "api"]

[brane.api]
substrate = "gaia"
http = true
image = "api:1"

[resolver.public]
host = "demo.example.com"
mode = "ngrok"
brane = "web"
"#;

#[test]
fn call_grants_name_branes_here_or_in_another_manifest() {
    let p = plan(CALLS, Format::Toml);
    assert_eq!(
        p.brane("web").unwrap().grants.call,
        ["api", "billing/invoices"]
    );
    for format in Format::ALL {
        let again = plan(&p.to_format(format), format);
        assert_eq!(again, p, "{format:?}");
    }
}

#[test]
fn a_call_to_an_undeclared_brane_is_refused_with_a_suggestion() {
    let source = CALLS.replace("call = [\"api\",", "call = [\"apj\",");
    let e = check_fmt(&source, Format::Toml, ErrorKind::InvalidGrant, 6, 9);
    assert_eq!(e.message, "`grants.call` names unknown brane `apj`");
    assert_eq!(e.help.as_deref(), Some("did you mean `api`?"));
}

#[test]
fn a_call_to_a_brane_without_http_is_refused() {
    let source = CALLS
        .replace("http = true\nimage = \"api:1\"", "image = \"api:1\"")
        .replace(", \"api\"]", "]");
    let e = check_fmt(&source, Format::Toml, ErrorKind::InvalidGrant, 6, 9);
    assert_eq!(
        e.message,
        "`grants.call` names brane `api`, which does not serve HTTP"
    );
}

#[test]
fn malformed_call_entries_are_refused() {
    check("call = \"api\"\n", ErrorKind::WrongType, 4, 8);
    check("call = [\"Api\"]\n", ErrorKind::InvalidGrant, 4, 9);
    check("call = [\"a/b/c\"]\n", ErrorKind::InvalidGrant, 4, 9);
    check("call = [\"/b\"]\n", ErrorKind::InvalidGrant, 4, 9);
}
