//! Which sections a statement must carry, and the check of a scanned statement against it.
//!
//! A *required* section missing from any statement (account) fails the run with
//! `MISSING_REQUIRED_SECTION` ([`SectionCheck::into_result`]); a *reconcile* section
//! missing is only a warning, recorded in the run's timeline and `meta_json`. "Present"
//! and "has rows" are different checks: a section selected in the query but empty for the
//! period appears as `<X/>` or `<X></X>` and is present with 0 rows; [`RequireRows`]
//! turns "has rows" on for some or all required sections.
//!
//! ```
//! use runledger::flex::{check, scan_bytes, SectionPolicy};
//!
//! let xml = br#"<FlexQueryResponse type="AF"><FlexStatements count="1">
//! <FlexStatement accountId="U1"><CashReport/><Trades/></FlexStatement>
//! </FlexStatements></FlexQueryResponse>"#;
//! let policy = SectionPolicy {
//!     required: vec!["CashReport".into(), "OpenPositions".into()],
//!     ..SectionPolicy::none()
//! };
//! let outcome = check(&scan_bytes(xml).unwrap(), &policy);
//! assert_eq!(outcome.missing_required[0].section, "OpenPositions");
//! let err = outcome.into_result().unwrap_err();
//! assert_eq!(err.code(), "MISSING_REQUIRED_SECTION");
//! assert_eq!(err.to_string(), "missing required sections: U1: OpenPositions");
//! ```

use super::statement::StatementReport;

/// Sections every statement must have (`required`), should have (`reconcile`), and which
/// of them must also have rows. Serializable so a pipeline's configuration and the policy
/// that judged a run can be stored in `meta_json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SectionPolicy {
    /// Missing from any statement: the run fails with `MISSING_REQUIRED_SECTION`.
    pub required: Vec<String>,
    /// Missing from any statement: a warning; the run may still succeed.
    pub reconcile: Vec<String>,
    /// Which required sections must also have at least one row.
    #[serde(default)]
    pub require_rows: RequireRows,
}

/// Which sections must have rows, not only be present.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequireRows {
    /// Presence is enough (an empty `<Trades/>` on a day without trades passes).
    #[default]
    None,
    /// Every required section must have at least one row.
    AllRequired,
    /// These sections must be present with at least one row (they are required even when
    /// not listed in [`SectionPolicy::required`]).
    Only(Vec<String>),
}

impl SectionPolicy {
    /// The required sections of [`SectionPolicy::activity`]: what a ledger needs from a
    /// daily activity statement to book an account: who and in which base currency
    /// (`AccountInformation`), cash balances (`CashReport`), holdings (`OpenPositions`)
    /// and executions (`Trades`).
    pub const ACTIVITY_REQUIRED: &'static [&'static str] = &[
        "AccountInformation",
        "CashReport",
        "OpenPositions",
        "Trades",
    ];

    /// The reconcile sections of [`SectionPolicy::activity`]: what lets the ledger
    /// cross-check the required ones (NAV change and equity summary against positions and
    /// cash; dividends, fees, interest, corporate actions and transfers that explain cash
    /// and position moves; FX rates to value them in the base currency).
    pub const ACTIVITY_RECONCILE: &'static [&'static str] = &[
        "ChangeInNAV",
        "EquitySummaryInBase",
        "CashTransactions",
        "CorporateActions",
        "Transfers",
        "ConversionRates",
    ];

    /// The documented default for an activity (`AF`) statement: required
    /// [`Self::ACTIVITY_REQUIRED`], reconcile [`Self::ACTIVITY_RECONCILE`], presence only
    /// (an account can have a day without trades).
    pub fn activity() -> Self {
        let own = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        SectionPolicy {
            required: own(Self::ACTIVITY_REQUIRED),
            reconcile: own(Self::ACTIVITY_RECONCILE),
            require_rows: RequireRows::None,
        }
    }

    /// A policy that requires nothing (every statement passes).
    pub fn none() -> Self {
        SectionPolicy {
            required: Vec::new(),
            reconcile: Vec::new(),
            require_rows: RequireRows::None,
        }
    }

    fn rows_required(&self, section: &str) -> bool {
        match &self.require_rows {
            RequireRows::None => false,
            RequireRows::AllRequired => self.required.iter().any(|s| s == section),
            RequireRows::Only(names) => names.iter().any(|s| s == section),
        }
    }

    /// Required sections, then `Only` sections not already listed, without repeats.
    fn hard_sections(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let extra = match &self.require_rows {
            RequireRows::Only(names) => names.as_slice(),
            _ => &[],
        };
        for s in self.required.iter().chain(extra) {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }
}

impl Default for SectionPolicy {
    /// [`SectionPolicy::activity`].
    fn default() -> Self {
        SectionPolicy::activity()
    }
}

/// Why a section counts as missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missing {
    /// The section is not in the statement (not selected in the query).
    Absent,
    /// The section is present but has no rows, and the policy requires rows.
    Empty,
}

serde_display!(Missing);

/// One section missing from one statement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MissingSection {
    /// The statement's `accountId`; `#n` (1-based position) when it has none; `*` when the
    /// file holds no statement at all.
    pub account: String,
    /// The section name.
    pub section: String,
    /// Absent, or present without rows.
    pub missing: Missing,
}

/// The outcome of [`check`]: empty lists mean the statement passed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SectionCheck {
    /// Required sections absent from a statement (each per account). Fails the run.
    pub missing_required: Vec<MissingSection>,
    /// Reconcile sections absent from a statement: warnings only.
    pub missing_reconcile: Vec<MissingSection>,
    /// Sections present without rows where the policy requires rows. Fails the run.
    pub empty_required: Vec<MissingSection>,
}

impl SectionCheck {
    /// Whether nothing fails the run (warnings allowed).
    pub fn passed(&self) -> bool {
        self.missing_required.is_empty() && self.empty_required.is_empty()
    }

    /// `Ok(self)` when [`Self::passed`], else [`super::FlexError::MissingRequiredSection`] naming
    /// every absent or empty required section per account.
    pub fn into_result(self) -> Result<SectionCheck, super::FlexError> {
        if self.passed() {
            return Ok(self);
        }
        let mut missing = self.missing_required;
        missing.extend(self.empty_required);
        Err(super::FlexError::MissingRequiredSection { missing })
    }
}

/// Checks every statement of `report` against `policy`. A report with no statement at all
/// misses every required and reconcile section under the account `*`.
pub fn check(report: &StatementReport, policy: &SectionPolicy) -> SectionCheck {
    let hard = policy.hard_sections();
    let mut out = SectionCheck::default();
    let entry = |account: &str, section: &str, missing| MissingSection {
        account: account.to_string(),
        section: section.to_string(),
        missing,
    };
    if report.statements.is_empty() {
        for s in &hard {
            out.missing_required.push(entry("*", s, Missing::Absent));
        }
        for s in &policy.reconcile {
            out.missing_reconcile.push(entry("*", s, Missing::Absent));
        }
        return out;
    }
    for (i, st) in report.statements.iter().enumerate() {
        let account = match &st.account_id {
            Some(a) if !a.is_empty() => a.clone(),
            _ => format!("#{}", i + 1),
        };
        for s in &hard {
            match st.rows(s) {
                None => out
                    .missing_required
                    .push(entry(&account, s, Missing::Absent)),
                Some(0) if policy.rows_required(s) => {
                    out.empty_required.push(entry(&account, s, Missing::Empty))
                }
                Some(_) => {}
            }
        }
        for s in &policy.reconcile {
            if st.section(s).is_none() {
                out.missing_reconcile
                    .push(entry(&account, s, Missing::Absent));
            }
        }
    }
    out
}

/// `U1: A, B; U2: C (no rows)`: every missing section grouped by account, in order.
pub(crate) fn describe(missing: &[MissingSection]) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for m in missing {
        let name = match m.missing {
            Missing::Absent => m.section.clone(),
            Missing::Empty => format!("{} (no rows)", m.section),
        };
        match groups.iter_mut().find(|(a, _)| *a == m.account) {
            Some((_, names)) => names.push(name),
            None => groups.push((&m.account, vec![name])),
        }
    }
    groups
        .iter()
        .map(|(a, names)| format!("{a}: {}", names.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}
