use super::*;

/// A small valid catalog that tests edit to provoke one problem at a time.
const BASE: &str = r#"
[[regions]]
id = "a"
pair = "b"

[[regions]]
id = "b"
pair = "a"

[[nodes]]
id = "a-idx"
region = "a"
kind = "index"
addr = "http://127.0.0.1:1"

[[nodes]]
id = "b-idx"
region = "b"
kind = "index"
addr = "http://127.0.0.1:2"

[[nodes]]
id = "a-model"
region = "a"
kind = "model"
addr = "http://127.0.0.1:3"

[[nodes]]
id = "a-router"
region = "a"
kind = "router"
addr = "http://127.0.0.1:4"

[[tenants]]
id = "t1"
home = "a"
active_active = true
api_key_sha256 = ["HASH_T1"]
model_replicas = ["a-model"]

[tenants.shards]
0 = ["a-idx", "b-idx"]
"#;

fn base() -> String {
    BASE.replace("HASH_T1", &hash_key("key-t1"))
}

fn problems(text: &str) -> Vec<String> {
    match Catalog::parse(text.as_bytes()) {
        Err(CatalogError::Invalid(p)) => p,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn assert_problem(text: &str, needle: &str) {
    let p = problems(text);
    assert!(
        p.iter().any(|m| m.contains(needle)),
        "no problem containing {needle:?} in {p:#?}"
    );
}

#[test]
fn embedded_default_parses() {
    let c = Catalog::embedded_default().expect("embedded default must be valid");
    assert_eq!(c.version().len(), 12);
    assert_eq!(c.regions().len(), 2);
    assert_eq!(c.pair_of("eu-west").map(|s| &**s), Some("us-east"));
    assert_eq!(c.routers_of("us-east")[0].id.as_ref(), "us-router-1");
    let acme = c.tenant("acme").expect("acme");
    assert!(acme.active_active);
    assert_eq!(acme.shards.len(), 2);
    assert_eq!(acme.shards[1].number, 1);
    assert_eq!(acme.key_count(), 3);
    assert_eq!(&*acme.shards[1].leader.node.id, "eu-idx-2");
    let globex = c.tenant("globex").expect("globex");
    assert_eq!(globex.preferred_region("eu-west"), "us-east");
    assert_eq!(acme.preferred_region("us-east"), "us-east");
    assert_eq!(c.tenant_count(), 2);
    assert_eq!(verify_key(acme, "acme-demo-key-2"), KeyCheck::Valid);
    assert_eq!(verify_key(globex, "globex-demo-key"), KeyCheck::Valid);
}

#[test]
fn version_is_a_content_hash() {
    let a = Catalog::parse(base().as_bytes()).expect("valid");
    let b = Catalog::parse(base().as_bytes()).expect("valid");
    let c = Catalog::parse(format!("{}\n# comment\n", base()).as_bytes()).expect("valid");
    assert_eq!(a.version(), b.version());
    assert_ne!(a.version(), c.version());
}

#[test]
fn syntax_and_shape_errors() {
    let typo = base().replace("active_active", "active_activ");
    assert!(matches!(
        Catalog::parse(typo.as_bytes()),
        Err(CatalogError::Syntax(_))
    ));
    let kind = base().replace("kind = \"model\"", "kind = \"modle\"");
    let err = Catalog::parse(kind.as_bytes()).expect_err("bad kind");
    assert!(err.to_string().contains("modle"), "{err}");
    assert!(matches!(
        Catalog::parse(&[0xff, 0xfe]),
        Err(CatalogError::NotUtf8(_))
    ));
}

#[test]
fn region_problems() {
    assert_problem(
        &base().replace("pair = \"a\"", "pair = \"b\""),
        "region \"b\": pair names the region itself",
    );
    let three = format!("{}\n[[regions]]\nid = \"c\"\npair = \"a\"\n", base());
    assert_problem(&three, "region \"c\": pair \"a\" is not mutual");
    assert_problem(
        &base().replace("pair = \"b\"", "pair = \"z\""),
        "region \"a\": pair \"z\" is not a region",
    );
    let dup = format!("{}\n[[regions]]\nid = \"a\"\npair = \"b\"\n", base());
    assert_problem(&dup, "region \"a\": duplicate region id");
    assert_problem("", "no [[regions]]");
    assert_problem(
        &base().replacen("pair = \"b\"", "pair = \"b\"\ndial = 101", 1),
        "region \"a\": dial 101 is not a percentage",
    );
}

#[test]
fn a_region_dial_defaults_to_100() {
    let c = Catalog::parse(base().as_bytes()).unwrap();
    assert_eq!(c.region("a").unwrap().dial, 100);
    let dialled = base().replacen("pair = \"b\"", "pair = \"b\"\ndial = 25", 1);
    let c = Catalog::parse(dialled.as_bytes()).unwrap();
    assert_eq!(
        (c.region("a").unwrap().dial, c.region("b").unwrap().dial),
        (25, 100)
    );
}

#[test]
fn node_problems() {
    assert_problem(
        &base().replace("addr = \"http://127.0.0.1:2\"", "addr = \"127.0.0.1:2\""),
        "node \"b-idx\": addr \"127.0.0.1:2\"",
    );
    assert_problem(
        &base().replace("addr = \"http://127.0.0.1:2\"", "addr = \"http://h:2/x\""),
        "must not have a path",
    );
    assert_problem(
        &base().replace("region = \"b\"\nkind", "region = \"q\"\nkind"),
        "node \"b-idx\": region \"q\" is not a region",
    );
    assert_problem(
        &base().replace("id = \"a-router\"", "id = \"a-idx\""),
        "node \"a-idx\": duplicate node id",
    );
    assert_problem(
        &base().replace("id = \"a-router\"", "id = \"-bad\""),
        "nodes[3]: id \"-bad\" is not valid",
    );
}

#[test]
fn tenant_problems() {
    assert_problem(
        &base().replace("id = \"t1\"", "id = \"t 1\""),
        "tenants[0]: id \"t 1\" is not valid",
    );
    assert_problem(
        &base().replace("home = \"a\"", "home = \"x\""),
        "tenant \"t1\": home \"x\" is not a region",
    );
    assert_problem(
        &base().replace("0 = [\"a-idx\", \"b-idx\"]", "1 = [\"a-idx\", \"b-idx\"]"),
        "shard 0 is missing",
    );
    assert_problem(
        &base().replace("0 = [", "01 = ["),
        "shard key \"01\" is not a shard number",
    );
    assert_problem(
        &base().replace("0 = [\"a-idx\", \"b-idx\"]", "0 = []"),
        "tenant \"t1\" shard 0: has no replicas",
    );
    assert_problem(
        &base().replace("\"a-idx\", \"b-idx\"", "\"a-idx\", \"b-idx\", \"nope\""),
        "tenant \"t1\" shard 0: replicas names unknown node \"nope\"",
    );
    assert_problem(
        &base().replace("\"a-idx\", \"b-idx\"", "\"a-idx\", \"a-model\", \"b-idx\""),
        "names node \"a-model\" of kind \"model\", expected a \"index\" node",
    );
    assert_problem(
        &base().replace(
            "model_replicas = [\"a-model\"]",
            "model_replicas = [\"a-idx\"]",
        ),
        "tenant \"t1\": model_replicas names node \"a-idx\" of kind \"index\"",
    );
    assert_problem(
        &base().replace("\"a-idx\", \"b-idx\"", "\"a-idx\", \"a-idx\", \"b-idx\""),
        "lists node \"a-idx\" twice",
    );
    assert_problem(
        &base().replace("\"a-idx\", \"b-idx\"", "\"a-idx\""),
        "active_active but has no replica in \"b\"",
    );
    assert_problem(
        &base().replace("\"a-idx\", \"b-idx\"", "\"b-idx\""),
        "no replica in home region \"a\"",
    );
    assert_problem(
        &base().replace(
            "active_active = true",
            "active_active = true\nlanguage = \"english\"",
        ),
        "language \"english\"",
    );
    assert_problem(
        &base().replace(&hash_key("key-t1"), "abc"),
        "api_key_sha256[0] is not 64 hex digits",
    );
}

#[test]
fn non_active_active_needs_only_home() {
    let text = base()
        .replace("active_active = true", "active_active = false")
        .replace("\"a-idx\", \"b-idx\"", "\"a-idx\"");
    Catalog::parse(text.as_bytes()).expect("valid");
}

#[test]
fn keys_must_be_unique_across_tenants() {
    let second = format!(
        "{}\n[[tenants]]\nid = \"t2\"\nhome = \"a\"\nactive_active = true\n\
         api_key_sha256 = [\"{}\"]\n[tenants.shards]\n0 = [\"a-idx\", \"b-idx\"]\n",
        base(),
        hash_key("key-t1")
    );
    assert_problem(&second, "tenant \"t2\": api key hash");
    let dup = format!(
        "{}\n{}",
        base(),
        &base()[base().find("[[tenants]]").unwrap_or(0)..]
    );
    assert_problem(&dup, "tenant \"t1\": duplicate tenant id");
}

#[test]
fn many_problems_are_reported_together_and_capped() {
    let mut text = base();
    for i in 0..150 {
        text.push_str(&format!(
            "\n[[tenants]]\nid = \"x{i}\"\nhome = \"nowhere\"\nactive_active = true\n\
             [tenants.shards]\n0 = [\"a-idx\"]\n"
        ));
    }
    let p = problems(&text);
    assert_eq!(p.len(), 101);
    assert!(p[100].starts_with("... and "), "{}", p[100]);
    let shown = CatalogError::Invalid(p).to_string();
    assert!(shown.starts_with("catalog rejected, 101 problem(s):"));
}

#[test]
fn no_input_makes_it_panic() {
    let text = EMBEDDED_DEFAULT.as_bytes();
    for end in 0..text.len() {
        let _ = Catalog::parse(&text[..end]);
    }
}

#[test]
fn authorize_outcomes() {
    let two = format!(
        "{}\n[[tenants]]\nid = \"t2\"\nhome = \"a\"\nactive_active = true\n\
         api_key_sha256 = [\"{}\"]\n[tenants.shards]\n0 = [\"a-idx\", \"b-idx\"]\n",
        base(),
        hash_key("key-t2")
    );
    let c = Catalog::parse(two.as_bytes()).expect("valid");
    assert!(
        matches!(c.authorize("t1", Some("key-t1")), AuthOutcome::Authorized(t) if &*t.id == "t1")
    );
    assert!(matches!(
        c.authorize("t1", None),
        AuthOutcome::Unauthenticated
    ));
    assert!(matches!(
        c.authorize("t1", Some("")),
        AuthOutcome::Unauthenticated
    ));
    assert!(matches!(
        c.authorize("t1", Some("guess")),
        AuthOutcome::Unauthenticated
    ));
    assert!(matches!(
        c.authorize("t1", Some("key-t2")),
        AuthOutcome::PermissionDenied
    ));
    assert!(matches!(
        c.authorize("nope", Some("key-t2")),
        AuthOutcome::TenantNotFound
    ));
    assert!(matches!(
        c.authorize("nope", Some("guess")),
        AuthOutcome::Unauthenticated
    ));
    assert!(matches!(
        c.authorize("nope", None),
        AuthOutcome::Unauthenticated
    ));
}

#[test]
fn ids() {
    assert!(is_valid_id("a"));
    assert!(is_valid_id("Acme_1.prod-eu"));
    assert!(is_valid_id(&"x".repeat(64)));
    assert!(!is_valid_id(&"x".repeat(65)));
    assert!(!is_valid_id(""));
    assert!(!is_valid_id("_a"));
    assert!(!is_valid_id("a/b"));
    assert!(!is_valid_id("é"));
}

#[test]
fn handle_keeps_last_good_catalog() {
    let handle = CatalogHandle::new(Catalog::parse(base().as_bytes()).expect("valid"));
    let v1: Arc<str> = handle.current().version().into();
    assert!(handle.reload(b"not [toml").is_err());
    assert_eq!(handle.current().version(), &*v1);
    assert_eq!(
        handle.reload(base().as_bytes()).expect("same"),
        Reload::Unchanged {
            version: v1.clone()
        }
    );
    let changed = format!("{}\n# edited\n", base());
    match handle.reload(changed.as_bytes()).expect("valid") {
        Reload::Replaced { previous, current } => {
            assert_eq!(previous, v1);
            assert_eq!(&*current, handle.current().version());
        }
        other => panic!("expected Replaced, got {other:?}"),
    }
    let missing = handle.reload_file(Path::new("/nonexistent/catalog.toml"));
    assert!(matches!(missing, Err(CatalogError::Io { .. })));
}

#[test]
fn load_file_reads_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("catalog.toml");
    std::fs::write(&path, base()).expect("write");
    let c = Catalog::load_file(&path).expect("valid");
    assert!(c.tenant("t1").is_some());
    assert_eq!(c.node("a-router").map(|n| n.kind), Some(NodeKind::Router));
    assert_eq!(c.nodes().count(), 4);
}

#[test]
fn key_helpers() {
    assert_eq!(
        hash_key("acme-demo-key-1"),
        "53c0bbbb0bb4c4b246b3864960657bcb300d500b1599167dabfb3e9372241898"
    );
    let upper = hash_key("k").to_uppercase();
    assert_eq!(KeyHash::from_hex(&upper), Some(KeyHash::of_key("k")));
    assert_eq!(KeyHash::from_hex("zz"), None);
    let c = Catalog::parse(base().as_bytes()).expect("valid");
    let t = c.tenant("t1").expect("t1");
    assert_eq!(verify_key(t, "key-t1"), KeyCheck::Valid);
    assert_eq!(verify_key(t, "key-t2"), KeyCheck::Invalid);
    assert_eq!(verify_key(t, ""), KeyCheck::Invalid);
}

#[test]
fn leaders_default_to_the_first_home_replica_at_epoch_1() {
    let c = Catalog::parse(base().as_bytes()).unwrap();
    let shard = &c.tenant("t1").unwrap().shards[0];
    assert_eq!(&*shard.leader.node.id, "a-idx");
    assert_eq!(shard.leader.epoch, 1);
}

#[test]
fn a_named_leader_must_be_a_replica_with_an_epoch() {
    let text = format!(
        "{}\n[tenants.leaders]\n0 = {{ node = \"b-idx\", epoch = 3 }}\n",
        base()
    );
    let c = Catalog::parse(text.as_bytes()).unwrap();
    let leader = &c.tenant("t1").unwrap().shards[0].leader;
    assert_eq!((&*leader.node.id, leader.epoch), ("b-idx", 3));
    let bad = format!("{}\n[tenants.leaders]\n0 = {{ node = \"a-model\", epoch = 0 }}\n1 = {{ node = \"a-idx\", epoch = 1 }}\n", base());
    let p = problems(&bad);
    assert!(
        p.iter().any(|m| m.contains("leader epoch must be >= 1")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|m| m.contains("not one of the shard's replicas")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.contains("not one of its shard numbers")),
        "{p:?}"
    );
}

#[test]
fn write_keys_have_their_own_scope() {
    let text = base().replace(
        "api_key_sha256 = [",
        &format!(
            "write_key_sha256 = [\"{}\"]\napi_key_sha256 = [",
            hash_key("write-t1")
        ),
    );
    let c = Catalog::parse(text.as_bytes()).unwrap();
    let search = KeyHash::of_key("key-t1");
    let write = KeyHash::of_key("write-t1");
    assert!(matches!(
        c.authorize_scoped("t1", &write, KeyScope::Write),
        AuthOutcome::Authorized(_)
    ));
    assert!(matches!(
        c.authorize_scoped("t1", &search, KeyScope::Write),
        AuthOutcome::PermissionDenied
    ));
    assert!(matches!(
        c.authorize_scoped("t1", &write, KeyScope::Search),
        AuthOutcome::PermissionDenied
    ));
    assert!(matches!(
        c.authorize_hash("t1", &search),
        AuthOutcome::Authorized(_)
    ));
}

/// A router or node of format N reads what format N-1 wrote (no `format`,
/// no leaders, no write keys: the tests above), refuses unknown keys in a
/// file of its own format (typos), and ignores with a warning the keys of a
/// newer format, so that a fleet upgrades one process at a time.
#[test]
fn unknown_keys_are_typos_in_this_format_and_ignored_in_a_newer_one() {
    let typo = base().replace("model_replicas", "model_replica");
    let p = problems(&typo);
    assert!(
        p.iter()
            .any(|m| m.contains("unknown key \"model_replica\"")),
        "{p:?}"
    );
    let current = format!(
        "format = {FORMAT}\n{}",
        base().replace("home = \"a\"", "home = \"a\"\nfuture_field = 1")
    );
    assert!(problems(&current)
        .iter()
        .any(|m| m.contains("future_field")));
    let newer = format!(
        "format = {}\nnew_top = \"x\"\n{}",
        FORMAT + 1,
        base().replace("home = \"a\"", "home = \"a\"\nfuture_field = 1")
    );
    let c = Catalog::parse(newer.as_bytes()).unwrap();
    assert_eq!(c.warnings().len(), 2, "{:?}", c.warnings());
    assert!(c.warnings().iter().all(|w| w.contains("ignored")));
}

/// Key hashes may live in a keys file of `[keys.<tenant>]` tables (a
/// Kubernetes Secret) beside a catalog without them (a ConfigMap); the
/// keys file may hold nothing else.
#[test]
fn key_hashes_from_a_keys_file_join_their_tenant() {
    let without = base().replace(
        &format!("api_key_sha256 = [\"{}\"]\n", hash_key("key-t1")),
        "",
    );
    let no_keys = Catalog::parse(without.as_bytes()).unwrap();
    assert_eq!(no_keys.tenant("t1").unwrap().key_hashes.len(), 0);
    let keys = format!(
        "[keys.t1]\napi_key_sha256 = [\"{}\"]\nwrite_key_sha256 = [\"{}\"]\n",
        hash_key("key-t1"),
        hash_key("write-t1")
    );
    let bytes = Catalog::with_keys(without.as_bytes(), keys.as_bytes()).unwrap();
    let c = Catalog::parse(&bytes).unwrap();
    assert!(matches!(
        c.authorize("t1", Some("key-t1")),
        AuthOutcome::Authorized(_)
    ));
    assert_eq!(c.tenant("t1").unwrap().write_key_hashes.len(), 1);
    assert_ne!(
        c.version(),
        no_keys.version(),
        "a key change is a new catalog"
    );

    let stranger = keys.replace("[keys.t1]", "[keys.nobody]");
    let bytes = Catalog::with_keys(without.as_bytes(), stranger.as_bytes()).unwrap();
    let c = Catalog::parse(&bytes).expect("keys of no tenant are ignored, not refused");
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("not a tenant of this catalog")),
        "{:?}",
        c.warnings()
    );
    assert!(!matches!(
        c.authorize("t1", Some("key-t1")),
        AuthOutcome::Authorized(_)
    ));
    let smuggled = format!("{keys}\n[[tenants]]\nid = \"evil\"\n");
    let err = Catalog::with_keys(without.as_bytes(), smuggled.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("only [keys.<tenant>]"), "{err}");
}

#[test]
fn a_ramp_belongs_to_a_single_region_tenant_with_replicas_in_the_pair() {
    let single = base().replace("active_active = true", "active_active = false");
    let ramped = single.replace("model_replicas", "ramp = 25\nmodel_replicas");
    let c = Catalog::parse(ramped.as_bytes()).expect("valid");
    assert_eq!(c.tenant("t1").unwrap().ramp, 25);
    assert_eq!(
        Catalog::parse(single.as_bytes())
            .unwrap()
            .tenant("t1")
            .unwrap()
            .ramp,
        0
    );
    assert_problem(
        &base().replace("model_replicas", "ramp = 5\nmodel_replicas"),
        "an active-active tenant has no ramp",
    );
    assert_problem(
        &ramped.replace("ramp = 25", "ramp = 101"),
        "ramp 101 is not a percentage",
    );
    assert_problem(
        &ramped.replace("0 = [\"a-idx\", \"b-idx\"]", "0 = [\"a-idx\"]"),
        "shard 0 has no replica in \"b\" to ramp to",
    );
}

#[test]
fn allowed_origins_are_scheme_host_and_port_or_star() {
    let with = |list: &str| {
        base().replace(
            "model_replicas",
            &format!("allowed_origins = {list}\nmodel_replicas"),
        )
    };
    let c =
        Catalog::parse(with(r#"["https://app.example.com", "http://localhost:8080"]"#).as_bytes())
            .unwrap();
    let t = c.tenant("t1").unwrap();
    assert!(t.allows_origin("https://app.example.com"));
    assert!(!t.allows_origin("https://evil.example.com"));
    assert!(c.any_tenant_allows_origin("http://localhost:8080"));
    let any = Catalog::parse(with(r#"["*"]"#).as_bytes()).unwrap();
    assert!(any
        .tenant("t1")
        .unwrap()
        .allows_origin("https://anywhere.example"));
    assert!(!Catalog::parse(base().as_bytes())
        .unwrap()
        .any_tenant_allows_origin("https://a.b"));
    for bad in [
        r#"["app.example.com"]"#,
        r#"["https://app.example.com/"]"#,
        r#"["ftp://x"]"#,
    ] {
        assert_problem(&with(bad), "is not `scheme://host[:port]`");
    }
}

#[test]
fn a_quota_is_a_format_4_key_with_limits_of_at_least_one() {
    let quota = "home = \"a\"\nquota = { searches_per_sec = 50, concurrent_searches = 8 }";
    let old = base().replace("home = \"a\"", quota);
    assert_problem(&old, "key of catalog format 4 in a file of format 1");
    let current = format!("format = 4\n{old}");
    let c = Catalog::parse(current.as_bytes()).unwrap();
    let t = c.tenants().next().unwrap();
    let expected = Quota {
        searches_per_sec: Some(50),
        concurrent_searches: Some(8),
    };
    assert_eq!(t.quota, Some(expected));
    let zero = current.replace("concurrent_searches = 8", "concurrent_searches = 0");
    assert_problem(&zero, "concurrent_searches = 0 would refuse every search");
    let typo = current.replace("concurrent_searches", "concurrent");
    assert_problem(&typo, "unknown key \"concurrent\"");
}
