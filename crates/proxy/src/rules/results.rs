//! Masking the rows a session receives.
//!
//! The tracker follows which request the server's replies belong to (in
//! order, like the journal: an extended-protocol error skips to Sync,
//! ReadyForQuery ends a Query or a Sync), and knows for each result the
//! masks of its fields: the statement's masks (from the rules, by target)
//! laid over the RowDescription's field names, types and formats. For the
//! extended protocol the fields come from the Describe of the statement or
//! portal and the formats from the Bind.
//!
//! Rows the tracker cannot place (after a failed-over transaction was failed
//! instead of replayed, or when the rules start masking in the middle of a
//! session) have every value masked: a value is never shown unmasked because
//! the proxy lost track. A replayed unit needs nothing special: the new
//! server's replies resume exactly where the tracker stopped.
//!
//! The journal digests the server's own bytes; masking is a pure function
//! of them and of the rules, so a replay that matches the digests gives the
//! client the same masked rows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, BytesMut};
use understudy_protocol::backend;
use understudy_rules::{CopyFormat, MaskMethod, ResultMask};

use super::client::Body;

/// How one field of a result is masked.
#[derive(Debug, Clone, Copy)]
pub struct FieldMask {
    method: MaskMethod,
    binary: bool,
    type_oid: u32,
}

/// A field of a RowDescription.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    type_oid: u32,
    format: i16,
}

type Plan = Arc<Vec<Option<FieldMask>>>;

/// The masks of a `COPY … TO STDOUT`, resolved as far as the proxy can
/// before the server says how many columns there are.
#[derive(Debug, Clone)]
pub enum CopyColumnsResolved {
    /// The mask of each column.
    Known(Vec<Option<MaskMethod>>),
    /// Like a query result, without field names.
    Query(ResultMask),
    /// Every column is masked with this method (the columns are unknown).
    All(MaskMethod),
}

/// How the data of one COPY is masked.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    /// Which columns.
    pub columns: CopyColumnsResolved,
    /// The data format.
    pub format: CopyFormat,
}

/// The COPY whose data is flowing now.
#[derive(Debug)]
struct CopyOut {
    masks: Vec<Option<MaskMethod>>,
    format: CopyFormat,
    header_pending: bool,
}

/// One prepared statement, as one Parse made it. Shared with the Describe
/// and Bind requests that refer to it, because a pipelined client may
/// prepare another statement under the same name before the server answers
/// them.
#[derive(Debug, Default)]
struct StatementPlan {
    masks: Arc<Vec<ResultMask>>,
    fields: Option<Arc<Vec<Field>>>,
    copy: Option<Arc<CopyPlan>>,
}

/// One portal, as one Bind made it (shared with its Describe and Executes,
/// for the same reason).
#[derive(Debug)]
struct PortalPlan {
    statement: Shared<StatementPlan>,
    formats: Vec<i16>,
    /// Its statement was prepared before the session's rules masked
    /// anything: its rows are masked entirely.
    mask_all: bool,
    plan: Option<Plan>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PortalPlan {
    /// The masks of this portal's rows: `Err(())` when they must all be
    /// masked, `Ok(None)` when nothing is.
    fn plan(&mut self) -> Result<Option<Plan>, ()> {
        if self.mask_all {
            return Err(());
        }
        if let Some(plan) = &self.plan {
            return Ok(Some(plan.clone()));
        }
        let statement = lock(&self.statement);
        if !any_mask(&statement.masks) {
            return Ok(None);
        }
        let Some(fields) = &statement.fields else {
            // Never described: which field is which is unknown.
            return Err(());
        };
        let plan = plan_of(&statement.masks, 0, fields, &self.formats);
        drop(statement);
        self.plan = Some(plan.clone());
        Ok(Some(plan))
    }
}

/// A request whose replies the tracker waits for.
#[derive(Debug)]
enum Expect {
    Query {
        masks: Arc<Vec<ResultMask>>,
        index: usize,
        current: Option<Plan>,
        copy: Option<Arc<CopyPlan>>,
    },
    Parse,
    Bind,
    Close,
    DescribeStatement(Shared<StatementPlan>),
    DescribePortal(Shared<PortalPlan>),
    Execute(Shared<PortalPlan>),
    Sync,
}

/// Follows requests and replies to mask rows.
#[derive(Debug, Default)]
pub struct ResultTracker {
    statements: HashMap<Vec<u8>, Shared<StatementPlan>>,
    portals: HashMap<Vec<u8>, Shared<PortalPlan>>,
    queue: VecDeque<Expect>,
    /// The masks of the most recent Parse, until its Describe or Bind.
    lost: bool,
    /// Some result may be masked (else rows are not looked at).
    active: bool,
    /// The method used for rows that cannot be placed.
    fallback: Option<MaskMethod>,
    /// Statements prepared before tracking began are not known: their rows
    /// are masked entirely.
    started_late: bool,
    /// The COPY whose data is flowing.
    copy_out: Option<CopyOut>,
}

fn any_mask(masks: &[ResultMask]) -> bool {
    masks.iter().any(|m| !m.is_nothing())
}

impl ResultTracker {
    /// True when rows may need masking: the relay must see DataRow and
    /// RowDescription messages whole.
    pub fn wants_rows(&self) -> bool {
        self.active || self.lost
    }

    /// Sets the method used for rows the tracker cannot place.
    pub fn set_fallback(&mut self, method: Option<MaskMethod>) {
        self.fallback = method;
    }

    /// Replies the tracker waits for will not come (a unit failed over):
    /// rows that cannot be placed are masked entirely until the session is
    /// idle.
    pub fn lose_track(&mut self) {
        if !self.queue.is_empty() {
            self.lost = self.fallback.is_some();
        }
        self.queue.clear();
        self.copy_out = None;
    }

    /// Tracking starts in the middle of a session (the rules changed):
    /// statements prepared before are unknown, so their rows are masked.
    pub fn start_late(&mut self) {
        self.lost = self.fallback.is_some();
        self.started_late = self.fallback.is_some();
    }

    pub(super) fn query(&mut self, masks: Vec<ResultMask>, copy: Option<CopyPlan>) {
        self.active |= any_mask(&masks) || copy.is_some();
        self.queue.push_back(Expect::Query {
            masks: Arc::new(masks),
            index: 0,
            current: None,
            copy: copy.map(Arc::new),
        });
    }

    pub(super) fn parse(&mut self, name: &[u8], masks: Vec<ResultMask>, copy: Option<CopyPlan>) {
        self.active |= any_mask(&masks) || copy.is_some();
        self.statements.insert(
            name.to_vec(),
            Arc::new(Mutex::new(StatementPlan {
                masks: Arc::new(masks),
                fields: None,
                copy: copy.map(Arc::new),
            })),
        );
        self.queue.push_back(Expect::Parse);
    }

    pub(super) fn bind(&mut self, portal: &[u8], statement: &[u8], formats: Vec<i16>) {
        let known = self.statements.get(statement).cloned();
        let mask_all = known.is_none() && !statement.is_empty() && self.started_late;
        let statement = known.unwrap_or_default();
        self.portals.insert(
            portal.to_vec(),
            Arc::new(Mutex::new(PortalPlan {
                statement,
                formats,
                mask_all,
                plan: None,
            })),
        );
        self.queue.push_back(Expect::Bind);
    }

    pub(super) fn describe(&mut self, kind: u8, name: &[u8]) {
        self.queue.push_back(if kind == b'S' {
            Expect::DescribeStatement(self.statements.get(name).cloned().unwrap_or_default())
        } else {
            Expect::DescribePortal(self.portal(name))
        });
    }

    pub(super) fn execute(&mut self, portal: &[u8]) {
        let portal = self.portal(portal);
        self.queue.push_back(Expect::Execute(portal));
    }

    /// The portal named `name` now; an unknown one (bound before tracking
    /// began) has its rows masked.
    fn portal(&self, name: &[u8]) -> Shared<PortalPlan> {
        self.portals.get(name).cloned().unwrap_or_else(|| {
            Arc::new(Mutex::new(PortalPlan {
                statement: Shared::default(),
                formats: Vec::new(),
                mask_all: true,
                plan: None,
            }))
        })
    }

    pub(super) fn sync(&mut self) {
        self.queue.push_back(Expect::Sync);
    }

    pub(super) fn close(&mut self) {
        self.queue.push_back(Expect::Close);
    }

    /// Follows a whole server message; returns the masked replacement of a
    /// DataRow whose values are masked.
    pub fn server_message(&mut self, tag: u8, frame: &[u8]) -> Option<(BytesMut, u64)> {
        let body = frame.get(5..)?;
        match tag {
            backend::tag::PARSE_COMPLETE
            | backend::tag::BIND_COMPLETE
            | backend::tag::CLOSE_COMPLETE => {
                self.pop_extended();
            }
            backend::tag::ROW_DESCRIPTION => match self.queue.front_mut() {
                // Fields are read only for results that have masks.
                Some(Expect::Query {
                    masks,
                    index,
                    current,
                    ..
                }) => {
                    *current = match masks.get(*index) {
                        Some(mask) if !mask.is_nothing() => {
                            let fields = parse_fields(body)?;
                            let formats: Vec<i16> = fields.iter().map(|f| f.format).collect();
                            Some(plan_of(masks, *index, &fields, &formats))
                        }
                        _ => None,
                    };
                }
                Some(Expect::DescribeStatement(statement)) => {
                    let statement = Arc::clone(statement);
                    self.queue.pop_front();
                    let mut s = lock(&statement);
                    if any_mask(&s.masks) {
                        s.fields = Some(Arc::new(parse_fields(body)?));
                    }
                }
                Some(Expect::DescribePortal(portal)) => {
                    let portal = Arc::clone(portal);
                    self.queue.pop_front();
                    let mut p = lock(&portal);
                    let masks = Arc::clone(&lock(&p.statement).masks);
                    if any_mask(&masks) {
                        // The formats are the portal's own here.
                        let fields = parse_fields(body)?;
                        let formats: Vec<i16> = fields.iter().map(|f| f.format).collect();
                        p.plan = Some(plan_of(&masks, 0, &fields, &formats));
                    }
                }
                _ => {}
            },
            backend::tag::NO_DATA => {
                if matches!(
                    self.queue.front(),
                    Some(Expect::DescribeStatement(_) | Expect::DescribePortal(_))
                ) {
                    self.queue.pop_front();
                }
            }
            backend::tag::DATA_ROW => {
                let plan = match self.queue.front() {
                    Some(Expect::Query { current, .. }) => current.clone(),
                    Some(Expect::Execute(portal)) => match lock(portal).plan() {
                        Ok(plan) => plan,
                        Err(()) => return self.mask_all(body),
                    },
                    _ if self.lost => return self.mask_all(body),
                    _ => None,
                }?;
                if plan.iter().all(Option::is_none) {
                    return None;
                }
                return mask_row(body, |i| plan.get(i).copied().flatten());
            }
            backend::tag::COPY_OUT_RESPONSE => {
                let plan = match self.queue.front() {
                    Some(Expect::Query { copy, .. }) => copy.clone(),
                    Some(Expect::Execute(portal)) => lock(&lock(portal).statement).copy.clone(),
                    _ => None,
                };
                let columns = Body(body.get(1..)?).i16()?;
                let columns = usize::try_from(columns).ok()?;
                let binary = body.first() == Some(&1);
                self.copy_out = match plan {
                    Some(plan) => Some(CopyOut {
                        masks: match &plan.columns {
                            CopyColumnsResolved::Known(known) => {
                                let mut m = known.clone();
                                m.resize(columns, None);
                                m
                            }
                            CopyColumnsResolved::Query(mask) => {
                                mask.fields(&vec![""; columns]).into_iter().collect()
                            }
                            CopyColumnsResolved::All(method) => vec![Some(*method); columns],
                        },
                        format: if binary {
                            CopyFormat::Binary
                        } else {
                            plan.format
                        },
                        header_pending: matches!(plan.format, CopyFormat::Csv { header: true }),
                    }),
                    // A COPY the tracker cannot place is masked entirely.
                    None if self.lost => self.fallback.map(|m| CopyOut {
                        masks: vec![Some(m); columns],
                        format: if binary {
                            CopyFormat::Binary
                        } else {
                            CopyFormat::Text
                        },
                        header_pending: false,
                    }),
                    None => None,
                };
            }
            backend::tag::COPY_DATA => {
                let copy = self.copy_out.as_mut()?;
                if std::mem::take(&mut copy.header_pending) {
                    return None;
                }
                if copy.masks.iter().all(Option::is_none) {
                    return None;
                }
                let (data, n) = crate::rules::copy_data::mask(copy.format, &copy.masks, body)?;
                let mut out = BytesMut::with_capacity(data.len() + 5);
                out.put_u8(backend::tag::COPY_DATA);
                out.put_i32(data.len() as i32 + 4);
                out.put_slice(&data);
                return Some((out, n));
            }
            backend::tag::COPY_DONE => self.copy_out = None,
            backend::tag::COMMAND_COMPLETE | backend::tag::EMPTY_QUERY_RESPONSE => {
                self.copy_out = None;
                match self.queue.front_mut() {
                    Some(Expect::Query { index, current, .. }) => {
                        *index += 1;
                        *current = None;
                    }
                    Some(Expect::Execute(_)) => {
                        self.queue.pop_front();
                    }
                    _ => {}
                }
            }
            backend::tag::PORTAL_SUSPENDED => {
                if matches!(self.queue.front(), Some(Expect::Execute(_))) {
                    self.queue.pop_front();
                }
            }
            backend::tag::ERROR_RESPONSE
                if !matches!(self.queue.front(), Some(Expect::Query { .. })) =>
            {
                self.copy_out = None;
                // The server skips to the next Sync.
                while let Some(front) = self.queue.front() {
                    if matches!(front, Expect::Sync | Expect::Query { .. }) {
                        break;
                    }
                    self.queue.pop_front();
                }
            }
            backend::tag::READY_FOR_QUERY => {
                self.copy_out = None;
                while let Some(front) = self.queue.pop_front() {
                    if matches!(front, Expect::Sync | Expect::Query { .. }) {
                        break;
                    }
                }
                if body.first() == Some(&b'I') && self.queue.is_empty() {
                    self.lost = false;
                }
            }
            _ => {}
        }
        None
    }

    fn pop_extended(&mut self) {
        if matches!(
            self.queue.front(),
            Some(Expect::Parse | Expect::Bind | Expect::Close)
        ) {
            self.queue.pop_front();
        }
    }

    fn mask_all(&self, body: &[u8]) -> Option<(BytesMut, u64)> {
        let method = self.fallback?;
        mask_row(body, |_| {
            Some(FieldMask {
                method,
                binary: false,
                type_oid: 25,
            })
        })
    }
}

fn parse_fields(body: &[u8]) -> Option<Vec<Field>> {
    let mut b = Body(body);
    let n = b.i16()?;
    let mut fields = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let name = String::from_utf8_lossy(b.cstr()?).into_owned();
        b.i32()?;
        b.i16()?;
        let type_oid = b.i32()? as u32;
        b.i16()?;
        b.i32()?;
        let format = b.i16()?;
        fields.push(Field {
            name,
            type_oid,
            format,
        });
    }
    Some(fields)
}

fn plan_of(masks: &[ResultMask], index: usize, fields: &[Field], formats: &[i16]) -> Plan {
    let Some(mask) = masks.get(index) else {
        return Arc::new(vec![None; fields.len()]);
    };
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let per_field = mask.fields(&names);
    Arc::new(
        per_field
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                let format = match formats.len() {
                    0 => 0,
                    1 => formats[0],
                    _ => formats.get(i).copied().unwrap_or(0),
                };
                m.map(|method| FieldMask {
                    method,
                    binary: format == 1,
                    type_oid: fields[i].type_oid,
                })
            })
            .collect(),
    )
}

/// A DataRow (`body` without header) with the values `mask_of` names
/// masked, as a whole frame, and the number of values masked.
fn mask_row(body: &[u8], mask_of: impl Fn(usize) -> Option<FieldMask>) -> Option<(BytesMut, u64)> {
    let mut b = Body(body);
    let n = b.i16()?;
    let mut out = BytesMut::with_capacity(body.len() + 64);
    out.put_u8(backend::tag::DATA_ROW);
    out.put_i32(0);
    out.put_i16(n);
    let mut masked = 0;
    for i in 0..usize::try_from(n).ok()? {
        let len = b.i32()?;
        if len < 0 {
            out.put_i32(-1);
            continue;
        }
        let value = b.bytes(usize::try_from(len).ok()?)?;
        match mask_of(i) {
            None => {
                out.put_i32(len);
                out.put_slice(value);
            }
            Some(m) => {
                masked += 1;
                let new = if m.binary {
                    m.method.apply_binary(m.type_oid, value)
                } else {
                    Some(m.method.apply(value))
                };
                match new {
                    Some(v) => {
                        out.put_i32(v.len() as i32);
                        out.put_slice(&v);
                    }
                    None => out.put_i32(-1),
                }
            }
        }
    }
    let len = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some((out, masked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.to_vec()
    }

    #[test]
    fn rows_are_rebuilt_with_masked_values_and_lengths() {
        let body = row(&[Some(b"7"), Some(b"4111111111111111"), None]);
        let (frame, n) = mask_row(&body, |i| {
            (i == 1).then_some(FieldMask {
                method: MaskMethod::KeepLast(4),
                binary: false,
                type_oid: 25,
            })
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            &frame[5..],
            &row(&[Some(b"7"), Some(b"************1111"), None])[..]
        );
        assert_eq!(
            i32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize,
            frame.len() - 1
        );
    }

    #[test]
    fn binary_values_of_other_types_become_null() {
        let body = row(&[Some(&[0, 0, 0, 0, 0, 0, 0, 9])]);
        let (frame, _) = mask_row(&body, |_| {
            Some(FieldMask {
                method: MaskMethod::KeepLast(4),
                binary: true,
                type_oid: 20,
            })
        })
        .unwrap();
        assert_eq!(&frame[5..], &row(&[None])[..]);
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn row_description(name: &str, type_oid: u32) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_slice(name.as_bytes());
        b.put_u8(0);
        b.put_i32(0);
        b.put_i16(0);
        b.put_u32(type_oid);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i16(0);
        frame(backend::tag::ROW_DESCRIPTION, &b)
    }

    #[test]
    fn pipelined_binds_of_one_portal_name_keep_their_own_masks() {
        use understudy_rules::results::TargetMask;
        let mut t = ResultTracker::default();
        t.set_fallback(Some(MaskMethod::Redact));
        // Both statements prepared and described, then both executed
        // through the unnamed portal before the server answers.
        t.parse(b"a", vec![ResultMask::Nothing], None);
        t.parse(
            b"b",
            vec![ResultMask::Targets(vec![TargetMask::Mask(
                MaskMethod::KeepLast(4),
            )])],
            None,
        );
        t.describe(b'S', b"a");
        t.describe(b'S', b"b");
        t.sync();
        for f in [
            frame(backend::tag::PARSE_COMPLETE, b""),
            frame(backend::tag::PARSE_COMPLETE, b""),
            row_description("id", 25),
            row_description("card_number", 25),
            frame(backend::tag::READY_FOR_QUERY, b"I"),
        ] {
            assert!(t.server_message(f[0], &f).is_none());
        }
        t.bind(b"", b"a", vec![0]);
        t.execute(b"");
        t.bind(b"", b"b", vec![0]);
        t.execute(b"");
        t.sync();
        let data_row = |v: &[u8]| frame(backend::tag::DATA_ROW, &row(&[Some(v)]));
        let bind_complete = frame(backend::tag::BIND_COMPLETE, b"");
        let done = frame(backend::tag::COMMAND_COMPLETE, b"SELECT 1\0");
        assert!(t.server_message(bind_complete[0], &bind_complete).is_none());
        let plain = data_row(b"4111111111111111");
        assert!(
            t.server_message(plain[0], &plain).is_none(),
            "statement a masks nothing"
        );
        assert!(t.server_message(done[0], &done).is_none());
        assert!(t.server_message(bind_complete[0], &bind_complete).is_none());
        let (masked, n) = t
            .server_message(plain[0], &plain)
            .expect("statement b masks");
        assert_eq!(n, 1);
        assert_eq!(&masked[5..], &row(&[Some(b"************1111")])[..]);
    }
}
