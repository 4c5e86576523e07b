//! One test per error class: the exact kind and the exact `line:col`.

mod common;

use common::{check_fmt, diagnostics};
use omega_zgraph::{ErrorKind, Format, ManifestError, load};

#[track_caller]
fn check(source: &str, kind: ErrorKind, line: usize, column: usize) -> ManifestError {
    check_fmt(source, Format::Toml, kind, line, column)
}

const TWO: &str = "[brane.a]\nsubstrate = \"gaia\"\n[brane.b]\nsubstrate = \"gaia\"\n";

// ------------------------------------------------------------ syntax and shape

#[test]
fn syntax_error_toml() {
    let e = check("[brane.a]\nsubstrate = \n", ErrorKind::Syntax, 2, 13);
    assert!(e.message.starts_with("TOML syntax"), "{e}");
}

#[test]
fn unknown_key_with_suggestion() {
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\nreplica = 2\n",
        ErrorKind::UnknownKey,
        3,
        1,
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `replicas`?"));
    assert_eq!(
        e.to_string(),
        "test.zgraph:3:1: unknown key `replica` in brane `a`"
    );
}

#[test]
fn unknown_top_level_key() {
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\n[graf]\n",
        ErrorKind::UnknownKey,
        3,
        2,
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `graph`?"));
}

#[test]
fn wrong_type() {
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\nhttp = \"yes\"\n",
        ErrorKind::WrongType,
        3,
        8,
    );
    assert!(
        e.message.contains("expected a boolean, found a string"),
        "{e}"
    );
}

#[test]
fn missing_substrate() {
    check("[brane.a]\nimage = \"a:1\"\n", ErrorKind::MissingKey, 1, 8);
}

#[test]
fn empty_manifest() {
    check("", ErrorKind::NoBranes, 1, 1);
    check("[mesh]\nname = \"lab\"\n", ErrorKind::NoBranes, 1, 1);
}

// ------------------------------------------------------------ keywords

#[test]
fn unknown_substrate_lists_allowed() {
    let e = check(
        "[brane.a]\nsubstrate = \"cloud\"\n",
        ErrorKind::UnknownSubstrate,
        2,
        13,
    );
    let help = e.help.unwrap_or_default();
    assert!(help.contains("`gaia`, `biome`, `habitat`"), "{help}");
}

#[test]
fn unknown_capability() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\ncapability = \"fast\"\n",
        ErrorKind::UnknownCapability,
        3,
        14,
    );
}

#[test]
fn unknown_gpu() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\ncapability = \"frontier\"\ngpu = \"cuda\"\n",
        ErrorKind::UnknownGpu,
        4,
        7,
    );
}

#[test]
fn unknown_resolver_mode() {
    let src = "[brane.a]\nsubstrate = \"gaia\"\nhttp = true\n[resolver.public]\nhost = \"a.example.com\"\nmode = \"funnel\"\n";
    let e = check(src, ErrorKind::UnknownResolverMode, 6, 8);
    assert!(e.help.unwrap_or_default().contains("`tailscale-funnel`"));
}

// ------------------------------------------------------------ axis rules

#[test]
fn frontier_on_habitat() {
    let e = check(
        "[brane.a]\nsubstrate = \"habitat\"\ncapability = \"frontier\"\n",
        ErrorKind::FrontierOnHabitat,
        3,
        14,
    );
    assert!(e.message.contains("frontier never runs on habitat"));
}

#[test]
fn guest_without_frontier() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nguest = \"debian\"\n",
        ErrorKind::FrontierOnly,
        3,
        1,
    );
}

#[test]
fn gpu_passthrough_without_frontier() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\ngpu = \"passthrough\"\n",
        ErrorKind::FrontierOnly,
        3,
        7,
    );
}

#[test]
fn hosts_outside_peers_glob() {
    let src = "[brane.a]\nsubstrate = \"habitat\"\npeers = \"lab.lan/sensor-*\"\nhosts = [\"lab.lan/sensor-1\", \"lab.lan/nas-01\"]\n";
    check(src, ErrorKind::HostsPeersConflict, 4, 30);
}

// ------------------------------------------------------------ graph

#[test]
fn edge_to_unknown_brane() {
    let src = format!("{TWO}[graph]\nedges = [{{ from = \"a\", to = \"bb\", on = \"x\" }}]\n");
    let e = check(&src, ErrorKind::UnknownBrane, 6, 29);
    assert_eq!(e.help.as_deref(), Some("did you mean `b`?"));
}

#[test]
fn self_edge() {
    let src = format!(
        "{TWO}[graph]\nedges = [\n  {{ from = \"a\", to = \"b\", on = \"x\" }},\n  {{ from = \"b\", to = \"b\", on = \"x\" }},\n]\n"
    );
    check(&src, ErrorKind::SelfEdge, 8, 3);
}

#[test]
fn cycle_is_reported_at_the_closing_edge() {
    let src = "[brane.a]\nsubstrate = \"gaia\"\n[brane.b]\nsubstrate = \"gaia\"\n[brane.c]\nsubstrate = \"gaia\"\n[graph]\nedges = [\n  { from = \"a\", to = \"b\", on = \"x\" },\n  { from = \"b\", to = \"c\", on = \"x\" },\n  { from = \"c\", to = \"a\", on = \"x\" },\n]\n";
    let e = check(src, ErrorKind::Cycle, 11, 3);
    assert_eq!(e.message, "edges form a cycle: a -> b -> c -> a");
}

#[test]
fn duplicate_edge() {
    let src = format!(
        "{TWO}[graph]\nedges = [\n  {{ from = \"a\", to = \"b\", on = \"x\" }},\n  {{ from = \"a\", to = \"b\", on = \"x\" }},\n]\n"
    );
    check(&src, ErrorKind::DuplicateEdge, 8, 3);
}

#[test]
fn missing_edge_field() {
    let src = format!("{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\" }}]\n");
    check(&src, ErrorKind::MissingKey, 6, 10);
}

#[test]
fn event_without_producer() {
    let src = format!(
        "{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"raw.batch\" }}]\n[event.\"raw.bach\"]\n"
    );
    let e = check(&src, ErrorKind::EventWithoutProducer, 7, 8);
    assert_eq!(e.help.as_deref(), Some("did you mean `raw.batch`?"));
}

#[test]
fn invalid_event_type_on_edge() {
    let src =
        format!("{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"Raw..batch\" }}]\n");
    check(&src, ErrorKind::InvalidEventType, 6, 39);
}

#[test]
fn invalid_key_selector() {
    let src = format!(
        "{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"x\", key = \"sensor\" }}]\n"
    );
    check(&src, ErrorKind::InvalidKeySelector, 6, 50);
}

#[test]
fn schema_not_object() {
    let src = format!(
        "{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"x\" }}]\n[event.x]\nschema = \"object\"\n"
    );
    check(&src, ErrorKind::SchemaNotObject, 8, 10);
}

// ------------------------------------------------------------ resolvers

const HTTP_TWO: &str = "[brane.a]\nsubstrate = \"gaia\"\nhttp = true\n[brane.b]\nsubstrate = \"gaia\"\nhttp = true\n[brane.c]\nsubstrate = \"gaia\"\n";

#[test]
fn resolver_unknown_brane() {
    let src = format!(
        "{HTTP_TWO}[resolver.public]\nhost = \"a.example.com\"\nmode = \"ngrok\"\nbrane = \"d\"\n"
    );
    check(&src, ErrorKind::ResolverUnknownBrane, 12, 9);
}

#[test]
fn resolver_brane_not_http() {
    let src = format!(
        "{HTTP_TWO}[resolver.public]\nhost = \"a.example.com\"\nmode = \"ngrok\"\nbrane = \"c\"\n"
    );
    check(&src, ErrorKind::ResolverNotHttp, 12, 9);
}

#[test]
fn resolver_ambiguous() {
    let src = format!("{HTTP_TWO}[resolver.public]\nhost = \"a.example.com\"\nmode = \"ngrok\"\n");
    let e = check(&src, ErrorKind::ResolverAmbiguous, 9, 11);
    assert!(e.help.unwrap_or_default().contains("a, b"));
}

#[test]
fn resolver_brane_implicit_when_one_http() {
    let src = "[brane.api]\nsubstrate = \"gaia\"\nhttp = true\n[resolver.public]\nhost = \"a.example.com\"\nmode = \"cloudflared\"\n";
    let plan = load(src, "t", Format::Toml).expect("valid");
    assert_eq!(plan.resolvers()["public"].brane, "api");
}

#[test]
fn invalid_resolver_host() {
    let src = "[brane.api]\nsubstrate = \"gaia\"\nhttp = true\n[resolver.public]\nhost = \"-bad.example.com\"\nmode = \"netbird\"\n";
    check(src, ErrorKind::InvalidHostName, 5, 8);
}

// ------------------------------------------------------------ names and values

#[test]
fn invalid_node_name_in_hosts() {
    check(
        "[brane.a]\nsubstrate = \"habitat\"\nhosts = [\"NAS_01\"]\n",
        ErrorKind::InvalidNodeName,
        3,
        10,
    );
}

#[test]
fn replicas_negative() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nreplicas = -1\n",
        ErrorKind::ReplicasOutOfRange,
        3,
        12,
    );
}

#[test]
fn replicas_too_many() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nreplicas = 1025\n",
        ErrorKind::ReplicasOutOfRange,
        3,
        12,
    );
}

#[test]
fn replicas_bad_word() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nreplicas = \"many\"\n",
        ErrorKind::ReplicasOutOfRange,
        3,
        12,
    );
}

#[test]
fn invalid_brane_name() {
    check(
        "[brane.Ingest]\nsubstrate = \"gaia\"\n",
        ErrorKind::InvalidBraneName,
        1,
        8,
    );
}

#[test]
fn invalid_event_type_section() {
    let src = format!(
        "{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"x\" }}]\n[event.\"X\"]\n"
    );
    check(&src, ErrorKind::InvalidEventType, 7, 8);
}

#[test]
fn invalid_mesh_name() {
    check(
        "[mesh]\nname = \"My Lab\"\n[brane.a]\nsubstrate = \"gaia\"\n",
        ErrorKind::InvalidName,
        2,
        8,
    );
}

#[test]
fn invalid_peers_glob() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"lab.lan/[sensor\"\n",
        ErrorKind::InvalidGlob,
        3,
        9,
    );
}

#[test]
fn overlong_peers_glob_is_refused_before_it_is_compiled() {
    // ~90,000 `*` used to panic inside globset; anything over the bound is
    // refused with its length, long before the regex engine sees it.
    for n in [257, 90_000] {
        let src = format!(
            "[brane.a]\nsubstrate = \"gaia\"\npeers = \"{}\"\n",
            "*".repeat(n)
        );
        let e = check(&src, ErrorKind::InvalidGlob, 3, 9);
        assert!(e.message.contains("the longest allowed is 256"), "{e}");
    }
    let ok = format!(
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"{}\"\n",
        "*".repeat(256)
    );
    assert!(load(&ok, "t", Format::Toml).is_ok());
}

#[test]
fn a_plan_from_elsewhere_is_revalidated() {
    let plan = load(TWO, "t", Format::Toml).unwrap();
    assert_eq!(plan.revalidate(), Ok(()));
    // A plan deserialized from JSON is checked for shape only; revalidate
    // applies every manifest rule (here: the glob bound).
    let mut v: serde_json::Value = serde_json::from_str(&plan.canonical_json()).unwrap();
    v["branes"]["a"]["peers"] = serde_json::Value::String("*".repeat(90_000));
    let bad: omega_zgraph::Plan = serde_json::from_value(v).unwrap();
    let e = bad.revalidate().unwrap_err();
    assert!(e.contains("longest allowed"), "{e}");
}

#[test]
fn invalid_image() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nimage = \"Ingest\"\n",
        ErrorKind::InvalidImage,
        3,
        9,
    );
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nimage = \"bafkr4itooshort\"\n",
        ErrorKind::InvalidImage,
        3,
        9,
    );
}

#[test]
fn content_id_image_is_accepted() {
    let cid = format!("bafkr4i{}", "a".repeat(52));
    let src = format!("[brane.a]\nsubstrate = \"gaia\"\nimage = \"{cid}\"\n");
    let plan = load(&src, "t", Format::Toml).expect("valid");
    assert_eq!(
        plan.branes()["a"].image.as_ref().map(ToString::to_string),
        Some(cid)
    );
}

#[test]
fn invalid_memory_limit() {
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\n[brane.a.limits]\nmemory = \"12 parsecs\"\n",
        ErrorKind::InvalidLimit,
        4,
        10,
    );
    assert!(e.message.contains("12 parsecs"));
}

#[test]
fn zero_cpu_limit() {
    check(
        "[brane.a]\nsubstrate = \"gaia\"\nlimits = { cpu_ms = 0 }\n",
        ErrorKind::InvalidLimit,
        3,
        21,
    );
}

// ------------------------------------------------------------ many at once

#[test]
fn several_errors_reported_together() {
    let src = "\
[brane.ingest]
substrate = \"habitat\"
capability = \"frontier\"
replicas = 2000

[brane.store]
substrate = \"moon\"
replica = 1

[graph]
edges = [{ from = \"ingest\", to = \"stor\", on = \"raw.batch\" }]
";
    let d = diagnostics(src, Format::Toml);
    let got: Vec<_> = d
        .errors()
        .iter()
        .map(|e| (e.kind, e.line, e.column))
        .collect();
    assert_eq!(
        got,
        vec![
            (ErrorKind::FrontierOnHabitat, 3, 14),
            (ErrorKind::ReplicasOutOfRange, 4, 12),
            (ErrorKind::UnknownSubstrate, 7, 13),
            (ErrorKind::UnknownKey, 8, 1),
            (ErrorKind::UnknownBrane, 11, 34),
        ]
    );
    let text = d.to_string();
    assert!(
        text.starts_with("test.zgraph: 5 errors in manifest"),
        "{text}"
    );
}

#[test]
fn diagnostics_render_with_miette() {
    let d = diagnostics(
        "[brane.a]\nsubstrate = \"cloud\"\nreplica = 1\n",
        Format::Toml,
    );
    let mut out = String::new();
    miette::NarratableReportHandler::new()
        .render_report(&mut out, &d)
        .expect("render");
    assert!(out.contains("zgraph::unknown_substrate"), "{out}");
    assert!(out.contains("zgraph::unknown_key"), "{out}");
    assert!(out.contains("did you mean `replicas`?"), "{out}");
    assert!(out.contains("substrate = \"cloud\""), "{out}");
}

#[test]
fn every_code_is_unique_and_round_trips() {
    let mut codes = std::collections::HashSet::new();
    for kind in ErrorKind::ALL {
        assert!(codes.insert(kind.code()), "duplicate code {}", kind.code());
        assert_eq!(ErrorKind::from_code(kind.code()), Some(*kind));
    }
}

// ------------------------------------------------------------ JSON locations

#[test]
fn json_syntax_error() {
    check_fmt(
        "{\n  \"brane\": {,}\n}",
        Format::Json,
        ErrorKind::Syntax,
        2,
        13,
    );
}

#[test]
fn json_unknown_key() {
    let src = "{\n  \"brane\": {\n    \"a\": { \"substrate\": \"gaia\", \"replica\": 2 }\n  }\n}\n";
    check_fmt(src, Format::Json, ErrorKind::UnknownKey, 3, 33);
}

#[test]
fn json_frontier_on_habitat() {
    let src = "{\"brane\": {\"a\": {\"substrate\": \"habitat\",\n \"capability\": \"frontier\"}}}";
    check_fmt(src, Format::Json, ErrorKind::FrontierOnHabitat, 2, 16);
}

#[test]
fn json_duplicate_key() {
    let src = "{\"brane\": {\"a\": {\"substrate\": \"gaia\", \"substrate\": \"gaia\"}}}";
    check_fmt(src, Format::Json, ErrorKind::DuplicateKey, 1, 39);
}

#[test]
fn json_null_is_wrong_type() {
    let src = "{\"brane\": {\"a\": {\"substrate\": null}}}";
    check_fmt(src, Format::Json, ErrorKind::WrongType, 1, 31);
}

// ------------------------------------------------------------ YAML locations

#[test]
fn yaml_syntax_error() {
    check_fmt(
        "brane:\n  a: [unclosed\n",
        Format::Yaml,
        ErrorKind::Syntax,
        3,
        1,
    );
}

#[test]
fn yaml_unknown_key() {
    let src = "brane:\n  a:\n    substrate: gaia\n    replica: 2\n";
    let e = check_fmt(src, Format::Yaml, ErrorKind::UnknownKey, 4, 5);
    assert_eq!(e.help.as_deref(), Some("did you mean `replicas`?"));
}

#[test]
fn yaml_cycle() {
    let src = "brane:\n  a: {substrate: gaia}\n  b: {substrate: gaia}\ngraph:\n  edges:\n    - {from: a, to: b, on: x}\n    - {from: b, to: a, on: x}\n";
    let e = check_fmt(src, Format::Yaml, ErrorKind::Cycle, 7, 7);
    assert_eq!(e.message, "edges form a cycle: a -> b -> a");
}

#[test]
fn yaml_duplicate_key() {
    let src = "brane:\n  a:\n    substrate: gaia\n    substrate: biome\n";
    check_fmt(src, Format::Yaml, ErrorKind::DuplicateKey, 4, 5);
}

#[test]
fn yaml_aliases_are_refused() {
    let src = "brane:\n  a: &x {substrate: gaia}\n  b: *x\n";
    check_fmt(src, Format::Yaml, ErrorKind::Syntax, 3, 6);
}

#[test]
fn yaml_replicas_quoted_number_is_a_string() {
    let src = "brane:\n  a:\n    substrate: gaia\n    replicas: \"3\"\n";
    check_fmt(src, Format::Yaml, ErrorKind::ReplicasOutOfRange, 4, 15);
}
