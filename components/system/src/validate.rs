//! The validator: every rule a `system.toml` must satisfy, in one place.
//!
//! In the spirit of seL4 Microkit's tool, the file is the whole truth about
//! which component may reach which: the runtime gives a process only the
//! channel endpoints and capabilities declared here, so anything this module
//! lets through is authority granted. Rules come in two passes. The first
//! reads the TOML (rules `syntax`, `unknown-key`, `missing-key`,
//! `invalid-value`); if it finds anything it stops, because a misspelt key
//! would make every later rule report nonsense. The second checks meaning and
//! reports every finding at once, sorted by line.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::capability::Capability;
use crate::decl::{ChannelDecl, ComponentDecl, Decls, DomainDecl, RestartDecl};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::model::{Channel, Component, Domain, RestartPolicy, System};

/// The interface the supervisor domain uses to stop and query the other
/// domains. Named here (not taken from motion-ipc) so this crate stays
/// independent of the IPC crate; `motion system check` tests that the two agree.
pub const SUPERVISOR_INTERFACE: &str = "Supervisor";

/// Longest accepted name: names become process names and socket file names.
pub const MAX_NAME_LEN: usize = 32;

macro_rules! rules {
    ($($(#[doc = $doc:literal])+ $variant:ident = $id:literal,)+) => {
        /// A rule of the system description. Each has a short kebab-case id,
        /// printed in every finding.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Rule {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl Rule {
            /// Every rule, in the order they are documented.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)+];

            /// The kebab-case id printed in findings.
            pub fn id(self) -> &'static str {
                match self {
                    $(Rule::$variant => $id,)+
                }
            }

            /// One line saying what the rule demands.
            pub fn summary(self) -> &'static str {
                match self {
                    $(Rule::$variant => concat!($($doc),+).trim_ascii(),)+
                }
            }
        }
    };
}

rules! {
    /// The file is not valid TOML.
    Syntax = "syntax",
    /// A key the schema does not know (often a misspelling).
    UnknownKey = "unknown-key",
    /// A required key is absent.
    MissingKey = "missing-key",
    /// A value has the wrong type or is not one of the allowed values.
    InvalidValue = "invalid-value",
    /// A name is not lowercase kebab-case of at most 32 characters.
    InvalidName = "invalid-name",
    /// Two components, domains or channels share a name.
    DuplicateName = "duplicate-name",
    /// A list (serves, uses, needs, grants, components) names the same thing twice.
    DuplicateEntry = "duplicate-entry",
    /// A channel end or domain member names no declared component.
    UnknownComponent = "unknown-component",
    /// An interface that is not one of the known interfaces.
    UnknownInterface = "unknown-interface",
    /// A capability that is not one of the known capabilities.
    UnknownCapability = "unknown-capability",
    /// A channel's server does not serve its interface, or its client does not use it.
    InterfaceMismatch = "interface-mismatch",
    /// A channel connects a component to itself.
    SelfChannel = "self-channel",
    /// A component uses an interface but no channel connects it to a server of it.
    UnreachableUse = "unreachable-use",
    /// A component is in no domain.
    UnplacedComponent = "unplaced-component",
    /// A component is in more than one domain.
    MultiplyPlacedComponent = "multiply-placed-component",
    /// A domain holds no component.
    EmptyDomain = "empty-domain",
    /// An exclusive capability (kvm, pmu) is granted to more than one domain.
    ExclusiveResource = "exclusive-resource",
    /// A component needs a capability its domain does not grant.
    CapabilityNotGranted = "capability-not-granted",
    /// A domain grants a capability (or an access) none of its components needs.
    UnneededCapability = "unneeded-capability",
    /// No domain is the supervisor.
    NoSupervisor = "no-supervisor",
    /// More than one domain is the supervisor.
    MultipleSupervisors = "multiple-supervisors",
    /// A domain other than the supervisor's has no Supervisor channel from the supervisor.
    UnsupervisedDomain = "unsupervised-domain",
    /// A component outside the supervisor domain uses the Supervisor interface.
    SupervisorOnly = "supervisor-only",
    /// A restart policy that cannot be followed.
    RestartPolicy = "restart-policy",
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Check `src`, the text of `file`, against every rule. `interfaces` are the
/// interface names a channel may carry (`motion_ipc::INTERFACE_NAMES`).
/// `file` is only used to label findings.
pub fn check(file: &Path, src: &str, interfaces: &[&str]) -> Result<System, Diagnostics> {
    let mut r = Report::new(file, src);
    let system = read(src, &mut r).and_then(|decls| {
        Checker::new(&decls, interfaces, &mut r).run();
        r.diags.is_empty().then(|| build(&decls))
    });
    match system {
        Some(s) if r.diags.is_empty() => Ok(s),
        _ => {
            // Stable: findings on one line keep the order they were found.
            r.diags.sort_by_key(|d| d.line);
            Err(Diagnostics(r.diags))
        }
    }
}

/// Byte offset to 1-based line.
struct Lines(Vec<usize>);

impl Lines {
    fn new(src: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines(starts)
    }

    fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset).max(1)
    }
}

struct Report<'a> {
    file: &'a Path,
    lines: Lines,
    diags: Vec<Diagnostic>,
}

impl<'a> Report<'a> {
    fn new(file: &'a Path, src: &str) -> Self {
        Report {
            file,
            lines: Lines::new(src),
            diags: Vec::new(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.lines.line(span.start)
    }

    fn at_line(&mut self, line: usize, rule: Rule, message: String) {
        self.diags.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            rule,
            message,
        });
    }

    fn at(&mut self, span: &Range<usize>, rule: Rule, message: String) {
        self.at_line(self.line(span), rule, message);
    }
}

// ---------------------------------------------------------------- pass 1: read

/// Parse the TOML and read each table into its declaration struct. `None`
/// when anything was wrong (the findings are in `r`).
fn read(src: &str, r: &mut Report<'_>) -> Option<Decls> {
    let (root, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            r.at(&span, Rule::Syntax, e.message().trim().to_owned());
        }
        return None;
    }
    let found_before = r.diags.len();
    let mut decls = Decls::default();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "component" => read_array("component", value, r, &mut decls.components),
            "domain" => read_array("domain", value, r, &mut decls.domains),
            "channel" => read_array("channel", value, r, &mut decls.channels),
            other => r.at(
                &key.span(),
                Rule::UnknownKey,
                format!(
                    "unknown key `{other}` at the top level; expected [[component]], [[domain]] or [[channel]]"
                ),
            ),
        }
    }
    (r.diags.len() == found_before).then_some(decls)
}

fn read_array<T: DeserializeOwned>(
    kind: &str,
    value: Spanned<DeValue<'_>>,
    r: &mut Report<'_>,
    out: &mut Vec<T>,
) {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => {
            for item in items.iter() {
                if let Some(decl) = read_table(kind, item.clone(), r) {
                    out.push(decl);
                }
            }
        }
        other => r.at(
            &span,
            Rule::InvalidValue,
            format!(
                "`{kind}` must be an array of tables, written [[{kind}]], not a {}",
                other.type_str()
            ),
        ),
    }
}

/// Deserialize one table. An unknown key is reported, removed and the table
/// tried again, so every misspelt key in a table is reported, not just the
/// first; any other error ends the attempt.
fn read_table<T: DeserializeOwned>(
    kind: &str,
    mut item: Spanned<DeValue<'_>>,
    r: &mut Report<'_>,
) -> Option<T> {
    let table_span = item.span();
    if !item.get_ref().is_table() {
        r.at(
            &table_span,
            Rule::InvalidValue,
            format!(
                "each [[{kind}]] entry must be a table, not a {}",
                item.get_ref().type_str()
            ),
        );
        return None;
    }
    loop {
        let err = match T::deserialize(ValueDeserializer::from(item.clone())) {
            Ok(decl) => return Some(decl),
            Err(e) => e,
        };
        let DeValue::Table(table) = item.get_mut() else {
            unreachable!("checked to be a table above")
        };
        let msg = err.message().trim();
        if let Some(field) = quoted_after(msg, "unknown field ") {
            if let Some((key, _)) = table.remove_entry(field) {
                let expected = msg
                    .split_once(", expected ")
                    .map(|(_, e)| format!("; expected {e}"))
                    .unwrap_or_default();
                r.at(
                    &key.span(),
                    Rule::UnknownKey,
                    format!("unknown key `{field}` in [[{kind}]]{expected}"),
                );
                continue;
            }
        }
        if let Some(field) = quoted_after(msg, "missing field ") {
            let which = name_of(table)
                .map(|n| format!(" `{n}`"))
                .unwrap_or_default();
            r.at(
                &table_span,
                Rule::MissingKey,
                format!("[[{kind}]]{which} has no `{field}` key"),
            );
            return None;
        }
        let span = err.span().unwrap_or(table_span.clone());
        let key = table
            .iter()
            .find(|(_, v)| v.span().contains(&span.start))
            .map(|(k, _)| format!("`{}`: ", k.get_ref()))
            .unwrap_or_default();
        r.at(&span, Rule::InvalidValue, format!("{key}{msg}"));
        return None;
    }
}

/// `unknown field `x`, expected ...` → `x`.
fn quoted_after<'m>(msg: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = msg.strip_prefix(prefix)?.strip_prefix('`')?;
    rest.split_once('`').map(|(name, _)| name)
}

fn name_of<'t>(table: &'t DeTable<'_>) -> Option<&'t str> {
    table.get("name").and_then(|v| v.get_ref().as_str())
}

// ------------------------------------------------------------- pass 2: meaning

/// Where a declared component was placed: the domain's index and the span of
/// its entry in that domain's `components` list.
type Placement = (usize, Range<usize>);

struct Checker<'d, 'r, 'f> {
    d: &'d Decls,
    interfaces: &'d [&'d str],
    r: &'r mut Report<'f>,
    /// First declaration of each component name.
    components: HashMap<&'d str, &'d ComponentDecl>,
    /// First declaration of each domain name.
    domains: HashMap<&'d str, usize>,
    /// Each known component's placements, in file order.
    placements: HashMap<&'d str, Vec<Placement>>,
    /// Each domain's parsed grants, in file order.
    grants: Vec<Vec<(Capability, Range<usize>)>>,
    /// Index of the (first) supervisor domain.
    supervisor: Option<usize>,
    /// More than one domain claims to supervise: rules that depend on which
    /// one does are skipped, `multiple-supervisors` says what to fix.
    ambiguous_supervisor: bool,
}

impl<'d, 'r, 'f> Checker<'d, 'r, 'f> {
    fn new(d: &'d Decls, interfaces: &'d [&'d str], r: &'r mut Report<'f>) -> Self {
        Checker {
            d,
            interfaces,
            r,
            components: HashMap::new(),
            domains: HashMap::new(),
            placements: HashMap::new(),
            grants: Vec::new(),
            supervisor: None,
            ambiguous_supervisor: false,
        }
    }

    /// The first declaration of each component, in file order (duplicates
    /// are reported by `names` and otherwise ignored).
    fn first_components(&self) -> Vec<&'d ComponentDecl> {
        let d = self.d;
        d.components
            .iter()
            .filter(|c| {
                self.components
                    .get(c.name.get_ref().as_str())
                    .is_some_and(|first| std::ptr::eq(*first, *c))
            })
            .collect()
    }

    fn run(mut self) {
        self.names();
        self.component_lists();
        self.domain_fields();
        self.placement();
        self.channels();
        self.reachability();
        self.exclusive_resources();
        self.capabilities_granted();
        self.capabilities_needed();
        self.supervision();
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.r.line(span)
    }

    /// `invalid-name`, `duplicate-name`; fills the name indices.
    fn names(&mut self) {
        let d = self.d;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for c in &d.components {
            if self.name("component", &c.name, &mut seen) {
                self.components.insert(c.name.get_ref(), c);
            }
        }
        let mut seen = HashMap::new();
        for (i, dom) in d.domains.iter().enumerate() {
            if self.name("domain", &dom.name, &mut seen) {
                self.domains.insert(dom.name.get_ref(), i);
            }
        }
        let mut seen = HashMap::new();
        for ch in &d.channels {
            self.name("channel", &ch.name, &mut seen);
        }
    }

    /// Check one name; true if it is the first with that name.
    fn name(
        &mut self,
        kind: &str,
        name: &'d Spanned<String>,
        seen: &mut HashMap<&'d str, usize>,
    ) -> bool {
        let n = name.get_ref().as_str();
        if !is_valid_name(n) {
            self.r.at(
                &name.span(),
                Rule::InvalidName,
                format!(
                    "{kind} name `{n}` must be lowercase kebab-case (a-z, 0-9, single dashes, starting with a letter), at most {MAX_NAME_LEN} characters"
                ),
            );
        }
        let line = self.line(&name.span());
        if let Some(first) = seen.get(n) {
            self.r.at_line(
                line,
                Rule::DuplicateName,
                format!("{kind} `{n}` is already declared at line {first}"),
            );
            false
        } else {
            seen.insert(n, line);
            true
        }
    }

    /// Report `duplicate-entry` for repeats in one list, keyed by `key`.
    fn no_repeats<'x>(
        &mut self,
        what: &str,
        entries: impl IntoIterator<Item = (&'x str, String, Range<usize>)>,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (key, shown, span) in entries {
            let line = self.line(&span);
            match seen.get(key) {
                Some(first) => self.r.at_line(
                    line,
                    Rule::DuplicateEntry,
                    format!("{what} lists `{shown}` again (first at line {first})"),
                ),
                None => {
                    seen.insert(key, line);
                }
            }
        }
    }

    fn interface(&mut self, i: &Spanned<String>) -> bool {
        let name = i.get_ref().as_str();
        let known = self.interfaces.contains(&name);
        if !known {
            self.r.at(
                &i.span(),
                Rule::UnknownInterface,
                format!(
                    "unknown interface `{name}`; known: {}",
                    self.interfaces.join(", ")
                ),
            );
        }
        known
    }

    /// Parse each capability string, reporting `unknown-capability` and
    /// `duplicate-entry`.
    fn capabilities(
        &mut self,
        what: &str,
        list: &[Spanned<String>],
    ) -> Vec<(Capability, Range<usize>)> {
        let mut out = Vec::new();
        for s in list {
            match s.get_ref().parse::<Capability>() {
                Ok(c) => out.push((c, s.span())),
                Err(e) => self
                    .r
                    .at(&s.span(), Rule::UnknownCapability, format!("{what}: {e}")),
            }
        }
        self.no_repeats(
            what,
            out.iter()
                .map(|(c, span)| (c.resource(), c.resource().to_owned(), span.clone())),
        );
        out
    }

    /// Per component: its interface and capability lists, its description.
    fn component_lists(&mut self) {
        for c in &self.d.components {
            let name = c.name.get_ref();
            if c.description.get_ref().trim().is_empty() {
                self.r.at(
                    &c.description.span(),
                    Rule::InvalidValue,
                    format!("component `{name}` has an empty description"),
                );
            }
            for (field, list) in [("serves", &c.serves), ("uses", &c.uses)] {
                for i in list {
                    self.interface(i);
                }
                self.no_repeats(
                    &format!("`{field}` of component `{name}`"),
                    list.iter()
                        .map(|i| (i.get_ref().as_str(), i.get_ref().clone(), i.span())),
                );
            }
            self.capabilities(&format!("`needs` of component `{name}`"), &c.needs);
        }
    }

    /// Per domain: its member and grant lists, restart policy, supervisor flag.
    fn domain_fields(&mut self) {
        let d = self.d;
        for (di, dom) in d.domains.iter().enumerate() {
            let name = dom.name.get_ref();
            if dom.components.is_empty() {
                self.r.at(
                    &dom.name.span(),
                    Rule::EmptyDomain,
                    format!("domain `{name}` holds no component; remove it or add its components"),
                );
            }
            for m in &dom.components {
                let m_name = m.get_ref().as_str();
                if self.components.contains_key(m_name) {
                    // A repeat inside one domain is a duplicate-entry, not a second placement.
                    let places = self.placements.entry(m_name).or_default();
                    if !places.iter().any(|(i, _)| *i == di) {
                        places.push((di, m.span()));
                    }
                } else {
                    self.r.at(
                        &m.span(),
                        Rule::UnknownComponent,
                        format!(
                            "domain `{name}` lists `{m_name}`, which is not a declared component"
                        ),
                    );
                }
            }
            self.no_repeats(
                &format!("`components` of domain `{name}`"),
                dom.components
                    .iter()
                    .map(|m| (m.get_ref().as_str(), m.get_ref().clone(), m.span())),
            );
            let grants = self.capabilities(&format!("`grants` of domain `{name}`"), &dom.grants);
            self.grants.push(grants);
            self.restart_policy(dom);
            if dom.is_supervisor() {
                let span = dom
                    .supervisor
                    .as_ref()
                    .map(|s| s.span())
                    .unwrap_or_default();
                match self.supervisor {
                    None => self.supervisor = Some(di),
                    Some(first) => {
                        self.ambiguous_supervisor = true;
                        let f = &d.domains[first].name;
                        let line = self.line(&f.span());
                        self.r.at(
                            &span,
                            Rule::MultipleSupervisors,
                            format!(
                                "domain `{name}` is a second supervisor; domain `{}` (line {line}) already is",
                                f.get_ref()
                            ),
                        );
                    }
                }
            }
        }
    }

    fn restart_policy(&mut self, dom: &DomainDecl) {
        let name = dom.name.get_ref();
        let restart = dom.restart.as_ref().map(|r| (*r.get_ref(), r.span()));
        match (&restart, &dom.max_restarts) {
            (Some((RestartDecl::OnFailure, span)), None) => self.r.at(
                span,
                Rule::RestartPolicy,
                format!(
                    "domain `{name}`: restart = \"on-failure\" needs `max-restarts` (how many restarts before the supervisor gives up)"
                ),
            ),
            (Some((RestartDecl::OnFailure, _)), Some(m)) if *m.get_ref() == 0 => self.r.at(
                &m.span(),
                Rule::RestartPolicy,
                format!("domain `{name}`: max-restarts = 0 never restarts; write restart = \"never\""),
            ),
            (Some((RestartDecl::OnFailure, _)), Some(_)) => {}
            (_, Some(m)) => self.r.at(
                &m.span(),
                Rule::RestartPolicy,
                format!("domain `{name}`: max-restarts only applies to restart = \"on-failure\""),
            ),
            (_, None) => {}
        }
        if dom.is_supervisor() {
            if let Some((policy, span)) = &restart {
                if *policy != RestartDecl::Never {
                    self.r.at(
                        span,
                        Rule::RestartPolicy,
                        format!(
                            "the supervisor domain `{name}` cannot be restarted: nothing supervises the supervisor"
                        ),
                    );
                }
            }
        }
    }

    /// `unplaced-component`, `multiply-placed-component`.
    fn placement(&mut self) {
        let d = self.d;
        for c in self.first_components() {
            let name = c.name.get_ref().as_str();
            let places = self.placements.get(name).cloned().unwrap_or_default();
            match places.as_slice() {
                [] => self.r.at(
                    &c.name.span(),
                    Rule::UnplacedComponent,
                    format!(
                        "component `{name}` is in no domain; list it in one domain's `components`"
                    ),
                ),
                [_] => {}
                [(first, first_span), rest @ ..] => {
                    let first_dom = d.domains[*first].name.get_ref();
                    let first_line = self.line(first_span);
                    for (di, span) in rest {
                        let dom = d.domains[*di].name.get_ref();
                        self.r.at(
                            span,
                            Rule::MultiplyPlacedComponent,
                            format!(
                                "component `{name}` is placed in domain `{dom}` but already in domain `{first_dom}` (line {first_line}); a component lives in one process"
                            ),
                        );
                    }
                }
            }
        }
    }

    fn domain_of(&self, component: &str) -> Option<usize> {
        self.placements
            .get(component)
            .and_then(|p| p.first())
            .map(|(di, _)| *di)
    }

    /// Channel ends and interfaces: `unknown-component`, `self-channel`,
    /// `unknown-interface`, `interface-mismatch`, `supervisor-only`.
    fn channels(&mut self) {
        let d = self.d;
        for ch in &d.channels {
            let name = ch.name.get_ref();
            let iface = ch.interface.get_ref();
            let mut ends = [None, None];
            for (slot, (role, end)) in ends
                .iter_mut()
                .zip([("client", &ch.client), ("server", &ch.server)])
            {
                let n = end.get_ref().as_str();
                match self.components.get(n) {
                    Some(c) => *slot = Some(*c),
                    None => self.r.at(
                        &end.span(),
                        Rule::UnknownComponent,
                        format!(
                            "channel `{name}` has {role} `{n}`, which is not a declared component"
                        ),
                    ),
                }
            }
            if ch.client.get_ref() == ch.server.get_ref() {
                self.r.at(
                    &ch.server.span(),
                    Rule::SelfChannel,
                    format!(
                        "channel `{name}` connects `{}` to itself",
                        ch.client.get_ref()
                    ),
                );
            }
            if !self.interface(&ch.interface) {
                continue;
            }
            let [client, server] = ends;
            if let Some(s) = server {
                if !has(&s.serves, iface) {
                    self.r.at(
                        &ch.server.span(),
                        Rule::InterfaceMismatch,
                        format!(
                            "channel `{name}` carries {iface} but its server `{}` does not serve it (serves: {})",
                            ch.server.get_ref(),
                            list(&s.serves)
                        ),
                    );
                }
            }
            if let Some(c) = client {
                if !has(&c.uses, iface) {
                    self.r.at(
                        &ch.client.span(),
                        Rule::InterfaceMismatch,
                        format!(
                            "channel `{name}` carries {iface} but its client `{}` does not use it (uses: {})",
                            ch.client.get_ref(),
                            list(&c.uses)
                        ),
                    );
                }
            }
            self.supervisor_only(ch);
        }
    }

    /// Only the supervisor domain may hold the client end of a Supervisor
    /// channel: anything else could stop the log store.
    fn supervisor_only(&mut self, ch: &ChannelDecl) {
        if ch.interface.get_ref() != SUPERVISOR_INTERFACE || self.ambiguous_supervisor {
            return;
        }
        let (Some(sup), Some(client_dom)) = (self.supervisor, self.domain_of(ch.client.get_ref()))
        else {
            return;
        };
        if sup != client_dom {
            let d = &self.d.domains;
            self.r.at(
                &ch.client.span(),
                Rule::SupervisorOnly,
                format!(
                    "channel `{}` lets `{}` (domain `{}`) use {SUPERVISOR_INTERFACE}; only the supervisor domain `{}` may",
                    ch.name.get_ref(),
                    ch.client.get_ref(),
                    d[client_dom].name.get_ref(),
                    d[sup].name.get_ref()
                ),
            );
        }
    }

    /// `unreachable-use`: every used interface has a channel from this
    /// component carrying it. (Whether that channel's server really serves
    /// the interface is `interface-mismatch`'s business.)
    fn reachability(&mut self) {
        let d = self.d;
        for c in self.first_components() {
            let name = c.name.get_ref();
            for u in &c.uses {
                let iface = u.get_ref();
                if !self.interfaces.contains(&iface.as_str()) {
                    continue;
                }
                let connected = d
                    .channels
                    .iter()
                    .any(|ch| ch.client.get_ref() == name && ch.interface.get_ref() == iface);
                if !connected {
                    self.r.at(
                        &u.span(),
                        Rule::UnreachableUse,
                        format!(
                            "component `{name}` uses {iface} but no channel connects it to a component serving {iface}"
                        ),
                    );
                }
            }
        }
    }

    /// `exclusive-resource`: kvm and pmu go to one domain.
    fn exclusive_resources(&mut self) {
        let d = self.d;
        let mut holder: HashMap<&str, usize> = HashMap::new();
        for (di, grants) in self.grants.clone().iter().enumerate() {
            for (cap, span) in grants.iter().filter(|(c, _)| c.is_exclusive()) {
                match holder.get(cap.resource()) {
                    Some(&first) if first != di => {
                        let f = &d.domains[first].name;
                        let line = self.line(&f.span());
                        self.r.at(
                            span,
                            Rule::ExclusiveResource,
                            format!(
                                "domain `{}` is granted `{cap}`, already granted to domain `{}` (line {line}); an exclusive resource belongs to one domain",
                                d.domains[di].name.get_ref(),
                                f.get_ref()
                            ),
                        );
                    }
                    Some(_) => {}
                    None => {
                        holder.insert(cap.resource(), di);
                    }
                }
            }
        }
    }

    /// `capability-not-granted`: each need is covered by the domain's grants.
    fn capabilities_granted(&mut self) {
        let d = self.d;
        for c in self.first_components() {
            let name = c.name.get_ref();
            let Some(di) = self.domain_of(name) else {
                continue;
            };
            let dom = d.domains[di].name.get_ref();
            for n in &c.needs {
                let Ok(need) = n.get_ref().parse::<Capability>() else {
                    continue;
                };
                let grants = &self.grants[di];
                if grants.iter().any(|(g, _)| g.covers(need)) {
                    continue;
                }
                let partial = grants
                    .iter()
                    .find(|(g, _)| g.resource() == need.resource())
                    .map(|(g, _)| format!(" (it grants only `{g}`)"))
                    .unwrap_or_default();
                self.r.at(
                    &n.span(),
                    Rule::CapabilityNotGranted,
                    format!("component `{name}` needs `{need}` but its domain `{dom}` does not grant it{partial}"),
                );
            }
        }
    }

    /// `unneeded-capability`: least privilege, a domain grants exactly what
    /// its components need.
    fn capabilities_needed(&mut self) {
        let d = self.d;
        for (di, dom) in d.domains.iter().enumerate() {
            let members: Vec<&ComponentDecl> = dom
                .components
                .iter()
                .filter_map(|m| self.components.get(m.get_ref().as_str()).copied())
                .collect();
            let needs: Vec<Capability> = members
                .iter()
                .flat_map(|c| c.needs.iter().filter_map(|n| n.get_ref().parse().ok()))
                .collect();
            for (grant, span) in self.grants[di].clone() {
                let wanted = needs.iter().filter(|n| n.resource() == grant.resource());
                let max_access = wanted.clone().map(|n| n.access()).max();
                let dname = dom.name.get_ref();
                match max_access {
                    None => {
                        let who = members
                            .iter()
                            .map(|c| c.name.get_ref().as_str())
                            .collect::<Vec<_>>();
                        self.r.at(
                            &span,
                            Rule::UnneededCapability,
                            format!(
                                "domain `{dname}` grants `{grant}` but none of its components ({}) needs it",
                                if who.is_empty() { "none".to_owned() } else { who.join(", ") }
                            ),
                        );
                    }
                    Some(access) if access < grant.access() => {
                        let most = wanted
                            .max_by_key(|n| n.access())
                            .map(|n| n.to_string())
                            .unwrap_or_default();
                        self.r.at(
                            &span,
                            Rule::UnneededCapability,
                            format!("domain `{dname}` grants `{grant}` but its components need only `{most}`"),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }

    /// `no-supervisor`, `unsupervised-domain`.
    fn supervision(&mut self) {
        let d = self.d;
        let Some(sup) = self.supervisor else {
            self.r.at_line(
                1,
                Rule::NoSupervisor,
                "no domain has `supervisor = true`; exactly one domain must supervise the others"
                    .to_owned(),
            );
            return;
        };
        if self.ambiguous_supervisor {
            return;
        }
        let sup_name = d.domains[sup].name.get_ref();
        let named: HashSet<usize> = self.domains.values().copied().collect();
        for (di, dom) in d.domains.iter().enumerate() {
            if di == sup || !named.contains(&di) || dom.components.is_empty() {
                continue;
            }
            let reached = d.channels.iter().any(|ch| {
                ch.interface.get_ref() == SUPERVISOR_INTERFACE
                    && self.domain_of(ch.client.get_ref()) == Some(sup)
                    && self.domain_of(ch.server.get_ref()) == Some(di)
            });
            if !reached {
                self.r.at(
                    &dom.name.span(),
                    Rule::UnsupervisedDomain,
                    format!(
                        "domain `{}` has no {SUPERVISOR_INTERFACE} channel from the supervisor domain `{sup_name}`, so it cannot be stopped or queried",
                        dom.name.get_ref()
                    ),
                );
            }
        }
    }
}

fn has(list: &[Spanned<String>], item: &str) -> bool {
    list.iter().any(|s| s.get_ref() == item)
}

fn list(items: &[Spanned<String>]) -> String {
    if items.is_empty() {
        return "nothing".to_owned();
    }
    items
        .iter()
        .map(|s| s.get_ref().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lowercase kebab-case: names become process names and socket file names,
/// so no slashes, dots or spaces can slip into a path.
fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && !name.contains("--")
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

// ------------------------------------------------------------------- build

/// The typed model of a file that passed every rule.
fn build(d: &Decls) -> System {
    let domain_of: HashMap<&str, &str> = d
        .domains
        .iter()
        .flat_map(|dom| {
            dom.components
                .iter()
                .map(move |m| (m.get_ref().as_str(), dom.name.get_ref().as_str()))
        })
        .collect();
    let caps = |list: &[Spanned<String>]| -> Vec<Capability> {
        list.iter()
            .filter_map(|s| s.get_ref().parse().ok())
            .collect()
    };
    let strings = |list: &[Spanned<String>]| -> Vec<String> {
        list.iter().map(|s| s.get_ref().clone()).collect()
    };
    let components = d
        .components
        .iter()
        .map(|c| Component {
            name: c.name.get_ref().clone(),
            description: c.description.get_ref().trim().to_owned(),
            serves: strings(&c.serves),
            uses: strings(&c.uses),
            needs: caps(&c.needs),
            domain: domain_of[c.name.get_ref().as_str()].to_owned(),
        })
        .collect();
    let domains = d
        .domains
        .iter()
        .map(|dom| Domain {
            name: dom.name.get_ref().clone(),
            components: strings(&dom.components),
            grants: caps(&dom.grants),
            restart: match (
                dom.restart.as_ref().map(|r| *r.get_ref()),
                &dom.max_restarts,
            ) {
                (Some(RestartDecl::Always), _) => RestartPolicy::Always,
                (Some(RestartDecl::OnFailure), Some(m)) => RestartPolicy::OnFailure {
                    max_restarts: *m.get_ref(),
                },
                _ => RestartPolicy::Never,
            },
            supervisor: dom.is_supervisor(),
        })
        .collect();
    let channels = d
        .channels
        .iter()
        .map(|ch| Channel {
            name: ch.name.get_ref().clone(),
            interface: ch.interface.get_ref().clone(),
            kind: *ch.kind.get_ref(),
            client: ch.client.get_ref().clone(),
            server: ch.server.get_ref().clone(),
            client_domain: domain_of[ch.client.get_ref().as_str()].to_owned(),
            server_domain: domain_of[ch.server.get_ref().as_str()].to_owned(),
        })
        .collect();
    System {
        components,
        domains,
        channels,
    }
}

#[cfg(test)]
mod tests;
