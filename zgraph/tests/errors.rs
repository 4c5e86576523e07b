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
fn replicas_bad_word_is_a_type_error() {
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\nreplicas = \"many\"\n",
        ErrorKind::WrongType,
        3,
        12,
    );
    assert_eq!(
        e.message,
        "`replicas`: expected an integer or \"auto\", found the string `many`"
    );
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\nreplicas = \"autox\"\n",
        ErrorKind::WrongType,
        3,
        12,
    );
    assert!(e.message.contains("expected an integer or \"auto\""), "{e}");
    assert!(!e.message.contains("out of range"), "{e}");
    assert!(
        e.help
            .unwrap_or_default()
            .starts_with("did you mean `auto`?"),
        "suggests the keyword"
    );
}

#[test]
fn integers_beyond_64_bits_are_quoted_as_written() {
    for (format, src, line, column) in [
        (
            Format::Toml,
            "[brane.a]\nsubstrate = \"gaia\"\nreplicas = 18446744073709551616\n",
            3,
            12,
        ),
        (
            Format::Toml,
            "[brane.a]\nsubstrate = \"gaia\"\nreplicas = -18_446_744_073_709_551_616\n",
            3,
            12,
        ),
        (
            Format::Json,
            "{\"brane\": {\"a\": {\"substrate\": \"gaia\", \"replicas\": 18446744073709551616}}}",
            1,
            51,
        ),
        (
            Format::Yaml,
            "brane:\n  a:\n    substrate: gaia\n    replicas: 18446744073709551616\n",
            4,
            15,
        ),
    ] {
        let e = check_fmt(src, format, ErrorKind::ReplicasOutOfRange, line, column);
        let written = &src[e.span.0..e.span.1];
        assert!(written.ends_with("616"), "{written}");
        assert_eq!(e.message, format!("replicas {written} is out of range"));
        assert!(!e.message.contains("9223372036854775807"), "{e}");
    }
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\nlimits = { cpu_ms = 99999999999999999999 }\n",
        ErrorKind::InvalidLimit,
        3,
        21,
    );
    assert!(e.message.contains("99999999999999999999"), "{e}");
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
        let e = check(&src, ErrorKind::TooLong, 3, 9);
        assert!(e.message.starts_with("`peers` is"), "{e}");
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
    let e = check_fmt(src, Format::Yaml, ErrorKind::WrongType, 4, 15);
    assert!(
        e.help.unwrap_or_default().contains("unquoted"),
        "says how to fix"
    );
}

// ------------------------------------------------------------ bounds

use omega_zgraph::bounds::{MAX_BRANES, MAX_EDGES, MAX_ENTRIES, MAX_KEY_BYTES, MAX_MANIFEST_BYTES};
use omega_zgraph::load_bytes;

#[test]
fn every_name_and_glob_is_bounded_with_the_key_named() {
    let long = |n: usize| "a".repeat(n);
    let cases = [
        (
            format!("[brane.{}]\nsubstrate = \"gaia\"\n", long(64)),
            1,
            8,
            "a brane name is 64 bytes long, the longest allowed is 63",
        ),
        (
            format!(
                "[mesh]\nname = \"{}\"\n[brane.a]\nsubstrate = \"gaia\"\n",
                long(64)
            ),
            2,
            8,
            "`mesh.name` is 64",
        ),
        (
            format!(
                "{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"{}\" }}]\n",
                long(256)
            ),
            6,
            39,
            "edge `on` is 256",
        ),
        (
            format!(
                "{TWO}[graph]\nedges = [{{ from = \"{}\", to = \"b\", on = \"x\" }}]\n",
                long(64)
            ),
            6,
            19,
            "edge `from` is 64",
        ),
        (
            format!(
                "{TWO}[graph]\nedges = [{{ from = \"a\", to = \"b\", on = \"x\", key = \".{}\" }}]\n",
                long(255)
            ),
            6,
            50,
            "edge `key` is 256",
        ),
        (
            format!(
                "[brane.a]\nsubstrate = \"gaia\"\nhosts = [\"{}\"]\n",
                long(254)
            ),
            3,
            10,
            "a `hosts` entry is 254",
        ),
        (
            format!(
                "[brane.a]\nsubstrate = \"gaia\"\nimage = \"a:{}\"\n",
                long(400)
            ),
            3,
            9,
            "`image` is 402",
        ),
        (
            format!(
                "[brane.a]\nsubstrate = \"gaia\"\ngrants = {{ http = [\"{}\"] }}\n",
                long(300)
            ),
            3,
            20,
            "a `grants.http` entry is 300",
        ),
        (
            format!(
                "[brane.a]\nsubstrate = \"gaia\"\ngrants = {{ dirs = [{{ host = \"/{}\", guest = \"/d\" }}] }}\n",
                long(4096)
            ),
            3,
            29,
            "directory grant `host` is 4097",
        ),
        (
            format!(
                "[brane.a]\nsubstrate = \"gaia\"\nhttp = true\n[resolver.{}]\nhost = \"a.example.com\"\nmode = \"ngrok\"\n",
                long(64)
            ),
            4,
            11,
            "a resolver name is 64",
        ),
        (
            format!(
                "[brane.a]\nsubstrate = \"gaia\"\n[brane.a.config]\n{} = \"v\"\n",
                long(MAX_KEY_BYTES + 1)
            ),
            4,
            1,
            "key `aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…` is 257 bytes long, the longest allowed is 256",
        ),
    ];
    for (src, line, column, message) in cases {
        let e = check(&src, ErrorKind::TooLong, line, column);
        assert!(e.message.starts_with(message), "{e}");
        assert!(
            e.message.len() < 200,
            "the message does not quote the value: {e}"
        );
    }
}

#[test]
fn collections_are_bounded_at_the_first_entry_over() {
    // Zero-padded names: TOML tables come in name order, which is then
    // also source order.
    let branes = |n: usize| -> String {
        (0..n)
            .map(|i| format!("[brane.b{i:04}]\nsubstrate = \"gaia\"\n"))
            .collect()
    };
    assert!(load(&branes(MAX_BRANES), "t", Format::Toml).is_ok());
    let e = check(
        &branes(MAX_BRANES + 1),
        ErrorKind::TooMany,
        2 * MAX_BRANES + 1,
        8,
    );
    assert_eq!(e.message, "1025 branes, the most allowed is 1024");

    let mut edges = format!("{}[graph]\nedges = [\n", branes(100));
    for i in 0..=MAX_EDGES {
        edges.push_str(&format!(
            "{{ from = \"b0000\", to = \"b0001\", on = \"e{i}\" }},\n"
        ));
    }
    edges.push_str("]\n");
    let e = check(&edges, ErrorKind::TooMany, 200 + 3 + MAX_EDGES, 1);
    assert_eq!(e.message, "4097 edges, the most allowed is 4096");

    let hosts: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("\"n{i}\"")).collect();
    let src = format!(
        "[brane.a]\nsubstrate = \"gaia\"\nhosts = [{}]\n",
        hosts.join(",")
    );
    let column = src
        .lines()
        .nth(2)
        .and_then(|l| l.find("\"n1024\""))
        .unwrap_or_default()
        + 1;
    let e = check(&src, ErrorKind::TooMany, 3, column);
    assert_eq!(e.message, "1025 `hosts` entries, the most allowed is 1024");
}

#[test]
fn a_manifest_over_the_byte_limit_is_refused_before_parsing() {
    let head = "[brane.a]\nsubstrate = \"gaia\"\n";
    let fill = |total: usize| format!("{head}#{}\n", "x".repeat(total - head.len() - 2));
    let at_limit = fill(MAX_MANIFEST_BYTES);
    assert_eq!(at_limit.len(), MAX_MANIFEST_BYTES);
    assert!(load(&at_limit, "t", Format::Toml).is_ok());
    assert!(load_bytes(at_limit.as_bytes(), "t", Format::Toml).is_ok());

    // Over the limit, even text that is not a manifest at all is refused
    // for its size alone.
    let over = format!("{}[[[ not toml", fill(MAX_MANIFEST_BYTES));
    for format in Format::ALL {
        let e = check_fmt(&over, format, ErrorKind::TooLarge, 1, 1);
        assert!(e.message.contains("1048576 bytes"), "{e}");
        let d = load_bytes(over.as_bytes(), "t", format).unwrap_err();
        assert_eq!(d.errors()[0].kind, ErrorKind::TooLarge);
    }
}

#[test]
fn a_long_chain_listed_in_reverse_is_checked_and_its_cycle_named() {
    // The longest chain the bounds allow, edges listed last to first (this
    // order made cycle detection quadratic), then one edge back to the start.
    let n = MAX_BRANES - 1;
    let mut src: String = (0..=n)
        .map(|i| format!("[brane.b{i}]\nsubstrate = \"gaia\"\n"))
        .collect();
    src.push_str("[graph]\nedges = [\n");
    for i in (0..n).rev() {
        src.push_str(&format!(
            "{{ from = \"b{i}\", to = \"b{}\", on = \"x\" }},\n",
            i + 1
        ));
    }
    let acyclic = format!("{src}]\n");
    let plan = load(&acyclic, "t", Format::Toml).expect("a chain is a DAG");
    assert_eq!(plan.edges().len(), n);

    src.push_str(&format!(
        "{{ from = \"b{n}\", to = \"b0\", on = \"x\" }},\n]\n"
    ));
    let e = check(&src, ErrorKind::Cycle, 2 * (n + 1) + 2 + n + 1, 1);
    assert_eq!(
        e.message,
        "edges form a cycle: b0 -> b1 -> b2 -> b3 -> b4 -> b5 -> b6 -> b7 -> … (1009 more) … -> b1017 -> b1018 -> b1019 -> b1020 -> b1021 -> b1022 -> b1023 -> b0"
    );
}

#[test]
fn each_cycle_is_named_once_the_shortest_way_round() {
    let src = "[brane.a]\nsubstrate = \"gaia\"\n[brane.b]\nsubstrate = \"gaia\"\n[brane.c]\nsubstrate = \"gaia\"\n[brane.d]\nsubstrate = \"gaia\"\n[brane.e]\nsubstrate = \"gaia\"\n[graph]\nedges = [\n  { from = \"a\", to = \"b\", on = \"x\" },\n  { from = \"d\", to = \"e\", on = \"x\" },\n  { from = \"b\", to = \"c\", on = \"x\" },\n  { from = \"c\", to = \"a\", on = \"x\" },\n  { from = \"e\", to = \"d\", on = \"x\" },\n  { from = \"a\", to = \"c\", on = \"y\" },\n]\n";
    let d = diagnostics(src, Format::Toml);
    let got: Vec<_> = d
        .errors()
        .iter()
        .map(|e| (e.kind, e.line, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (ErrorKind::Cycle, 17, "edges form a cycle: d -> e -> d"),
            (ErrorKind::Cycle, 18, "edges form a cycle: c -> a -> c"),
        ]
    );
}

// ------------------------------------------------------------ what reaches a terminal

/// Whether `text` holds anything a terminal would act on (newlines aside).
fn has_controls(text: &str) -> bool {
    text.chars().any(|c| c.is_control() && c != '\n')
}

#[test]
fn control_characters_are_refused_in_names_globs_and_paths() {
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"lab\\u001b]0;owned\\u0007*\"\n",
        ErrorKind::ControlCharacter,
        3,
        9,
    );
    assert_eq!(
        e.message,
        "`peers` glob `lab\\u{1b}]0;owned\\u{7}*` contains the control character U+001B"
    );
    check(
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"lab\\u202e*\"\n",
        ErrorKind::ControlCharacter,
        3,
        9,
    );
    check(
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"läb/*\"\n",
        ErrorKind::InvalidGlob,
        3,
        9,
    );
    let e = check(
        "[brane.a]\nsubstrate = \"gaia\"\n[brane.a.config]\n\"x\\u001b[2J\" = \"v\"\n",
        ErrorKind::ControlCharacter,
        4,
        1,
    );
    assert!(!has_controls(&e.message), "{e}");
    check(
        "[brane.a]\nsubstrate = \"gaia\"\ngrants = { dirs = [{ host = \"/srv\\n\", guest = \"/d\" }] }\n",
        ErrorKind::ControlCharacter,
        3,
        29,
    );
    // Free-form values may hold newlines (a certificate in `config`).
    let ok = "[brane.a]\nsubstrate = \"gaia\"\nconfig = { pem = \"-----BEGIN-----\\nAAAA\\n\" }\n";
    assert!(load(ok, "t", Format::Toml).is_ok());
}

#[test]
fn messages_and_snippets_escape_control_characters() {
    // Raw control characters: not TOML, so a syntax error, whose snippet
    // shows the line; and one in an unknown key of a YAML manifest.
    let toml =
        "[brane.a]\nsubstrate = \"gaia\"\npeers = \"\x1b]0;owned\x07\x1b[2J\"\nreplica = 1\n";
    let yaml = "brane:\n  a:\n    substrate: gaia\n    \"x\\e[2J\": 1\n    \u{9b}31m: 2\n";
    for (src, format) in [(toml, Format::Toml), (yaml, Format::Yaml)] {
        let d = load(src, "evil\x1b[2J.zgraph", format).unwrap_err();
        let text = d.to_string();
        assert!(!has_controls(&text), "{text:?}");
        assert!(text.starts_with("evil\\u{1b}[2J.zgraph: "), "{text}");
        let mut out = String::new();
        miette::NarratableReportHandler::new()
            .render_report(&mut out, &d)
            .expect("render");
        assert!(!has_controls(&out), "{out:?}");
        assert!(out.contains("\\u{1b}"), "{out}");
    }
}

#[test]
fn escaped_snippets_keep_the_label_on_the_right_text() {
    // Control characters before the error on its line grow when escaped;
    // the label must move with the text it points at.
    let src = "[brane.a]\nsubstrate = \"gaia\"\nconfig = { k = \"\u{85}\u{85}\", n = 0 }\n";
    let e = check(src, ErrorKind::WrongType, 3, 26);
    assert_eq!(&src[e.span.0..e.span.1], "0");
    let mut out = String::new();
    miette::NarratableReportHandler::new()
        .render_report(&mut out, &diagnostics(src, Format::Toml))
        .expect("render");
    let shown = r#"config = { k = "\u{85}\u{85}", n = 0 }"#;
    assert!(out.contains(&format!("snippet line 3: {shown}")), "{out}");
    let column = shown.find("0 }").unwrap_or_default() + 1;
    assert!(
        out.contains(&format!("label at line 3, column {column}: here")),
        "{out}"
    );
}

// ------------------------------------------------------------ encodings

#[test]
fn invalid_utf8_is_located_by_byte_and_line_and_column() {
    let src = b"[brane.a]\nsubstrate = \"ga\xffia\"\n";
    for format in Format::ALL {
        let d = load_bytes(src, "t.zgraph", format).unwrap_err();
        let e = &d.errors()[0];
        assert_eq!(
            (e.kind, e.line, e.column),
            (ErrorKind::Syntax, 2, 16),
            "{e}"
        );
        assert!(e.message.contains("byte 25 (0xff)"), "{e}");
        assert_eq!(e.span.0, 25);
    }
}

#[test]
fn a_byte_order_mark_is_accepted_in_every_syntax() {
    let sources = [
        (Format::Toml, "[brane.a]\nsubstrate = \"gaia\"\n"),
        (
            Format::Json,
            "{\"brane\": {\"a\": {\"substrate\": \"gaia\"}}}",
        ),
        (Format::Yaml, "brane:\n  a:\n    substrate: gaia\n"),
    ];
    for (format, src) in sources {
        let plain = load(src, "t", format).expect("valid");
        let bom = format!("\u{feff}{src}");
        let with_bom = load(&bom, "t", format).unwrap_or_else(|d| panic!("{format}: {d}"));
        assert_eq!(plain.hash(), with_bom.hash());
        assert!(load_bytes(bom.as_bytes(), "t", format).is_ok());
    }
    // Columns on the first line do not count the mark.
    let e = check_fmt(
        "\u{feff}{\"brane\": {\"a\": {\"substrate\": \"moon\"}}}",
        Format::Json,
        ErrorKind::UnknownSubstrate,
        1,
        31,
    );
    assert_eq!(e.span.0, 33);
}

#[test]
fn too_many_branes_is_one_error_not_one_per_edge() {
    // Edges to the branes past the bound are not reported as naming
    // unknown branes: the count is checked before anything else.
    let mut src: String = (0..=MAX_BRANES)
        .map(|i| format!("[brane.b{i:04}]\nsubstrate = \"gaia\"\n"))
        .collect();
    src.push_str("[graph]\nedges = [\n");
    for i in 0..MAX_BRANES {
        src.push_str(&format!(
            "{{ from = \"b{i:04}\", to = \"b{:04}\", on = \"x\" }},\n",
            i + 1
        ));
    }
    src.push_str("]\n");
    let e = check(&src, ErrorKind::TooMany, 2 * MAX_BRANES + 1, 8);
    assert_eq!(e.message, "1025 branes, the most allowed is 1024");
}
