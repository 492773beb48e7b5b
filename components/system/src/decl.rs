//! The file as written: one serde struct per `[[component]]`, `[[domain]]`
//! and `[[channel]]` table. Every value keeps its byte span so a finding can
//! name its line. Unknown keys are refused here (`deny_unknown_fields`); all
//! meaning is checked in [`crate::validate`].

use serde::Deserialize;
use toml::Spanned;

use crate::model::ChannelKind;

/// A `[[component]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ComponentDecl {
    pub name: Spanned<String>,
    pub description: Spanned<String>,
    #[serde(default)]
    pub serves: Vec<Spanned<String>>,
    #[serde(default)]
    pub uses: Vec<Spanned<String>>,
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
}

/// The restart policies as spelled in `restart = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RestartDecl {
    Never,
    OnFailure,
    Always,
}

/// A `[[domain]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct DomainDecl {
    pub name: Spanned<String>,
    pub components: Vec<Spanned<String>>,
    #[serde(default)]
    pub grants: Vec<Spanned<String>>,
    pub restart: Option<Spanned<RestartDecl>>,
    pub max_restarts: Option<Spanned<u32>>,
    pub supervisor: Option<Spanned<bool>>,
}

impl DomainDecl {
    pub fn is_supervisor(&self) -> bool {
        self.supervisor.as_ref().is_some_and(|s| *s.get_ref())
    }
}

/// A `[[channel]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ChannelDecl {
    pub name: Spanned<String>,
    pub interface: Spanned<String>,
    pub kind: Spanned<ChannelKind>,
    pub client: Spanned<String>,
    pub server: Spanned<String>,
}

/// The whole file, each table read on its own so one broken table does not
/// hide the others' errors.
#[derive(Debug, Default)]
pub(crate) struct Decls {
    pub components: Vec<ComponentDecl>,
    pub domains: Vec<DomainDecl>,
    pub channels: Vec<ChannelDecl>,
}
