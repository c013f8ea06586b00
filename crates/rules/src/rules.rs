//! The compiled rule set: validated rules ready to be applied, and the
//! client filter that decides which rules apply to a session.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use understudy_config::Cidr;

use crate::cache::AnalysisCache;
use crate::mask::MaskMethod;
use crate::model::{StatementClass, Unprovable};
use crate::names::{ColumnPattern, NamePattern, TablePattern};

/// All rules of a rules file, with the statement cache they share.
#[derive(Debug)]
pub struct RuleSet {
    /// The rules, in file order.
    pub rules: Vec<Arc<Rule>>,
    /// How long a request touching a held table waits.
    pub hold_timeout: Duration,
    pub(crate) cache: AnalysisCache,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            rules: Vec::new(),
            hold_timeout: Duration::from_secs(30),
            cache: AnalysisCache::default(),
        }
    }
}

/// One rule.
#[derive(Debug)]
pub struct Rule {
    /// Its name, given in denials and metrics.
    pub name: String,
    /// Which clients it applies to.
    pub clients: ClientFilter,
    /// What it does.
    pub action: Action,
}

/// The clients a rule applies to; an empty list matches everyone.
#[derive(Debug, Default)]
pub struct ClientFilter {
    /// Role names.
    pub users: Vec<String>,
    /// Databases.
    pub databases: Vec<String>,
    /// `application_name`s.
    pub application_names: Vec<String>,
    /// Client networks.
    pub addresses: Vec<Cidr>,
}

/// Who a session is, as far as rules care.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The role.
    pub user: String,
    /// The database.
    pub database: String,
    /// `application_name` from the startup packet, if any.
    pub application_name: Option<String>,
    /// The client's address.
    pub address: IpAddr,
}

impl ClientFilter {
    /// True when the rule applies to `client`.
    pub fn matches(&self, client: &ClientInfo) -> bool {
        let listed =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        listed(&self.users, &client.user)
            && listed(&self.databases, &client.database)
            && (self.application_names.is_empty()
                || client
                    .application_name
                    .as_deref()
                    .is_some_and(|a| self.application_names.iter().any(|v| v == a)))
            && (self.addresses.is_empty()
                || self.addresses.iter().any(|c| c.contains(client.address)))
    }
}

/// What a rule does.
#[derive(Debug)]
pub enum Action {
    /// Refuses statements.
    Deny(DenyRule),
    /// Refuses whatever is not listed.
    Allow(AllowRule),
    /// Masks result values.
    Mask(MaskRule),
    /// Rewrites statements.
    Rewrite(RewriteRule),
}

/// A compiled `deny`.
#[derive(Debug, Default)]
pub struct DenyRule {
    /// Tables refused.
    pub tables: Vec<TablePattern>,
    /// Columns refused.
    pub columns: Vec<ColumnPattern>,
    /// Statement kinds refused.
    pub statements: Vec<StatementClass>,
    /// Functions refused.
    pub functions: Vec<String>,
}

/// A compiled `allow`.
#[derive(Debug, Default)]
pub struct AllowRule {
    /// The only tables allowed.
    pub tables: Option<Vec<TablePattern>>,
    /// The only statement kinds allowed.
    pub statements: Option<Vec<StatementClass>>,
}

/// A compiled `mask`.
#[derive(Debug)]
pub struct MaskRule {
    /// Column-name patterns.
    pub columns: Vec<NamePattern>,
    /// Only columns of these tables (any table when empty).
    pub tables: Vec<TablePattern>,
    /// How values are masked.
    pub method: MaskMethod,
    /// Policy for outputs the parser cannot prove.
    pub unprovable: Unprovable,
}

/// A compiled `rewrite`.
#[derive(Debug)]
pub enum RewriteRule {
    /// Statements with this fingerprint become `replacement`.
    Fingerprint {
        /// The fingerprint of the sample statement.
        fingerprint: u64,
        /// The replacement text (`$n` = the original's n-th constant).
        replacement: String,
    },
    /// A table is renamed in every statement.
    RenameTable {
        /// The name clients use.
        from: TablePattern,
        /// The name sent to the server.
        to: String,
    },
    /// Unbounded SELECTs of a table get a LIMIT.
    Limit {
        /// The table.
        table: TablePattern,
        /// The limit.
        rows: i32,
    },
}

impl RuleSet {
    /// The rules that apply to `client`.
    pub fn for_client(self: &Arc<Self>, client: &ClientInfo) -> crate::SessionRules {
        crate::SessionRules::new(
            Arc::clone(self),
            self.rules
                .iter()
                .filter(|r| r.clients.matches(client))
                .cloned()
                .collect(),
        )
    }

    /// The analysis of `text`, from the cache when it was seen before;
    /// `None` when it does not parse.
    pub fn analyse(&self, text: &str) -> Option<Arc<crate::Analysis>> {
        self.cache.get(text)
    }

    /// True when the file has no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
