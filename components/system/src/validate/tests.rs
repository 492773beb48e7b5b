//! One test (at least) per rule: a small valid system, broken in one way,
//! must give that rule at the offending line, and only the findings expected.

use super::*;

const INTERFACES: &[&str] = &["LogAppend", "LogRead", "Pmu", "VmControl", "Supervisor"];

/// A minimal valid system: `app` appends to `store`, `boss` supervises both.
const BASE: &str = r#"
[[component]]
name = "app"
description = "uses the log"
serves = ["Supervisor"]
uses = ["LogAppend"]
needs = ["kvm"]

[[component]]
name = "store"
description = "serves the log"
serves = ["LogAppend", "Supervisor"]
needs = ["log-dir:write"]

[[component]]
name = "boss"
description = "supervises"
uses = ["Supervisor"]

[[domain]]
name = "app-dom"
components = ["app"]
grants = ["kvm"]

[[domain]]
name = "store-dom"
components = ["store"]
grants = ["log-dir:write"]
restart = "on-failure"
max-restarts = 2

[[domain]]
name = "boss-dom"
components = ["boss"]
supervisor = true

[[channel]]
name = "append"
interface = "LogAppend"
kind = "call"
client = "app"
server = "store"

[[channel]]
name = "sup-app"
interface = "Supervisor"
kind = "notify"
client = "boss"
server = "app"

[[channel]]
name = "sup-store"
interface = "Supervisor"
kind = "call"
client = "boss"
server = "store"
"#;

fn findings(src: &str) -> Vec<Diagnostic> {
    match check(Path::new("t.toml"), src, INTERFACES) {
        Ok(_) => Vec::new(),
        Err(d) => d.into_vec(),
    }
}

/// 1-based line of the `n`th (0-based) occurrence of `needle` in `src`.
fn line_of(src: &str, needle: &str, n: usize) -> usize {
    let (at, _) = src
        .match_indices(needle)
        .nth(n)
        .unwrap_or_else(|| panic!("`{needle}` #{n} not in source"));
    src[..at].matches('\n').count() + 1
}

/// `src` gives exactly the findings `want`: (rule, line, text the message contains).
#[track_caller]
fn expect(src: &str, want: &[(Rule, usize, &str)]) {
    let got = findings(src);
    let shown = got
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(got.len(), want.len(), "findings:\n{shown}");
    for (d, (rule, line, text)) in got.iter().zip(want) {
        assert_eq!((d.rule, d.line), (*rule, *line), "findings:\n{shown}");
        assert!(d.message.contains(text), "`{text}` not in: {d}");
        assert!(
            d.to_string()
                .starts_with(&format!("t.toml:{line}: {}: ", rule.id())),
            "{d}"
        );
    }
}

/// Replace the one occurrence of `from` in BASE.
fn base_with(from: &str, to: &str) -> String {
    assert_eq!(
        BASE.matches(from).count(),
        1,
        "`{from}` must occur once in BASE"
    );
    BASE.replace(from, to)
}

#[test]
fn base_is_valid() {
    expect(BASE, &[]);
}

#[test]
fn the_repository_system_toml_is_valid() {
    let src = include_str!("../../../../system.toml");
    let sys = check(Path::new("system.toml"), src, INTERFACES).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(sys.supervisor().name, "supervisor");
    assert_eq!(
        sys.domain_of("log-store").unwrap().components,
        ["log-store"]
    );
    assert_eq!(sys.domain_of("pmu-driver").unwrap().name, "vmm");
}

#[test]
fn rule_ids_are_unique_kebab_case_with_summaries() {
    let mut seen = HashSet::new();
    for rule in Rule::ALL {
        assert!(seen.insert(rule.id()), "{} twice", rule.id());
        assert!(is_valid_name(rule.id()), "{}", rule.id());
        assert!(!rule.summary().is_empty());
    }
}

#[test]
fn syntax() {
    let src = base_with(
        "kind = \"call\"\nclient = \"app\"",
        "kind = \"call\nclient = \"app\"",
    );
    let got = findings(&src);
    assert!(!got.is_empty());
    assert!(got.iter().all(|d| d.rule == Rule::Syntax), "{got:?}");
    assert_eq!(got[0].line, line_of(&src, "kind = \"call", 0));
}

#[test]
fn syntax_reports_every_error() {
    let src = "a = \nb = ]\n";
    let got = findings(src);
    assert!(got.len() >= 2, "{got:?}");
    assert_eq!(got.iter().map(|d| d.line).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn unknown_key() {
    let src = base_with(
        "needs = [\"kvm\"]",
        "needs = [\"kvm\"]\nneeds-more = 1\nrestrat = \"never\"",
    );
    expect(
        &src,
        &[
            (
                Rule::UnknownKey,
                line_of(&src, "needs-more", 0),
                "`needs-more` in [[component]]",
            ),
            (Rule::UnknownKey, line_of(&src, "restrat", 0), "`restrat`"),
        ],
    );
}

#[test]
fn unknown_key_at_top_level() {
    let src = format!("title = \"x\"\n{BASE}");
    expect(&src, &[(Rule::UnknownKey, 1, "`title` at the top level")]);
}

#[test]
fn missing_key() {
    let src = base_with("description = \"supervises\"\n", "");
    expect(
        &src,
        &[(
            Rule::MissingKey,
            line_of(&src, "[[component]]", 2),
            "`boss` has no `description` key",
        )],
    );
}

#[test]
fn invalid_value() {
    let src = base_with("kind = \"notify\"", "kind = \"cast\"");
    expect(
        &src,
        &[(
            Rule::InvalidValue,
            line_of(&src, "cast", 0),
            "`kind`: unknown variant `cast`",
        )],
    );
    let src = base_with("max-restarts = 2", "max-restarts = -2");
    expect(
        &src,
        &[(Rule::InvalidValue, line_of(&src, "-2", 0), "`max-restarts`")],
    );
    let src = base_with("supervisor = true", "supervisor = \"yes\"");
    expect(
        &src,
        &[(
            Rule::InvalidValue,
            line_of(&src, "\"yes\"", 0),
            "`supervisor`",
        )],
    );
    let src = format!(
        "component = 3\n{}",
        BASE.replace("[[component]]", "[[module]]")
    );
    let got = findings(&src);
    assert!(
        got.iter().any(|d| d.rule == Rule::InvalidValue
            && d.line == 1
            && d.message.contains("array of tables")),
        "{got:?}"
    );
    let src = base_with("description = \"supervises\"", "description = \"  \"");
    expect(
        &src,
        &[(
            Rule::InvalidValue,
            line_of(&src, "\"  \"", 0),
            "empty description",
        )],
    );
}

#[test]
fn invalid_name() {
    for bad in [
        "Store",
        "../store",
        "store-",
        "st--ore",
        "9store",
        "",
        "a-very-long-name-that-is-over-32-chars",
    ] {
        let src = BASE.replace("\"store\"", &format!("\"{bad}\""));
        expect(
            &src,
            &[(
                Rule::InvalidName,
                line_of(&src, "name = \"", 1),
                "lowercase kebab-case",
            )],
        );
    }
}

#[test]
fn duplicate_name() {
    let dup = "[[channel]]\nname = \"append\"\ninterface = \"LogAppend\"\nkind = \"notify\"\nclient = \"app\"\nserver = \"store\"\n";
    let src = format!("{BASE}\n{dup}");
    let first = line_of(&src, "name = \"append\"", 0);
    expect(
        &src,
        &[(
            Rule::DuplicateName,
            line_of(&src, "name = \"append\"", 1),
            &format!("channel `append` is already declared at line {first}"),
        )],
    );
}

#[test]
fn duplicate_entry() {
    let src = base_with(
        "uses = [\"LogAppend\"]",
        "uses = [\"LogAppend\",\n  \"LogAppend\"]",
    );
    expect(
        &src,
        &[(
            Rule::DuplicateEntry,
            line_of(&src, "  \"LogAppend\"]", 0),
            "`uses` of component `app` lists `LogAppend` again",
        )],
    );
    let src = base_with(
        "grants = [\"log-dir:write\"]",
        "grants = [\"log-dir:write\", \"log-dir:read\"]",
    );
    expect(
        &src,
        &[(
            Rule::DuplicateEntry,
            line_of(&src, "log-dir:read", 0),
            "lists `log-dir` again",
        )],
    );
    let src = base_with(
        "components = [\"boss\"]",
        "components = [\"boss\", \"boss\"]",
    );
    expect(
        &src,
        &[(
            Rule::DuplicateEntry,
            line_of(&src, "\"boss\", \"boss\"", 0),
            "domain `boss-dom`",
        )],
    );
}

#[test]
fn unknown_component() {
    let src = base_with("client = \"app\"", "client = \"ap\"");
    expect(
        &src,
        &[
            (
                Rule::UnreachableUse,
                line_of(&src, "uses = [\"LogAppend\"]", 0),
                "`app` uses LogAppend",
            ),
            (
                Rule::UnknownComponent,
                line_of(&src, "\"ap\"", 0),
                "client `ap`, which is not a declared component",
            ),
        ],
    );
    let src = base_with(
        "components = [\"boss\"]",
        "components = [\"boss\", \"ghost\"]",
    );
    expect(
        &src,
        &[(
            Rule::UnknownComponent,
            line_of(&src, "ghost", 0),
            "lists `ghost`",
        )],
    );
}

#[test]
fn unknown_interface() {
    let src = base_with(
        "serves = [\"LogAppend\", \"Supervisor\"]",
        "serves = [\"LogAppend\", \"Supervisor\", \"Debug\"]",
    );
    expect(
        &src,
        &[(
            Rule::UnknownInterface,
            line_of(&src, "Debug", 0),
            "unknown interface `Debug`; known: LogAppend",
        )],
    );
    let src = base_with("interface = \"LogAppend\"", "interface = \"LogApend\"");
    expect(
        &src,
        &[
            (
                Rule::UnreachableUse,
                line_of(&src, "uses = [\"LogAppend\"]", 0),
                "`app` uses LogAppend",
            ),
            (
                Rule::UnknownInterface,
                line_of(&src, "LogApend", 0),
                "`LogApend`",
            ),
        ],
    );
}

#[test]
fn unknown_capability() {
    let src = base_with("grants = [\"kvm\"]", "grants = [\"kvm\", \"network\"]");
    expect(
        &src,
        &[(
            Rule::UnknownCapability,
            line_of(&src, "network", 0),
            "`grants` of domain `app-dom`: unknown capability `network`",
        )],
    );
}

#[test]
fn interface_mismatch() {
    // The store does not serve LogRead; the app does not use it.
    let src = format!(
        "{}\n[[channel]]\nname = \"read\"\ninterface = \"LogRead\"\nkind = \"call\"\nclient = \"app\"\nserver = \"store\"\n",
        BASE
    );
    let client = line_of(&src, "client = \"app\"", 1);
    expect(
        &src,
        &[
            (
                Rule::InterfaceMismatch,
                client,
                "client `app` does not use it (uses: LogAppend)",
            ),
            (
                Rule::InterfaceMismatch,
                client + 1,
                "server `store` does not serve it (serves: LogAppend, Supervisor)",
            ),
        ],
    );
}

#[test]
fn self_channel() {
    let src = base_with("server = \"app\"", "server = \"boss\"");
    expect(
        &src,
        &[
            (
                Rule::UnsupervisedDomain,
                line_of(&src, "name = \"app-dom\"", 0),
                "`app-dom` has no Supervisor channel",
            ),
            (
                Rule::SelfChannel,
                line_of(&src, "server = \"boss\"", 0),
                "connects `boss` to itself",
            ),
            (
                Rule::InterfaceMismatch,
                line_of(&src, "server = \"boss\"", 0),
                "server `boss` does not serve it",
            ),
        ],
    );
}

#[test]
fn unreachable_use() {
    let src = base_with(
        "uses = [\"LogAppend\"]",
        "uses = [\"LogAppend\", \"LogRead\"]",
    );
    expect(
        &src,
        &[(
            Rule::UnreachableUse,
            line_of(&src, "LogRead", 0),
            "`app` uses LogRead but no channel connects it",
        )],
    );
}

#[test]
fn unplaced_component() {
    let src = base_with("components = [\"app\"]", "components = []");
    expect(
        &src,
        &[
            (
                Rule::UnplacedComponent,
                line_of(&src, "name = \"app\"", 0),
                "component `app` is in no domain",
            ),
            (
                Rule::EmptyDomain,
                line_of(&src, "name = \"app-dom\"", 0),
                "domain `app-dom` holds no component",
            ),
            (
                Rule::UnneededCapability,
                line_of(&src, "grants = [\"kvm\"]", 0),
                "none of its components (none) needs it",
            ),
        ],
    );
}

#[test]
fn multiply_placed_component() {
    let src = base_with(
        "components = [\"boss\"]",
        "components = [\"boss\", \"store\"]",
    );
    let first = line_of(&src, "components = [\"store\"]", 0);
    expect(
        &src,
        &[(
            Rule::MultiplyPlacedComponent,
            line_of(&src, "\"boss\", \"store\"", 0),
            &format!(
                "`store` is placed in domain `boss-dom` but already in domain `store-dom` (line {first})"
            ),
        )],
    );
}

#[test]
fn empty_domain() {
    let src = format!("{BASE}\n[[domain]]\nname = \"idle\"\ncomponents = []\n");
    expect(
        &src,
        &[(
            Rule::EmptyDomain,
            line_of(&src, "idle", 0),
            "`idle` holds no component",
        )],
    );
}

#[test]
fn exclusive_resource() {
    let src = base_with(
        "serves = [\"LogAppend\", \"Supervisor\"]\nneeds = [\"log-dir:write\"]",
        "serves = [\"LogAppend\", \"Supervisor\"]\nneeds = [\"log-dir:write\", \"kvm\"]",
    )
    .replace(
        "grants = [\"log-dir:write\"]",
        "grants = [\"log-dir:write\", \"kvm\"]",
    );
    let first = line_of(&src, "name = \"app-dom\"", 0);
    expect(
        &src,
        &[(
            Rule::ExclusiveResource,
            line_of(&src, "grants = [\"log-dir:write\", \"kvm\"]", 0),
            &format!(
                "domain `store-dom` is granted `kvm`, already granted to domain `app-dom` (line {first})"
            ),
        )],
    );
}

#[test]
fn capability_not_granted() {
    let src = base_with("needs = [\"kvm\"]", "needs = [\"kvm\", \"stdout\"]");
    expect(
        &src,
        &[(
            Rule::CapabilityNotGranted,
            line_of(&src, "\"stdout\"", 0),
            "component `app` needs `stdout` but its domain `app-dom` does not grant it",
        )],
    );
    let src = base_with(
        "grants = [\"log-dir:write\"]",
        "grants = [\"log-dir:read\"]",
    );
    expect(
        &src,
        &[(
            Rule::CapabilityNotGranted,
            line_of(&src, "needs = [\"log-dir:write\"]", 0),
            "(it grants only `log-dir:read`)",
        )],
    );
}

#[test]
fn unneeded_capability() {
    let src = base_with("grants = [\"kvm\"]", "grants = [\"kvm\", \"pmu\"]");
    expect(
        &src,
        &[(
            Rule::UnneededCapability,
            line_of(&src, "\"pmu\"", 0),
            "domain `app-dom` grants `pmu` but none of its components (app) needs it",
        )],
    );
    let src = base_with("needs = [\"log-dir:write\"]", "needs = [\"log-dir:read\"]");
    expect(
        &src,
        &[(
            Rule::UnneededCapability,
            line_of(&src, "grants = [\"log-dir:write\"]", 0),
            "grants `log-dir:write` but its components need only `log-dir:read`",
        )],
    );
}

#[test]
fn no_supervisor() {
    let src = base_with("supervisor = true", "supervisor = false");
    expect(
        &src,
        &[(Rule::NoSupervisor, 1, "no domain has `supervisor = true`")],
    );
}

#[test]
fn multiple_supervisors() {
    let src = base_with(
        "grants = [\"kvm\"]",
        "grants = [\"kvm\"]\nsupervisor = true",
    );
    let first = line_of(&src, "name = \"app-dom\"", 0);
    let second = line_of(&src, "supervisor = true", 1);
    expect(
        &src,
        &[(
            Rule::MultipleSupervisors,
            second,
            &format!(
                "domain `boss-dom` is a second supervisor; domain `app-dom` (line {first}) already is"
            ),
        )],
    );
}

#[test]
fn unsupervised_domain() {
    let src = BASE.replace(
        "[[channel]]\nname = \"sup-store\"\ninterface = \"Supervisor\"\nkind = \"call\"\nclient = \"boss\"\nserver = \"store\"\n",
        "",
    );
    expect(
        &src,
        &[(
            Rule::UnsupervisedDomain,
            line_of(&src, "name = \"store-dom\"", 0),
            "domain `store-dom` has no Supervisor channel from the supervisor domain `boss-dom`",
        )],
    );
}

#[test]
fn supervisor_only() {
    // `app` (not in the supervisor domain) gets a Supervisor channel to `store`.
    let src = base_with(
        "uses = [\"LogAppend\"]",
        "uses = [\"LogAppend\", \"Supervisor\"]",
    ) + "\n[[channel]]\nname = \"rogue\"\ninterface = \"Supervisor\"\nkind = \"call\"\nclient = \"app\"\nserver = \"store\"\n";
    expect(
        &src,
        &[(
            Rule::SupervisorOnly,
            line_of(&src, "client = \"app\"", 1),
            "channel `rogue` lets `app` (domain `app-dom`) use Supervisor; only the supervisor domain `boss-dom` may",
        )],
    );
}

#[test]
fn restart_policy() {
    let src = base_with("max-restarts = 2\n", "");
    expect(
        &src,
        &[(
            Rule::RestartPolicy,
            line_of(&src, "on-failure", 0),
            "needs `max-restarts`",
        )],
    );
    let src = base_with("max-restarts = 2", "max-restarts = 0");
    expect(
        &src,
        &[(
            Rule::RestartPolicy,
            line_of(&src, "max-restarts", 0),
            "write restart = \"never\"",
        )],
    );
    let src = base_with("restart = \"on-failure\"", "restart = \"always\"");
    expect(
        &src,
        &[(
            Rule::RestartPolicy,
            line_of(&src, "max-restarts", 0),
            "only applies to restart = \"on-failure\"",
        )],
    );
    let src = base_with(
        "supervisor = true",
        "supervisor = true\nrestart = \"always\"",
    );
    expect(
        &src,
        &[(
            Rule::RestartPolicy,
            line_of(&src, "restart = \"always\"", 0),
            "supervisor domain `boss-dom` cannot be restarted",
        )],
    );
}

#[test]
fn every_rule_has_a_test() {
    // The tests above name each rule; keep this list in step with `Rule::ALL`
    // so a new rule cannot land untested.
    let tested = [
        Rule::Syntax,
        Rule::UnknownKey,
        Rule::MissingKey,
        Rule::InvalidValue,
        Rule::InvalidName,
        Rule::DuplicateName,
        Rule::DuplicateEntry,
        Rule::UnknownComponent,
        Rule::UnknownInterface,
        Rule::UnknownCapability,
        Rule::InterfaceMismatch,
        Rule::SelfChannel,
        Rule::UnreachableUse,
        Rule::UnplacedComponent,
        Rule::MultiplyPlacedComponent,
        Rule::EmptyDomain,
        Rule::ExclusiveResource,
        Rule::CapabilityNotGranted,
        Rule::UnneededCapability,
        Rule::NoSupervisor,
        Rule::MultipleSupervisors,
        Rule::UnsupervisedDomain,
        Rule::SupervisorOnly,
        Rule::RestartPolicy,
    ];
    assert_eq!(tested.as_slice(), Rule::ALL);
}

#[test]
fn all_findings_are_reported_sorted_by_line() {
    let src = base_with("client = \"app\"", "client = \"ap\"")
        .replace("grants = [\"kvm\"]", "grants = [\"kvm\", \"pmu\"]")
        .replace("supervisor = true", "supervisor = false");
    let got = findings(&src);
    let rules: Vec<_> = got.iter().map(|d| d.rule).collect();
    assert_eq!(
        rules,
        [
            Rule::NoSupervisor,
            Rule::UnreachableUse,
            Rule::UnneededCapability,
            Rule::UnknownComponent
        ],
        "{got:#?}"
    );
    assert!(got.windows(2).all(|w| w[0].line <= w[1].line));
}

#[test]
fn model_resolves_channels_domains_and_policies() {
    let sys = check(Path::new("t.toml"), BASE, INTERFACES).unwrap();
    let app: Vec<_> = sys
        .channels_of("app")
        .map(|e| (e.channel.name.as_str(), e.role, e.peer()))
        .collect();
    assert_eq!(
        app,
        [
            ("append", crate::Role::Client, "store"),
            ("sup-app", crate::Role::Server, "boss"),
        ]
    );
    assert_eq!(sys.channels_of("nobody").count(), 0);
    let append = sys.channel("append").unwrap();
    assert_eq!(
        (append.client_domain.as_str(), append.server_domain.as_str()),
        ("app-dom", "store-dom")
    );
    assert!(append.crosses_domains());
    assert_eq!(
        sys.channel("sup-app").unwrap().kind,
        crate::ChannelKind::Notify
    );
    assert_eq!(
        sys.domain("store-dom").unwrap().restart,
        RestartPolicy::OnFailure { max_restarts: 2 }
    );
    assert_eq!(sys.domain("app-dom").unwrap().restart, RestartPolicy::Never);
    assert!(sys.domain("app-dom").unwrap().allows(Capability::Kvm));
    assert!(!sys.domain("app-dom").unwrap().allows(Capability::Pmu));
    assert!(
        sys.domain("store-dom")
            .unwrap()
            .allows(Capability::LogDir(crate::Access::Read))
    );
    assert_eq!(sys.supervisor().name, "boss-dom");
    assert_eq!(sys.component("store").unwrap().domain, "store-dom");
    let store_dom: Vec<_> = sys
        .channels_of_domain("store-dom")
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(store_dom, ["append", "sup-store"]);
    assert_eq!(
        sys.components()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["app", "store", "boss"]
    );
}

#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../../../docs/system-toml.md");
    let start = doc
        .find("```toml\n")
        .expect("a toml example in docs/system-toml.md")
        + 8;
    let len = doc[start..].find("```").unwrap();
    let example = &doc[start..start + len];
    let sys =
        check(Path::new("example.toml"), example, INTERFACES).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(sys.domains().len(), 3);
}

#[test]
fn crlf_files_check_the_same_with_the_same_lines() {
    let crlf = BASE.replace('\n', "\r\n");
    expect(&crlf, &[]);
    let broken = base_with("grants = [\"kvm\"]", "grants = [\"kvm\", \"pmu\"]");
    let line = line_of(&broken, "\"pmu\"", 0);
    expect(
        &broken.replace('\n', "\r\n"),
        &[(Rule::UnneededCapability, line, "`pmu`")],
    );
}
