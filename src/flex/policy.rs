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

/// The section names IB's Flex statements use (direct children of `FlexStatement`), the
/// one list the policy's name check reads: from IB's Flex query reference and
/// PROTOCOL.md, spelled as IB spells them (`PendingExcercises`). A policy naming anything
/// else is allowed (IB keeps adding sections) but flagged
/// ([`SectionPolicy::unknown_sections`]).
pub const KNOWN_SECTIONS: &[&str] = &[
    "AccountInformation",
    "CFDCharges",
    "CashReport",
    "CashTransactions",
    "ChangeInDividendAccruals",
    "ChangeInNAV",
    "ChangeInPositionValues",
    "ClientFees",
    "ClientFeesDetail",
    "CommissionCredits",
    "ComplexPositions",
    "ConversionRates",
    "CorporateActions",
    "DebitCardActivities",
    "EquitySummaryInBase",
    "FIFOPerformanceSummaryInBase",
    "FdicInsuredDepositsByBank",
    "FxPositions",
    "FxTransactions",
    "HKIPOOpenSubscriptions",
    "HKIPOSubscriptionActivity",
    "HardToBorrowDetails",
    "IBGNoteTransactions",
    "IncentiveCouponAccrualDetails",
    "InterestAccruals",
    "MTDYTDPerformanceSummary",
    "MTMPerformanceSummaryInBase",
    "NetStockPositionSummary",
    "OpenDividendAccruals",
    "OpenPositions",
    "OptionEAE",
    "PendingExcercises",
    "PriorPeriodPositions",
    "RoutingCommissions",
    "SLBActivities",
    "SLBCollaterals",
    "SLBFees",
    "SLBOpenContracts",
    "SalesTaxes",
    "SecuritiesInfo",
    "StmtFunds",
    "StockGrantActivities",
    "TierInterestDetails",
    "TradeConfirms",
    "TradeTransfers",
    "Trades",
    "TransactionTaxes",
    "Transfers",
    "UnbookedTrades",
    "UnbundledCommissionDetails",
    "UnsettledTransfers",
];

/// Whether `name` is one of IB's section names ([`KNOWN_SECTIONS`]).
pub fn is_known_section(name: &str) -> bool {
    KNOWN_SECTIONS.contains(&name)
}

/// A named starting point for a [`SectionPolicy`] (`--policy` on the CLI, `policy` in the
/// configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyPreset {
    /// [`SectionPolicy::activity`].
    Activity,
    /// [`SectionPolicy::none`]: nothing required.
    None,
}

serde_display!(PolicyPreset);

impl std::str::FromStr for PolicyPreset {
    type Err = super::FlexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "activity" => Ok(PolicyPreset::Activity),
            "none" => Ok(PolicyPreset::None),
            other => Err(super::FlexError::invalid(
                "policy",
                format!(
                    "{:?} is not a section policy (activity or none)",
                    other.chars().take(32).collect::<String>()
                ),
            )),
        }
    }
}

/// Section names as a user typed them (`--require "Trades, CashReport"`): each trimmed,
/// repeats dropped; an empty name (`A,,B`, a trailing comma, only spaces) is refused with
/// `INVALID_INPUT` naming `field`, as is a name longer than 256 bytes.
pub fn parse_section_names<S: AsRef<str>>(
    field: &str,
    names: &[S],
) -> Result<Vec<String>, super::FlexError> {
    let mut out: Vec<String> = Vec::new();
    for (i, raw) in names.iter().enumerate() {
        let name = raw.as_ref().trim();
        if name.is_empty() {
            return Err(super::FlexError::invalid(
                field.to_string(),
                format!("section name {} is empty", i + 1),
            ));
        }
        if name.len() > 256 || name.chars().any(char::is_control) {
            return Err(super::FlexError::invalid(
                field.to_string(),
                format!("section name {} is not a name", i + 1),
            ));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

impl SectionPolicy {
    /// The policy of a preset.
    pub fn preset(preset: PolicyPreset) -> Self {
        match preset {
            PolicyPreset::Activity => SectionPolicy::activity(),
            PolicyPreset::None => SectionPolicy::none(),
        }
    }

    /// The policy the CLI's `--policy`, `--require` and `--reconcile` (and the
    /// configuration's `policy`, `require`, `reconcile`) describe: `require` and
    /// `reconcile` replace the preset's lists; without a preset, naming either list starts
    /// from [`SectionPolicy::none`], and naming nothing is [`SectionPolicy::activity`].
    /// Names are checked with [`parse_section_names`].
    pub fn from_parts<S: AsRef<str>>(
        preset: Option<PolicyPreset>,
        require: Option<&[S]>,
        reconcile: Option<&[S]>,
    ) -> Result<Self, super::FlexError> {
        let mut policy = match (preset, require.is_some() || reconcile.is_some()) {
            (Some(p), _) => SectionPolicy::preset(p),
            (None, true) => SectionPolicy::none(),
            (None, false) => SectionPolicy::activity(),
        };
        if let Some(names) = require {
            policy.required = parse_section_names("require", names)?;
        }
        if let Some(names) = reconcile {
            policy.reconcile = parse_section_names("reconcile", names)?;
        }
        Ok(policy)
    }

    /// The names this policy uses that are not IB section names ([`KNOWN_SECTIONS`]):
    /// a typo (`Trade` for `Trades`) would otherwise fail every run as "missing".
    pub fn unknown_sections(&self) -> Vec<String> {
        let rows_only = match &self.require_rows {
            RequireRows::Only(names) => names.as_slice(),
            _ => &[],
        };
        let mut out: Vec<String> = Vec::new();
        for name in self.required.iter().chain(&self.reconcile).chain(rows_only) {
            if !is_known_section(name) && !out.contains(name) {
                out.push(name.clone());
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

/// The statements of `report` a check looks at: all of them, or only `account`'s.
pub fn for_account<'r>(
    report: &'r StatementReport,
    account: Option<&str>,
) -> Vec<&'r super::StatementInfo> {
    report
        .statements
        .iter()
        .filter(|s| account.is_none_or(|a| s.account_id.as_deref() == Some(a)))
        .collect()
}

/// [`check`] restricted to the statements of `account` (all when `None`): on a
/// multi-account statement, `--account U1` judges only U1's sections.
pub fn check_account(
    report: &StatementReport,
    policy: &SectionPolicy,
    account: Option<&str>,
) -> SectionCheck {
    match account {
        None => check(report, policy),
        Some(_) => {
            let only = StatementReport {
                statements: for_account(report, account).into_iter().cloned().collect(),
                ..report.clone()
            };
            check(&only, policy)
        }
    }
}

/// A statement date as `yyyymmdd` digits, when written `yyyyMMdd` or `yyyy-MM-dd` (the
/// other formats a query may choose, like `MM/dd/yyyy`, are ambiguous: `None`).
fn ymd(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let digits: String = match raw.len() {
        8 => raw.to_string(),
        10 if raw.as_bytes()[4] == b'-' && raw.as_bytes()[7] == b'-' => raw.replace('-', ""),
        _ => return None,
    };
    (digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// Compares the period each statement covers (`fromDate`/`toDate`, restricted to
/// `account` when given) with the one requested: a requested range
/// ([`super::StatementPeriod::Range`]) must come back exactly, else
/// [`super::FlexError::PeriodMismatch`] (`FLEX_PERIOD_MISMATCH`) with both periods. The
/// query's own dates and `Days` periods are relative to IB's calendar and not compared.
/// Returns the accounts whose dates are in a format that cannot be compared (a warning).
pub fn check_period(
    report: &StatementReport,
    period: &super::StatementPeriod,
    account: Option<&str>,
) -> Result<Vec<String>, super::FlexError> {
    let super::StatementPeriod::Range { from, to } = period else {
        return Ok(Vec::new());
    };
    let fmt = |d: &time::Date| format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day());
    let (want_from, want_to) = (fmt(from), fmt(to));
    let mut unchecked = Vec::new();
    for (i, st) in for_account(report, account).into_iter().enumerate() {
        let account = match &st.account_id {
            Some(a) if !a.is_empty() => a.clone(),
            _ => format!("#{}", i + 1),
        };
        let got = (
            st.from_date.as_deref().and_then(ymd),
            st.to_date.as_deref().and_then(ymd),
        );
        let absent = st.from_date.is_none() && st.to_date.is_none();
        let comparable = matches!(got, (Some(_), Some(_)));
        if !absent && !comparable {
            unchecked.push(account);
            continue;
        }
        if got != (Some(want_from.clone()), Some(want_to.clone())) {
            return Err(super::FlexError::PeriodMismatch {
                account,
                requested_from: want_from,
                requested_to: want_to,
                returned_from: st.from_date.clone().unwrap_or_default(),
                returned_to: st.to_date.clone().unwrap_or_default(),
            });
        }
    }
    Ok(unchecked)
}
